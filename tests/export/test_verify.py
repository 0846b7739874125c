"""The verification limit: 1e-5 of the logits' scale, never less than 1e-5."""

import numpy as np
import tensorflow as tf

from lottery_tf import errors
from lottery_tf.export import verify


class _Probe:
    real = 0
    labels = None
    description = "4 random images"


def _outputs(logits):
    return {"logits": logits, "class_ids": np.argmax(logits, axis=-1)}


class LogitLimitTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(0)
        self.small = rng.uniform(-0.9, 0.9, (4, 10)).astype(np.float32)
        self.small[:, 3] = 0.95  # a clear winner: shifts below stay away from ties
        self.large = self.small * np.float32(300.0)  # largest |logit| 285

    def test_logits_within_one_keep_the_absolute_limit(self):
        self.assertEqual(verify.logit_limit(self.small), verify.LOGIT_TOLERANCE)
        self.assertEqual(verify.logit_limit(np.zeros((0, 10), np.float32)),
                         verify.LOGIT_TOLERANCE)

    def test_the_limit_scales_with_the_largest_logit(self):
        self.assertAllClose(verify.logit_limit(self.large), 285 * verify.LOGIT_TOLERANCE,
                            rtol=1e-6)
        self.assertAllClose(verify.logit_limit(-self.large), 285 * verify.LOGIT_TOLERANCE,
                            rtol=1e-6)

    def test_rounding_of_large_logits_passes_and_a_real_error_is_refused(self):
        figures = verify.verify(self.large, _outputs(self.large + np.float32(1e-3)), _Probe(),
                                "the export")
        self.assertAllClose(figures["logit_limit"], 2.85e-3, rtol=1e-6)
        with self.assertRaisesRegex(errors.LotteryError, r"max \|logit difference\| 0\.01"):
            verify.verify(self.large, _outputs(self.large + np.float32(1e-2)), _Probe(),
                          "the export")

    def test_small_logits_are_held_to_1e_5(self):
        verify.verify(self.small, _outputs(self.small + np.float32(5e-6)), _Probe(), "the export")
        with self.assertRaisesRegex(errors.LotteryError, r"limit 1e-05: 1e-05 x max\(1,"):
            verify.verify(self.small, _outputs(self.small + np.float32(3e-5)), _Probe(),
                          "the export")


if __name__ == "__main__":
    tf.test.main()
