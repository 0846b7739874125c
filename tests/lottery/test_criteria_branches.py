"""Pruning at initialization (at_init) and the tfmot gradual arm, as branches of a run;
at-init criteria in IMP rounds; their series in the report."""

import dataclasses
import os
import shutil
import tempfile
from unittest import mock

import numpy as np
import tensorflow as tf

from conftest import mock_tfds, run_cli, tiny_config, tree_files
from lottery_tf import errors, report
from lottery_tf.config import Config
from lottery_tf.lottery import branches, runner
from lottery_tf.lottery.branches.at_init import AtInit
from lottery_tf.lottery.branches.tfmot_gradual import polynomial_steps
from lottery_tf.lottery.run_dir import RunDir
from lottery_tf.lottery.storage import read_arrays


def _main_line(path):
    """Every main-line file's bytes and mtime (branches aside)."""
    files = {name: data for name, data in tree_files(path).items() if not name.startswith("branches")}
    return files, {name: os.stat(os.path.join(path, name)).st_mtime_ns for name in files}


def _counts(masks):
    return {name: int(np.count_nonzero(m)) for name, m in masks.items()}


class AtInitAndTfmotBranchesTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp(prefix="lottery_criteria_")
        cls.run_path = os.path.join(cls.tmp, "run")
        with mock_tfds():
            runner.run(tiny_config(iterations=20, rounds=3, output_dir=cls.run_path), progress=lambda line: None)
            cls.main = RunDir(cls.run_path)
            cls.config = Config.from_dict(cls.main.read_config())
            cls.experiment = runner.setup(cls.config)
        cls.theta0 = read_arrays(cls.main.theta0_path)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def _masks(self, key=2, seed=1, **options):
        # Fewer SynFlow steps than the default 100: the schedule is tested in tests/pruning.
        config = dataclasses.replace(self.config, synflow_iterations=10)
        branch = AtInit(self.main, config, seed, [key], (), options)
        branch.keys()
        return branch.masks(self.experiment, key)

    def _branch(self, kind, **kwargs):
        with mock_tfds():
            return branches.run_branch(self.run_path, kind, progress=lambda line: None, **kwargs)

    def test_at_init_trains_once_from_theta0_and_never_touches_the_main_line(self):
        before = _main_line(self.run_path)
        results = self._branch("at_init", rounds=[2], options={"criterion": "snip", "ablation": "shuffle"})
        self.assertEqual([(m["round"], m["branch"]) for m in results], [(2, "at_init")])
        entry = os.path.join(self.run_path, "branches", "at_init_snip_layerwise_shuffle_seed1", "round_002")
        masks, weights = read_arrays(os.path.join(entry, "mask.npz")), read_arrays(os.path.join(entry, "weights.npz"))
        self.assertEqual(_counts(masks), _counts(self.main.load_masks(2)))
        for name, mask in masks.items():
            self.assertAllEqual(weights[f"{name}/kernel"][mask == 0], np.zeros(int((mask == 0).sum())))
        self.assertEqual(_main_line(self.run_path), before)
        self.assertEqual(self._branch("at_init", rounds=[2], options={"criterion": "snip", "ablation": "shuffle"}),
                         results)  # resumed: nothing retrained
        self.assertEqual(_main_line(self.run_path), before)

    def test_layerwise_keeps_each_layers_count_global_the_overall_count(self):
        ticket = _counts(self.main.load_masks(2))
        for criterion in ("snip", "grasp", "synflow", "magnitude_at_init", "random"):
            self.assertEqual(_counts(self._masks(criterion=criterion)), ticket, criterion)
            masks = self._masks(criterion=criterion, scope="global")
            self.assertEqual(sum(_counts(masks).values()), sum(ticket.values()), criterion)
            self.assertEqual(_counts(masks)["output"], masks["output"].size, criterion)  # --global_exclude

    def test_magnitude_at_init_and_invert_keep_the_largest_and_the_smallest(self):
        for ablation, sign in (("none", 1), ("invert", -1)):
            masks = self._masks(criterion="magnitude_at_init", ablation=ablation)
            for name, mask in masks.items():
                size = sign * np.abs(self.theta0[f"{name}/kernel"])
                self.assertGreaterEqual(size[mask == 1].min(), size[mask == 0].max(), (ablation, name))

    def test_shuffle_permutes_within_layers_reinit_keeps_the_masks(self):
        plain = self._masks(criterion="snip")
        shuffled = self._masks(criterion="snip", ablation="shuffle")
        self.assertEqual(_counts(shuffled), _counts(plain))
        self.assertNotAllClose(shuffled["fc1"], plain["fc1"])
        reinit = self._masks(criterion="snip", ablation="reinit")
        for name in plain:
            self.assertAllEqual(reinit[name], plain[name])
        results = self._branch("at_init", rounds=[1], seed=4, options={"criterion": "magnitude_at_init",
                                                                      "ablation": "reinit"})
        self.assertLen(results, 1)
        fresh = read_arrays(os.path.join(self.run_path, "branches", "at_init_magnitude_at_init_layerwise_reinit_seed4",
                                         "theta0.npz"))
        self.assertNotAllClose(fresh["fc1/kernel"], self.theta0["fc1/kernel"])

    def test_synflow_masks_read_no_data(self):
        def no_data(*args, **kwargs):
            raise AssertionError("SynFlow read the training data")

        with mock.patch.object(type(self.experiment.dataset), "train", no_data):
            masks = self._masks(criterion="synflow", scope="global")
            with self.assertRaises(AssertionError):
                self._masks(criterion="snip")  # the check has teeth
        self.assertEqual(sum(_counts(masks).values()), sum(_counts(self.main.load_masks(2)).values()))

    def test_bad_at_init_requests_are_one_line_errors(self):
        for options, message in (
                ({}, r"--branch_criterion=\(none\) is not an at-init criterion; --branch=at_init takes "
                     "one of grasp, magnitude_at_init, random, snip, synflow"),
                ({"criterion": "movement"}, "--branch_criterion=movement reads the trained weights"),
                ({"criterion": "snip", "ablation": "flip"}, "--ablation=flip is unknown; known: none, shuffle"),
                ({"criterion": "snip", "scope": "per_group"}, "unknown pruning scope 'per_group'")):
            with self.assertRaisesRegex(errors.LotteryError, message):
                self._branch("at_init", options=options)
        with self.assertRaisesRegex(errors.LotteryError, "--ablation is for --branch=at_init, not --branch=random_reinit"):
            self._branch("random_reinit", options={"ablation": "shuffle"})
        status, out, err = run_cli(["branch", f"--run_dir={self.run_path}", "--branch=at_init",
                                    "--branch_criterion=magnitude"])
        self.assertEqual(status, 2)
        self.assertIn("--branch_criterion=magnitude reads the trained weights", err)
        self.assertFalse(os.path.exists(os.path.join(self.run_path, "branches", "at_init_magnitude_layerwise_seed1")))

    def test_tfmot_arm_reaches_each_layers_target_with_pruned_weights_exactly_zero(self):
        before = _main_line(self.run_path)
        (metrics,) = self._branch("tfmot_gradual", rounds=[2])
        entry = os.path.join(self.run_path, "branches", "tfmot_gradual", "round_002")
        masks, weights = read_arrays(os.path.join(entry, "mask.npz")), read_arrays(os.path.join(entry, "weights.npz"))
        self.assertEqual(_counts(masks), _counts(self.main.load_masks(2)))
        for name, mask in masks.items():
            kernel = weights[f"{name}/kernel"]
            self.assertAllEqual(kernel[mask == 0], np.zeros(int((mask == 0).sum())))
            self.assertGreater(int((mask == 0).sum()), 0, name)
        begin, end, frequency = polynomial_steps(20)
        self.assertEqual((begin, end, frequency), (0, 10, 1))
        schedule = metrics["pruning_schedule"]
        self.assertEqual((schedule["begin_step"], schedule["end_step"]), (0, 10))
        self.assertAllClose(schedule["final_sparsity_by_layer"]["output"], 0.19)
        self.assertGreaterEqual(metrics["early_stop_iteration"], end)
        self.assertEqual([p["iteration"] for p in metrics["curve"]], [10, 20])
        self.assertEqual(_main_line(self.run_path), before)

    def test_snip_imp_rounds_recompute_the_same_masks_and_report_as_their_own_series(self):
        other = os.path.join(self.tmp, "snip_run")
        config = tiny_config(iterations=20, rounds=2, criterion="snip", output_dir=other)
        with mock_tfds():
            runner.run(config, progress=lambda line: None)
            run = RunDir(other)
            masks = run.load_masks(1)
            self.assertAlmostEqual(run.read_metrics(1)["remaining_pct"], 80.04, places=2)
            shutil.rmtree(run.round_dir(1))  # lost: recomputed from round 0 on the rerun
            runner.run(config, progress=lambda line: None)
        for name, mask in RunDir(other).load_masks(1).items():
            self.assertAllEqual(mask, masks[name], name)

        self._branch("at_init", rounds=[2], options={"criterion": "snip", "ablation": "shuffle"})
        self._branch("tfmot_gradual", rounds=[2])
        out = os.path.join(self.tmp, "report")
        rows = report.make_report([self.run_path, other], out, layers_at_remaining=64.0)
        series = {row["series"]: row["trials"] for row in rows}
        self.assertEqual(series["imp"], 1)
        self.assertEqual(series["imp:snip"], 1)  # not a second trial of magnitude IMP
        self.assertIn("at_init:snip, layerwise, shuffle", series)
        self.assertIn("tfmot_gradual", series)
        with open(os.path.join(out, "results.md")) as f:
            text = f.read()
        self.assertIn("| IMP (winning tickets): snip | round 1 |", text)
        self.assertIn("| pruned at init: snip, layerwise, shuffle | round 2 |", text)
        self.assertIn("| tfmot gradual pruning | round 2 |", text)
        self.assertGreater(os.path.getsize(os.path.join(out, "layer_sparsity_by_method.png")), 1000)


class TfmotBlockArmTest(tf.test.TestCase):
    def test_a_block_runs_arm_prunes_whole_blocks_with_tfmot(self):
        from lottery_tf.pruning import blocks

        path = os.path.join(self.get_temp_dir(), "run")
        with mock_tfds():
            runner.run(tiny_config(iterations=20, rounds=2, block="1x4", output_dir=path),
                       progress=lambda line: None)
            (metrics,) = branches.run_branch(path, "tfmot_gradual", progress=lambda line: None,
                                             rounds=[1])
        entry = os.path.join(path, "branches", "tfmot_gradual", "round_001")
        masks = read_arrays(os.path.join(entry, "mask.npz"))
        weights = read_arrays(os.path.join(entry, "weights.npz"))
        ticket = RunDir(path).load_masks(1)
        for name, mask in masks.items():
            self.assertTrue(blocks.aligned(mask, 4), name)
            self.assertGreater(int((mask == 0).sum()), 0, name)
            self.assertAllEqual(weights[f"{name}/kernel"][mask == 0], np.zeros(int((mask == 0).sum())))
            # tfmot counts blocks, the ticket weights: the same sparsity within a block per column.
            self.assertAllClose(mask.mean(), ticket[name].mean(), atol=4 / mask.shape[0])
        self.assertEqual(metrics["pruning_schedule"]["block"], "1x4")
        self.assertEqual(branches.BRANCHES.get("tfmot_gradual").series({}, {"block": "1x4"}),
                         "tfmot_gradual:1x4 blocks")
        self.assertEqual(branches.BRANCHES.get("tfmot_gradual").series({}, {"criterion": "snip"}),
                         "tfmot_gradual")

    def test_a_block_run_with_convolutions_is_refused_in_one_line(self):
        path = os.path.join(self.get_temp_dir(), "conv")
        with mock_tfds():
            runner.run(tiny_config(model="conv2", iterations=4, eval_every=2, rounds=2, block="1x4",
                                   output_dir=path), progress=lambda line: None)
            status, out, err = run_cli(["branch", f"--run_dir={path}", "--branch=tfmot_gradual",
                                        "--branch_rounds=1"])
        self.assertEqual(status, 2, err)
        self.assertEqual(err.count("\n"), 1, err)
        self.assertIn("tfmot's block sparsity takes 2-D kernels only (no axis of length 1), and "
                      "conv1, conv2 are not", err)
        self.assertFalse(os.path.exists(os.path.join(path, "branches", "tfmot_gradual", "round_001",
                                                     "metrics.json")))
