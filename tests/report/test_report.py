import os

import tensorflow as tf

from conftest import mock_tfds, tiny_config
from lottery_tf import errors
from lottery_tf import report
from lottery_tf.cli import train as cli_train
from lottery_tf.lottery import branches
from lottery_tf.lottery import runner
from lottery_tf.report import figures
from lottery_tf.report import tables


class AggregationTest(tf.test.TestCase):
    def test_stats(self):
        self.assertEqual(tables.stats([1, 2, 6]), (3.0, 1.0, 6.0))

    def test_levels_are_matched_across_trials(self):
        def metrics(remaining, acc, iteration):
            return {"remaining_pct": remaining, "early_stop_test_accuracy": acc,
                    "final_test_accuracy": acc - 0.01, "early_stop_iteration": iteration}

        runs = [
            {"imp": {0: metrics(100, 0.97, 4000), 1: metrics(80, 0.98, 3000)},
             "random_reinit": {1: metrics(80, 0.96, 5000)}},
            {"imp": {0: metrics(100, 0.95, 6000), 1: metrics(80, 0.99, 2000)}},
        ]
        rows = tables.aggregate(runs)
        self.assertEqual([(r["series"], r["level"], r["trials"]) for r in rows],
                         [("imp", 0, 2), ("imp", 1, 2), ("random_reinit", 1, 1)])
        self.assertAllClose(
            [rows[1]["early_stop_test_accuracy"], rows[1]["early_stop_test_accuracy_min"],
             rows[1]["early_stop_test_accuracy_max"]], [0.985, 0.98, 0.99])
        self.assertAllClose([rows[0]["early_stop_iteration"], rows[0]["final_test_accuracy"]], [5000, 0.95])


class MeanCurveTest(tf.test.TestCase):
    def test_curves_that_stop_early_are_averaged_where_all_trials_have_points(self):
        def curve(accuracies):
            return [{"iteration": 100 * i, "test_accuracy": a} for i, a in enumerate(accuracies)]

        # An Early-Bird search round stops at a different iteration in each trial.
        iterations, mean = figures.mean_curve([curve([0.5, 0.7, 0.9]), curve([0.3, 0.5])])
        self.assertEqual(iterations, [0, 100])
        self.assertAllClose(mean, [40.0, 60.0])


class StylesTest(tf.test.TestCase):
    def test_an_ablation_is_drawn_in_its_criterions_color(self):
        keys = ["imp", "at_init:snip, global", "at_init:snip, global, shuffle", "at_init:synflow, global",
                "at_init:random, layerwise, invert", "tfmot_gradual"]
        style = figures.styles(keys, lambda i, n: f"color{i}of{n}")
        self.assertEqual(style, {
            "imp": ("color0of5", False),
            "at_init:snip, global": ("color1of5", False),
            "at_init:snip, global, shuffle": ("color1of5", True),  # snip's color, dashed
            "at_init:synflow, global": ("color2of5", False),
            "at_init:random, layerwise, invert": ("color3of5", False),  # no base series: its own color
            "tfmot_gradual": ("color4of5", False)})


class ReportEndToEndTest(tf.test.TestCase):
    def test_report_from_trials_and_branches(self):
        base = os.path.join(self.get_temp_dir(), "exp")
        with mock_tfds():
            for config in cli_train.trial_configs(tiny_config(iterations=20, rounds=3, output_dir=base), 2):
                runner.run(config, progress=lambda line: None)
            branches.run_branch(os.path.join(base, "trial_0"), "random_reinit", progress=lambda line: None)
            branches.run_branch(os.path.join(base, "trial_0"), "one_shot", targets=[0.5],
                                progress=lambda line: None)
        out = os.path.join(self.get_temp_dir(), "report")
        rows = report.make_report([base], out, curve_rounds=[0, 2])
        kinds = [(r["series"], r["trials"]) for r in rows]
        self.assertEqual(kinds.count(("imp", 2)), 3)
        self.assertIn(("random_reinit", 1), kinds)
        self.assertIn(("one_shot", 1), kinds)
        for name in ("results.csv", "results.md", "accuracy_vs_remaining.png", "early_stop_vs_remaining.png",
                     "layer_remaining.png", "curves.png"):
            path = os.path.join(out, name)
            self.assertGreater(os.path.getsize(path), 100, name)
        with open(os.path.join(out, "results.md")) as f:
            self.assertLen(f.read().splitlines(), 2 + len(rows))

    def test_no_runs_is_an_error(self):
        with self.assertRaisesRegex(errors.LotteryError, "holds no lottery-tf run"):
            report.make_report([self.get_temp_dir()], os.path.join(self.get_temp_dir(), "r"))
