"""The verification limit: 1e-5 of each example's logit scale, never less than 1e-5."""

import numpy as np
import tensorflow as tf

from lottery_tf import errors
from lottery_tf.export import verify


class _Probe:
    def __init__(self, real=0, labels=None):
        self.real, self.labels = real, labels
        self.description = "4 images"


def _outputs(logits):
    return {"logits": logits, "class_ids": np.argmax(logits, axis=-1)}


class LogitLimitTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(0)
        self.small = rng.uniform(-0.9, 0.9, (4, 10)).astype(np.float32)
        self.small[:, 3] = 0.95  # a clear winner: shifts below stay away from ties
        self.large = self.small * np.float32(300.0)  # largest |logit| 285 in every row

    def test_each_example_is_measured_against_its_own_scale(self):
        shifted = self.large.copy()
        shifted[1] += np.float32(1e-3)
        self.assertAllClose(verify.scaled_logit_diff(self.large, shifted), 1e-3 / 285, rtol=1e-3)
        # Small logits keep the absolute measure.
        self.assertAllClose(verify.scaled_logit_diff(self.small, self.small + np.float32(2e-5)),
                            2e-5, rtol=1e-3)
        # One loud example does not loosen the others: row 0 loud, row 2 off by 1e-3 absolute.
        mixed = self.small.copy()
        mixed[0] = self.large[0]
        off = mixed.copy()
        off[2] += np.float32(1e-3)
        self.assertAllClose(verify.scaled_logit_diff(mixed, off), 1e-3, rtol=1e-3)
        self.assertEqual(verify.scaled_logit_diff(np.zeros((0, 10)), np.zeros((0, 10))), 0.0)

    def test_rounding_of_large_logits_passes_and_a_real_error_is_refused(self):
        figures = verify.verify(self.large, _outputs(self.large + np.float32(1e-3)), _Probe(),
                                "the export")
        self.assertLess(figures["max_scaled_logit_diff"], verify.LOGIT_TOLERANCE)
        self.assertEqual(figures["logit_limit"], verify.LOGIT_TOLERANCE)
        with self.assertRaisesRegex(errors.LotteryError, r"max \|logit difference\| 0\.01\d*, "
                                    r"relative to max\(1, its example's largest \|logit\|\) 3\.5"):
            verify.verify(self.large, _outputs(self.large + np.float32(1e-2)), _Probe(),
                          "the export")

    def test_small_logits_are_held_to_1e_5(self):
        verify.verify(self.small, _outputs(self.small + np.float32(5e-6)), _Probe(), "the export")
        with self.assertRaisesRegex(errors.LotteryError, r"\(limit 1e-05\), 0 of 4 class ids differ"):
            verify.verify(self.small, _outputs(self.small + np.float32(3e-5)), _Probe(),
                          "the export")

    def test_the_int8_advice_is_as_fine_as_one_flip(self):
        labels = np.zeros(20000, np.int64)
        reference = np.zeros((20000, 10), np.float32)
        reference[:, 0] = 1.0
        changed = reference.copy()
        changed[:3, 0], changed[:3, 1] = 0.0, 1.0  # 3 flips in 20,000
        with self.assertRaisesRegex(errors.LotteryError,
                                    r"to accept it, pass --quantized_min_agreement=0\.99985;"):
            verify.verify(reference, _outputs(changed), _Probe(20000, labels), "the int8 model",
                          quantized=True)
        verify.verify(reference, _outputs(changed), _Probe(20000, labels), "the int8 model",
                      quantized=True, min_agreement=0.99985)


if __name__ == "__main__":
    tf.test.main()
