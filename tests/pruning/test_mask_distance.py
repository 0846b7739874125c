"""Mask distances and Early-Bird's stopping rule, on hand-made masks."""

import numpy as np
import tensorflow as tf

from lottery_tf.pruning import mask_distance


def _masks(bits):
    return {"a": np.array(bits[:4], np.float32).reshape(2, 2), "b": np.array(bits[4:], np.float32)}


class MaskDistanceTest(tf.test.TestCase):
    def test_hamming_distance_and_its_two_normalisations(self):
        before = _masks([1, 1, 1, 1, 1, 1, 1, 0])         # 7 alive of 8
        one = _masks([0, 1, 1, 1, 0, 1, 1, 0])            # prunes a[0], b[0]: k = 2
        other = _masks([1, 0, 1, 1, 0, 1, 1, 0])          # prunes a[1], b[0]: one of 2 moved
        self.assertEqual(mask_distance.hamming(one, one), 0)
        self.assertEqual(mask_distance.hamming(one, other), 2)
        got = mask_distance.distances(one, other, before)
        self.assertAlmostEqual(got["pruned"], 0.5)         # half the pruned set changed
        self.assertAlmostEqual(got["all"], 2 / 8)          # 2 positions of 8 weights
        self.assertEqual(mask_distance.distances(one, one, before), {"pruned": 0.0, "all": 0.0})
        # Nothing pruned (rate 0): no distance to speak of, never a division by 0.
        self.assertEqual(mask_distance.distances(before, before, before)["pruned"], 0.0)

    def test_stopping_rule_needs_the_whole_window_at_or_below_epsilon(self):
        stop = mask_distance.should_stop
        self.assertFalse(stop([], 0.1, 1))
        self.assertTrue(stop([0.1], 0.1, 1))               # <= epsilon counts
        self.assertFalse(stop([0.05, 0.05], 0.1, 3))      # window not yet full
        self.assertFalse(stop([0.05, 0.2, 0.05], 0.1, 3))  # one above in the window
        self.assertTrue(stop([0.5, 0.05, 0.1, 0.0], 0.1, 3))  # only the last three count
        # A sequence: where a window of 2 at 0.1 first stops.
        history = [0.53, 0.23, 0.09, 0.14, 0.1, 0.06]
        first = next(i for i in range(len(history)) if stop(history[:i + 1], 0.1, 2))
        self.assertEqual(first, 5)  # [0.1, 0.06]; [0.14, 0.1] has one above
