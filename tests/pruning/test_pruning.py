import numpy as np
import tensorflow as tf

from lottery_tf import errors
from lottery_tf.pruning import Pruner, PruningContext, schedule
from lottery_tf.pruning import selection


def _round_half_up(x):
    return int(np.floor(x + 0.5))


def _magnitude_prune(weights, mask, fraction):
    """Magnitude pruning: the scores ranked are |w|."""
    return selection.prune_lowest(np.abs(weights), mask, fraction)


class MagnitudePruneTest(tf.test.TestCase):
    def test_removes_the_smallest_survivors(self):
        weights = np.array([[0.5, -0.1, 0.3], [-0.9, 0.2, 0.05]], np.float32)
        mask = np.array([[1, 1, 1], [1, 1, 0]], np.float32)
        new = _magnitude_prune(weights, mask, 0.4)  # 0.4 * 5 = 2
        self.assertAllEqual(new, [[1, 0, 1], [1, 0, 0]])
        self.assertEqual(new.dtype, np.float32)

    def test_pruned_weights_never_come_back(self):
        weights = np.arange(10, dtype=np.float32)
        mask = np.ones(10, np.float32)
        mask[[8, 9]] = 0  # the largest, already pruned
        new = _magnitude_prune(weights, mask, 0.25)
        self.assertAllEqual(new, [0, 0, 1, 1, 1, 1, 1, 1, 0, 0])

    def test_ties_break_by_lower_flat_index(self):
        weights = np.full((3, 4), 0.7, np.float32)
        weights[1, 1] = -0.7
        new = _magnitude_prune(weights, np.ones((3, 4), np.float32), 0.5)
        self.assertAllEqual(new.reshape(-1), [0] * 6 + [1] * 6)

    def test_thousands_of_ties_break_by_lower_flat_index(self):
        # Thousands of tied scores: an unstable sort shows here, not with a dozen.
        rng = np.random.default_rng(13)
        shape = (50, 100)
        mask = (rng.random(shape) >= 0.1).astype(np.float32)  # some already pruned
        alive = np.flatnonzero(mask)
        cases = {
            # 5000 equal scores: the first k surviving flat indices go.
            "all equal": np.full(shape, 0.25, np.float32),
            # Four score levels of ~1250 tied weights each; the cut falls inside a level.
            "four levels": (rng.integers(0, 4, size=shape) * 0.25).astype(np.float32),
        }
        for case, scores in cases.items():
            for fraction in (0.3, 0.5):
                new = selection.prune_lowest(scores, mask, fraction)
                k = selection.count_to_prune(fraction, alive.size)
                flat = scores.reshape(-1)
                want = sorted(alive, key=lambda i: (flat[i], i))[:k]  # lowest score, then lowest index
                pruned = np.flatnonzero((mask - new).reshape(-1))
                self.assertEqual(pruned.tolist(), sorted(int(i) for i in want), (case, fraction))
                self.assertAllEqual(new.reshape(-1)[mask.reshape(-1) == 0], np.zeros(mask.size - alive.size))
                if case == "all equal":
                    self.assertEqual(pruned.tolist(), alive[:k].tolist())

    def test_exact_counts_over_rounds_per_group(self):
        rng = np.random.default_rng(0)
        shapes = {"conv1": (3, 3, 1, 8), "fc1": (784, 300), "fc2": (300, 100), "output": (100, 10)}
        groups = {"conv1": "conv", "fc1": "fc", "fc2": "fc", "output": "output"}
        for rates in ({"conv": 0.1, "fc": 0.2, "output": 0.1}, {"conv": 0.15, "fc": 0.35, "output": 0.0}):
            masks = {n: np.ones(s, np.float32) for n, s in shapes.items()}
            alive = {n: int(np.prod(s)) for n, s in shapes.items()}
            fractions = schedule.iterative_fractions(groups, rates)
            for _ in range(6):
                weights = {n: rng.normal(size=s).astype(np.float32) for n, s in shapes.items()}
                masks = Pruner("magnitude", "layerwise", fractions)(PruningContext(masks=masks, trained=weights))
                for name in shapes:
                    alive[name] -= _round_half_up(rates[groups[name]] * alive[name])
                    self.assertEqual(int(masks[name].sum()), alive[name], (name, rates))
            # fc at 0.2 for 6 rounds: 235200 -> 188160 -> 150528 -> 120422 -> 96338
            # -> 77070 -> 61656 (by hand).
            if rates["fc"] == 0.2:
                self.assertEqual(alive["fc1"], 61656)

    def test_rounding_is_robust_to_float_error(self):
        # 0.2 * 235200 is 47040.000000000004 in floating point.
        self.assertEqual(selection.count_to_prune(0.2, 235200), 47040)
        self.assertEqual(selection.count_to_prune(0.1, 15), 2)  # 1.5 rounds up
        self.assertEqual(selection.count_to_prune(0.2, 2), 0)


class OneShotScheduleTest(tf.test.TestCase):
    def test_reaches_the_target_with_the_imp_profile(self):
        groups = {"fc1": "fc", "fc2": "fc", "output": "output"}
        sizes = {"fc1": 235200, "fc2": 30000, "output": 1000}
        rates = {"conv": 0.1, "fc": 0.2, "output": 0.1}
        for target in (0.5, 0.9, 0.964):
            fractions = schedule.one_shot_fractions(groups, sizes, rates, target)
            kept = sum(sizes[n] * (1 - f) for n, f in fractions.items()) / sum(sizes.values())
            self.assertAllClose(kept, 1 - target, atol=1e-9)
            self.assertEqual(fractions["fc1"], fractions["fc2"])
            # Output remaining = fc remaining ** (log 0.9 / log 0.8), as after n IMP rounds.
            n = np.log(1 - fractions["fc1"]) / np.log(0.8)
            self.assertAllClose(1 - fractions["output"], 0.9 ** n)

    def test_unreachable_target_is_refused(self):
        with self.assertRaisesRegex(errors.LotteryError, "unreachable"):
            schedule.one_shot_fractions(
                {"a": "fc", "b": "output"}, {"a": 50, "b": 50}, {"fc": 0.2, "output": 0.0}, 0.6
            )
