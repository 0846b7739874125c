"""Early-Bird rounds: they stop where the mask settles, prune with that mask, train
their final ticket in full, and a run killed anywhere resumes to the same result."""

import csv
import os

import tensorflow as tf

from conftest import mock_tfds, tiny_config
from lottery_tf import errors
from lottery_tf.config import Config
from lottery_tf.lottery import runner
from lottery_tf.lottery.run_dir import RunDir
from lottery_tf.lottery.storage import read_arrays
from test_recovery import _dataset, assert_resumes

WALL = ("wall_time_s",)


def _config(path, checkpoint_every=20):
    # Evaluations every 10 of 60 iterations, a checkpoint at 20 and 40: the rounds
    # stop at the first two distances <= 0.5 (about iteration 30), after a checkpoint.
    return tiny_config(iterations=60, eval_every=10, rounds=2, early_bird="0.5,2",
                       checkpoint_every=checkpoint_every, steps_per_execution=1, jit_compile=False,
                       output_dir=path)


def _run(path, checkpoint_every=20):
    return runner.run(_config(path, checkpoint_every), progress=lambda line: None, dataset=_dataset())


def _state(path):
    run = RunDir(path)
    final = run.branch("final").entry("round_002")
    entries = [run.round(0), run.round(1), run.round(2), final]
    masks = [read_arrays(e.mask_path) for e in entries]
    metrics = [{k: v for k, v in e.read_metrics().items() if k not in WALL}
               for e in (run.round(0), run.round(1), final)]
    with open(run.summary_path) as f:
        rows = [{k: v for k, v in row.items() if k not in WALL} for row in csv.DictReader(f)]
    return masks, metrics, rows


class EarlyBirdRunTest(tf.test.TestCase):
    def test_rounds_stop_early_and_a_killed_run_resumes_to_the_same_result(self):
        tmp = self.get_temp_dir()
        reference = os.path.join(tmp, "reference")
        with mock_tfds():
            _run(reference)
        expected = _state(reference)
        run = RunDir(reference)
        for r in range(2):
            metrics = run.read_metrics(r)
            rule = metrics["early_bird"]
            self.assertIsNotNone(rule["stopped_at"], r)
            self.assertLess(rule["stopped_at"], 60)
            self.assertEqual(metrics["train_iterations"], rule["stopped_at"])
            self.assertEqual(metrics["curve"][-1]["iteration"], rule["stopped_at"])
            self.assertEqual([p["iteration"] for p in rule["distances"]],
                             list(range(20, rule["stopped_at"] + 1, 10)))
            self.assertTrue(all(p["pruned"] <= 0.5 for p in rule["distances"][-2:]))
        self.assertGreater(rule["stopped_at"], 20)  # so a checkpoint came before the stop
        final = expected[1][2]
        self.assertEqual(final["train_iterations"], 60)  # the ticket trains in full
        self.assertEqual(final["cumulative_iterations"],
                         run.read_metrics(1)["cumulative_iterations"] + 60)
        self.assertAlmostEqual(final["remaining_pct"], run.read_metrics(1)["remaining_pct"] * 0.8, delta=0.1)

        # Killed after a mid-round checkpoint (round 0, the final entry) or
        # after the pruning: the rerun continues and ends with the same masks and metrics.
        for spec in ("mid_fit:1", "mid_fit:4", "after_prune:2"):
            assert_resumes(self, spec, os.path.join(tmp, spec.replace(":", "_")), _run, _state, expected)
        # A checkpoint at every evaluation, so one could fall on the stop step: killed
        # after round 0's pruning, the rerun resumes before the stop and stops there again.
        assert_resumes(self, "after_prune:1", os.path.join(tmp, "every_10"),
                       lambda path: _run(path, checkpoint_every=10), _state, expected)

    def test_bad_early_bird_flags_are_one_line(self):
        for value in ("0.1", "1.5,5", "0.1,0", "a,b", "0.1,5,2"):
            with self.assertRaisesRegex(errors.LotteryError, r"^--early_bird=.* is not EPSILON,WINDOW"):
                Config(early_bird=value).validate()
        with self.assertRaisesRegex(errors.LotteryError, "^--early_bird trains its ticket from θ0"):
            Config(early_bird="0.1,5", reset="finetune").validate()
        with self.assertRaisesRegex(errors.LotteryError, "^--early_bird_distance=hamming is not"):
            Config(early_bird_distance="hamming").validate()
        with self.assertRaisesRegex(errors.LotteryError, "^--early_bird_distance=all only applies to Early-Bird"):
            Config(early_bird_distance="all").validate()
        with self.assertRaisesRegex(errors.LotteryError,
                                    r"^--early_bird watches .* --criterion=snip does not read the trained"):
            Config(early_bird="0.1,5", criterion="snip").validate()
        Config(early_bird="0.1,5", criterion="movement", early_bird_distance="all").validate()
        self.assertEqual(Config(early_bird="0.1,5").early_bird_rule(), (0.1, 5))

    def test_search_rounds_of_each_distance_are_their_own_series(self):
        from lottery_tf.lottery import branches

        pruned = {"early_bird": "0.1,5"}
        everything = {"early_bird": "0.1,5", "early_bird_distance": "all"}
        self.assertEqual(branches.main_line_series(pruned), "imp:early-bird search 0.1,5")
        self.assertEqual(branches.main_line_series({**pruned, "early_bird_distance": "pruned"}),
                         "imp:early-bird search 0.1,5")
        self.assertEqual(branches.main_line_series(everything), "imp:early-bird search 0.1,5 by all")
        final = branches.BRANCHES.get("final")
        self.assertNotEqual(final.series({}, pruned), final.series({}, everything))
        self.assertTrue(branches.is_search_series(branches.main_line_series(everything)))
