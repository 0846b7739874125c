"""The instability branch: the path's ends are the copies, the barrier, resuming, --find_rewind."""

import glob
import os
import re
import shutil
import tempfile
from unittest import mock

import numpy as np
import tensorflow as tf

from conftest import mock_tfds, run_cli, tiny_config, tree_files
from test_recovery import _fault as _killed_at  # SIGKILL at a fail point, in-process
from test_recovery import _Killed
from lottery_tf import errors
from lottery_tf.lottery import branches, runner
from lottery_tf.lottery.branches import instability
from lottery_tf.lottery.run_dir import RunDir
from lottery_tf.lottery.storage import read_arrays, read_json, write_arrays, write_json
from lottery_tf.report import make_report

ENTRIES = [(0, 0), (1, 0), (1, 5), (1, 10)]


def _main_line(path):
    return {name: data for name, data in tree_files(path).items()
            if not name.startswith("branches" + os.sep)}


def _entries(path):
    """Every file of the branch but locks, TensorBoard logs and manifests; metrics without wall times."""
    found = {}
    for name, data in tree_files(path).items():
        if name.startswith("tensorboard") or name.endswith("MANIFEST.json"):
            continue
        if name.endswith("metrics.json"):
            data = b"\n".join(line for line in data.splitlines() if b"wall_time_s" not in line)
        found[name] = data
    return found


class InstabilityMathTest(tf.test.TestCase):
    def test_barrier_of_a_hand_made_path(self):
        self.assertAllClose(instability.barrier([2.0, 3.0, 9.0, 4.0, 4.0]), 9.0 - 3.0)
        self.assertAllClose(instability.barrier([1.0, 1.0, 1.0]), 0.0)
        self.assertAllClose(instability.barrier([5.0, 4.0, 3.0]), 1.0)  # max at an end

    def test_earliest_stable_on_a_stubbed_sequence(self):
        barriers = {500: 1.5, 0: 6.0, 100: 2.5, 200: 1.99, 1000: 2.4}
        self.assertEqual(instability.earliest_stable(barriers), 200)
        self.assertEqual(instability.earliest_stable(barriers, threshold=1.0), None)
        self.assertEqual(instability.earliest_stable(barriers, threshold=7.0), 0)
        # Entries still pending before a stable k leave the earliest open.
        verdict = instability.find_rewind_verdict
        self.assertEqual(verdict({0: 5.0, 500: 0.1}, [100])[0], None)
        self.assertIn("k=100 before it not probed yet", verdict({0: 5.0, 500: 0.1}, [100])[1])
        self.assertEqual(verdict({0: 5.0, 500: 0.1}, [1000])[0], 500)
        self.assertEqual(verdict({0: 5.0}, [1000]), (None, "no stable k yet; k=1000 not probed yet"))
        self.assertEqual(verdict({0: 5.0}, [])[0], None)

    def test_interpolation_ends_are_the_endpoints_bit_for_bit(self):
        rng = np.random.default_rng(0)
        a = {"k": rng.normal(size=(7, 5)).astype(np.float32)}
        b = {"k": rng.normal(size=(7, 5)).astype(np.float32)}
        alphas = np.linspace(0.0, 1.0, instability.PATH_POINTS)
        self.assertAllEqual(instability.interpolate(a, b, float(alphas[0]))["k"], a["k"])
        self.assertAllEqual(instability.interpolate(a, b, float(alphas[-1]))["k"], b["k"])
        self.assertAllClose(instability.interpolate(a, b, 0.5)["k"], (a["k"] + b["k"]) / 2)


class InstabilityBranchTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp(prefix="lottery_instability_")
        cls.run_path = os.path.join(cls.tmp, "run")
        with mock_tfds():
            cls.dataset = _load()
            cls.config = tiny_config(iterations=20, rounds=2, checkpoint_every=10, rewind_iteration=10,
                                     output_dir=cls.run_path)
            runner.run(cls.config, progress=lambda line: None, dataset=cls.dataset)
        cls.main_before = _main_line(cls.run_path)
        cls.pristine = os.path.join(cls.tmp, "pristine")
        shutil.copytree(cls.run_path, cls.pristine)
        # θ0 for both rounds; for round 1 also θ5 (trained in the branch) and θ10 (the run's rewind.npz).
        cls.results = (cls._branch(cls.run_path, rounds=[0, 1], options={"start_iterations": [0]})
                       + cls._branch(cls.run_path, rounds=[1], options={"start_iterations": [5, 10]}))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    @classmethod
    def _branch(cls, path, **kwargs):
        return branches.run_branch(path, "instability", progress=lambda line: None,
                                   dataset=cls.dataset, **kwargs)

    def test_path_ends_reproduce_the_copies_accuracies_exactly(self):
        self.assertEqual([(m["round"], m["start_iteration"]) for m in self.results], ENTRIES)
        self.assertEqual([m["start_point"] for m in self.results],
                         ["theta0", "theta0", "round 0 trained to iteration 5 in the branch",
                          "rewind.npz of the run"])
        for metrics in self.results:
            path, copies = metrics["path"], metrics["copies"]
            self.assertLen(path, 30)
            self.assertAllClose([p["alpha"] for p in path], np.linspace(0, 1, 30))
            self.assertEqual(path[0]["test_accuracy"], copies[0]["final_test_accuracy"])
            self.assertEqual(path[-1]["test_accuracy"], copies[1]["final_test_accuracy"])
            errors_pct = [100 * (1 - p["test_accuracy"]) for p in path]
            self.assertAllClose(metrics["test_error_pct"], errors_pct)
            self.assertAllClose(metrics["barrier_pct"],
                                max(errors_pct) - (errors_pct[0] + errors_pct[-1]) / 2)

    def test_cost_is_both_copies_on_top_of_the_rounds_that_chose_the_mask(self):
        # 20 iterations a copy; round 1's mask cost round 0's 20 iterations.
        self.assertEqual([(m["train_iterations"], m["cumulative_iterations"]) for m in self.results],
                         [(40, 40), (40, 60), (40, 60), (40, 60)])

    def test_copies_share_start_and_mask_not_data_order(self):
        branch = RunDir(self.run_path).branch("instability_seed1")
        seeds = set()
        for r, k in ENTRIES:
            entry = branch.entry(f"round_{r:03d}_k{k:07d}")
            a, b = entry.part("copy_a"), entry.part("copy_b")
            for name, mask in RunDir(self.run_path).load_masks(r).items():
                self.assertAllEqual(a.read_masks()[name], mask)
                self.assertAllEqual(b.read_masks()[name], mask)
                pruned = mask == 0
                self.assertAllEqual(a.read_weights()[f"{name}/kernel"][pruned], np.zeros(pruned.sum()))
            self.assertNotAllClose(a.read_weights()["fc1/kernel"], b.read_weights()["fc1/kernel"])
            seeds.update([a.read_metrics()["data_seed"], b.read_metrics()["data_seed"]])
        self.assertLen(seeds, 4)  # two copies x two rounds; k does not change the data order
        self.assertEmpty(seeds & {runner.round_seed(0, r) for r in range(100)})
        self.assertEqual(sorted(os.path.basename(p) for p in glob.glob(os.path.join(branch.path, "rewind_*"))),
                         ["rewind_0000005.npz"])

    def test_theta_k_trained_in_the_branch_is_the_runs_rewind_point(self):
        main = RunDir(self.run_path)
        branch = instability.Instability(main, self.config)
        with mock_tfds():
            trained = branch.train_to(runner.setup(self.config, self.dataset), 10)
        for key, value in read_arrays(main.rewind_path).items():
            self.assertAllEqual(trained[key], value, key)

    def test_main_line_untouched_and_rerun_trains_nothing(self):
        self.assertEqual(_main_line(self.run_path), self.main_before)
        with mock.patch.object(runner, "train", side_effect=AssertionError("retrained")):
            again = self._branch(self.run_path, rounds=[1], options={"start_iterations": [0, 5, 10]})
        self.assertEqual(again, self.results[1:])

    def test_killed_and_rerun_equals_uninterrupted(self):
        reference = _entries(os.path.join(self.run_path, "branches", "instability_seed1"))
        # Round 1, k = 5: θ5, both copies (each checkpointed at 10 of 20 iterations), the path.
        wanted = {name: data for name, data in reference.items()
                  if name.startswith("round_001_k0000005") or name.startswith("rewind_")}
        evaluate_path = instability.evaluate_path

        def killed_on_the_path(*args):
            evaluate_path(*args)
            raise _Killed("path evaluated, not recorded")

        kills = {"mid_fit:2": _killed_at("mid_fit:2"),  # copy_a done, copy_b at 10 of 20
                 "path": mock.patch.object(instability, "evaluate_path", killed_on_the_path)}
        for spec, kill in kills.items():
            path = os.path.join(self.tmp, spec.replace(":", "_"))
            shutil.copytree(self.pristine, path)
            with self.assertRaises(_Killed), kill:
                self._branch(path, rounds=[1], options={"start_iterations": [5]})
            self._branch(path, rounds=[1], options={"start_iterations": [5]})
            got = _entries(os.path.join(path, "branches", "instability_seed1"))
            self.assertEqual(sorted(n for n in got if n in wanted or "round_" in n or "rewind_" in n),
                             sorted(wanted), spec)
            for name, data in wanted.items():
                self.assertEqual(got[name], data, f"{spec}: {name}")

    def test_find_rewind_reports_the_earliest_stable_k(self):
        stub = {0: 7.0, 5: 3.0, 10: 1.5, 15: 0.2}

        def train_entry(branch, experiment, entry, key, start):
            metrics = {**self.results[0], "round": key[0], "start_iteration": key[1],
                       "barrier_pct": stub[key[1]]}
            os.makedirs(entry.path, exist_ok=True)
            write_json(entry.metrics_path, metrics)
            return metrics

        path = os.path.join(self.tmp, "find_rewind")
        shutil.copytree(self.pristine, path)
        lines = []
        with mock.patch.object(instability.Instability, "train_entry", train_entry):
            branches.run_branch(path, "instability", rounds=[1], dataset=self.dataset,
                                options={"find_rewind": [15, 0, 10, 5]}, progress=lines.append)
        self.assertIn("find_rewind round 1: earliest stable k = 10 (barrier < 2 points", lines[-1])
        found = RunDir(path).branch("instability_seed1")
        record = read_json(found.find_rewind_path)
        self.assertEqual(record["threshold_pct"], 2.0)
        self.assertEqual(record["rounds"]["1"]["earliest_stable_k"], 10)
        # The threshold is a flag; entries are not retrained for another one.
        status, out, err = run_cli(["branch", f"--run_dir={path}", "--branch=instability",
                                    "--branch_rounds=1", "--find_rewind=0,5,10,15",
                                    "--barrier_threshold=0.5"])
        self.assertEqual(status, 0, err)
        self.assertIn("[saved]", out)
        self.assertIn("find_rewind round 1: earliest stable k = 15 (barrier < 0.5 points", out)

    def test_report_has_barrier_table_and_path_figure_beside_the_accuracy_series(self):
        report_dir = os.path.join(self.tmp, "report")
        rows = make_report([self.run_path], report_dir)
        self.assertEqual({row["series"] for row in rows}, {"imp"})
        with open(os.path.join(report_dir, "instability.md")) as f:
            table = f.read().splitlines()
        self.assertLen(table, 2 + 4)
        barrier = self.results[2]["barrier_pct"]
        self.assertIn(f"| 1 | 80.04 | 5 | 1 | {barrier:.2f} ({barrier:.2f}–{barrier:.2f}) |", table[-2])
        self.assertTrue(os.path.getsize(os.path.join(report_dir, "instability_paths.png")) > 10_000)

    def test_bad_requests_refused_in_one_line(self):
        cases = [
            (dict(rounds=[1], options={"start_iterations": [20]}), "k=20 is outside [0, 20)"),
            (dict(rounds=[5]), "round 5 of"),
            (dict(rounds=[1], options={"start_iterations": [0], "find_rewind": [0]}),
             "drop --instability_k"),
        ]
        for kwargs, message in cases:
            with self.assertRaisesRegex(errors.LotteryError, re.escape(message)):
                self._branch(self.pristine, **kwargs)
        with self.assertRaisesRegex(errors.LotteryError, "--instability_k is for --branch=instability"):
            branches.run_branch(self.pristine, "random_reinit", options={"start_iterations": [0]})
        bn = os.path.join(self.tmp, "batch_norm")
        shutil.copytree(self.pristine, bn)
        theta0 = read_arrays(RunDir(bn).theta0_path)
        write_arrays(RunDir(bn).theta0_path, {**theta0, "conv1_bn/moving_mean": np.zeros(3, np.float32)})
        with self.assertRaisesRegex(errors.LotteryError, re.escape("batch normalization (conv1_bn of ")):
            self._branch(bn, rounds=[1])
        self.assertFalse(os.path.exists(os.path.join(bn, "branches")))


def _load():
    from lottery_tf.train import data

    return data.load("mnist", validation_size=60)
