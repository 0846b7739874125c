"""Global pruning: one magnitude threshold across layers (from test_extensions)."""

import os

import numpy as np
import tensorflow as tf

from conftest import mock_tfds, tiny_config
from lottery_tf.lottery import runner
from lottery_tf.pruning import Pruner, PruningContext, schedule, selection


def _global_magnitude(weights, masks, fractions):
    return Pruner("magnitude", "global", fractions)(PruningContext(masks=masks, trained=weights))


class GlobalPruningTest(tf.test.TestCase):
    def test_one_threshold_across_layers_with_exclusions(self):
        weights = {
            "a": np.array([0.1, 0.9, 0.3, 0.7], np.float32),
            "b": np.array([[0.2, 0.05], [0.8, 0.6]], np.float32),
            "out": np.array([0.01, 0.02], np.float32),
        }
        masks = {k: np.ones_like(v) for k, v in weights.items()}
        groups = {"a": "fc", "b": "fc", "out": "output"}
        fractions = schedule.global_fractions(groups, 0.5, ("output",))
        self.assertEqual(fractions, {"a": 0.5, "b": 0.5, "out": 0.0})
        new = _global_magnitude(weights, masks, fractions)
        # 8 included survivors, 4 pruned: 0.05, 0.1, 0.2, 0.3 wherever they are.
        self.assertAllEqual(new["a"], [0, 1, 0, 1])
        self.assertAllEqual(new["b"], [[0, 0], [1, 1]])
        self.assertAllEqual(new["out"], [1, 1])  # excluded although smallest

    def test_global_ties_break_by_layer_then_index(self):
        weights = {"a": np.full(3, 0.5, np.float32), "b": np.full(3, 0.5, np.float32)}
        masks = {k: np.ones(3, np.float32) for k in weights}
        new = _global_magnitude(weights, masks, {"a": 0.5, "b": 0.5})
        self.assertAllEqual(new["a"], [0, 0, 0])
        self.assertAllEqual(new["b"], [1, 1, 1])

    def test_thousands_of_global_ties_break_by_layer_then_flat_index(self):
        global_ = selection.SCOPES.get("global")
        rng = np.random.default_rng(7)
        shapes = {"a": (50, 100), "b": (5000,), "c": (20, 25, 10)}
        masks = {n: (rng.random(s) >= 0.2).astype(np.float32) for n, s in shapes.items()}
        fractions = {"a": 0.4, "b": 0.4, "c": 0.4}
        # 5000 equal scores in each layer: all of "a" goes before any of "b".
        equal = {n: np.full(s, 0.5, np.float32) for n, s in shapes.items()}
        ones = {n: np.ones(s, np.float32) for n, s in shapes.items()}
        new = global_(equal, ones, {"a": 0.5, "b": 0.5, "c": 0.5})
        self.assertAllEqual(new["a"], np.zeros(shapes["a"]))
        self.assertEqual(np.flatnonzero(new["b"] == 0).tolist(), list(range(2500)))
        self.assertAllEqual(new["c"], np.ones(shapes["c"]))
        # Three score levels tied within and across layers; the cut falls inside a level.
        for scores in (equal, {n: (rng.integers(0, 3, size=s) * 0.5).astype(np.float32)
                               for n, s in shapes.items()}):
            new = global_(scores, masks, fractions)
            alive = [(scores[n].reshape(-1)[i], order, i) for order, n in enumerate(shapes)
                     for i in np.flatnonzero(masks[n])]
            k = selection.count_to_prune(0.4, len(alive))
            want = {n: [] for n in shapes}
            for _, order, i in sorted(alive)[:k]:  # lowest score, then layer order, then index
                want[list(shapes)[order]].append(i)
            for order, n in enumerate(shapes):
                pruned = np.flatnonzero((masks[n] - new[n]).reshape(-1))
                self.assertEqual(pruned.tolist(), sorted(int(i) for i in want[n]), n)
                self.assertAllEqual(new[n][masks[n] == 0], np.zeros(int((masks[n] == 0).sum())))

    def test_global_one_shot_hits_the_target(self):
        groups = {"fc1": "fc", "fc2": "fc", "output": "output"}
        sizes = {"fc1": 1000, "fc2": 300, "output": 50}
        fractions = schedule.one_shot_global_fractions(groups, sizes, ("output",), 0.9)
        kept = sum(sizes[n] * (1 - f) for n, f in fractions.items()) / sum(sizes.values())
        self.assertAllClose(kept, 0.1)
        self.assertEqual(fractions["output"], 0.0)

    def test_global_run_prunes_the_global_rate_overall(self):
        with mock_tfds():
            results = runner.run(tiny_config(iterations=20, rounds=2, pruning_scope="global", global_rate=0.3,
                                             output_dir=os.path.join(self.get_temp_dir(), "g")),
                                 progress=lambda line: None)
        by_layer = results[1]["remaining_pct_by_layer"]
        self.assertEqual(by_layer["output"], 100.0)
        alive = 235200 * by_layer["fc1"] / 100 + 30000 * by_layer["fc2"] / 100
        self.assertAllClose(alive, 0.7 * 265200, atol=0.6)
