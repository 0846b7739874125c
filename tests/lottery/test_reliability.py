"""Crash injection, integrity, the writer lock, divergence, determinism."""

import csv
import errno
import json
import os
import signal
import subprocess
import sys
from unittest import mock

import numpy as np
import tensorflow as tf

from conftest import mock_tfds, tiny_config
from lottery_tf import errors
from lottery_tf.lottery import runner
from lottery_tf.lottery import storage
from lottery_tf.lottery.run_dir import RunDir
from lottery_tf.lottery.storage import read_arrays, read_json

# tests/, where conftest.py and mock_cli.py live.
TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(TESTS)
ROUNDS = 2
ARGS = [f"--rounds={ROUNDS}", "--iterations=100", "--eval_every=25", "--checkpoint_every=50",
        "--validation_size=60", "--batch_size=16", "--verbose=0"]


def _tiny(**overrides):
    """The tiny configuration these tests train: 40 iterations, a checkpoint every 20."""
    return tiny_config(**{"iterations": 40, "checkpoint_every": 20, **overrides})


def _cli(out_dir, fault=None, extra=()):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS, REPO]))
    env.pop("LOTTERY_TF_FAULT", None)
    if fault:
        env["LOTTERY_TF_FAULT"] = fault
    return subprocess.run([sys.executable, os.path.join(TESTS, "mock_cli.py"), *ARGS, *extra,
                           f"--output_dir={out_dir}"], env=env, capture_output=True, text=True, timeout=300)


def _final_state(path):
    run = RunDir(path)
    masks = [read_arrays(run.mask_path(r)) for r in range(ROUNDS + 1)]
    metrics = []
    for r in range(ROUNDS):
        m = read_json(run.metrics_path(r))
        m.pop("wall_time_s")
        metrics.append(m)
    with open(run.summary_path) as f:
        rows = [{k: v for k, v in row.items() if k != "wall_time_s"} for row in csv.DictReader(f)]
    return masks, metrics, rows


class CrashInjectionTest(tf.test.TestCase):
    def test_sigkill_at_each_fail_point_then_resume_equals_reference(self):
        tmp = self.get_temp_dir()
        reference = os.path.join(tmp, "reference")
        self.assertEqual(_cli(reference).returncode, 0)
        want_masks, want_metrics, want_rows = _final_state(reference)
        # One checkpoint a round (at 50 of 100 iterations): mid_fit:2 is inside
        # round 1's fit; after_prune:1 is the end of round 0 before anything of
        # it is saved; write:7 is in the middle of round 0's files.
        for fault in ("mid_fit:2", "after_prune:1", "write:7"):
            path = os.path.join(tmp, fault.replace(":", "_"))
            crashed = _cli(path, fault)
            self.assertEqual(crashed.returncode, -signal.SIGKILL, (fault, crashed.stderr))
            self.assertFalse(RunDir(path).round_complete(ROUNDS - 1), fault)
            resumed = _cli(path)
            self.assertEqual(resumed.returncode, 0, (fault, resumed.stderr))
            masks, metrics, rows = _final_state(path)
            for got, want in zip(masks, want_masks):
                for name in want:
                    self.assertAllEqual(got[name], want[name], fault)
            self.assertEqual(metrics, want_metrics, fault)
            self.assertEqual(rows, want_rows, fault)
            if fault.startswith("mid_fit"):
                self.assertIn("[saved]", resumed.stdout.splitlines()[0])


class ExportCrashTest(tf.test.TestCase):
    def test_sigkill_during_export_leaves_no_export_and_a_rerun_completes(self):
        from export.helpers import lenet_run

        run_path = os.path.join(self.get_temp_dir(), "run")
        lenet_run(run_path)
        output = os.path.join(self.get_temp_dir(), "exports", "ticket")
        env = dict(os.environ, PYTHONPATH=REPO)
        command = [sys.executable, "-m", "lottery_tf", "export", f"--run={run_path}", "--round=1",
                   f"--output={output}", "--probe=random"]
        crashed = subprocess.run(command, env=dict(env, LOTTERY_TF_FAULT="export"), capture_output=True,
                                 text=True, timeout=300)
        self.assertEqual(crashed.returncode, -signal.SIGKILL, crashed.stderr)
        self.assertFalse(os.path.exists(output))
        resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        self.assertEqual(resumed.returncode, 0, resumed.stderr)
        self.assertTrue(os.path.exists(os.path.join(output, "saved_model.pb")))


class IntegrityTest(tf.test.TestCase):
    def _run(self, path, **overrides):
        with mock_tfds():
            return runner.run(_tiny(output_dir=path, **overrides), progress=lambda line: None)

    def test_truncated_or_altered_files_are_named_and_never_used(self):
        path = os.path.join(self.get_temp_dir(), "run")
        self._run(path, rounds=2)
        run = RunDir(path)
        for victim, damage in ((run.mask_path(2), "truncate"), (run.theta0_path, "alter")):
            with open(victim, "rb") as f:
                original = f.read()
            with open(victim, "wb") as f:
                f.write(original[: len(original) // 2] if damage == "truncate"
                        else original[:-1] + bytes([original[-1] ^ 1]))
            with self.assertRaisesRegex(errors.LotteryError, f"{victim} is damaged"):
                self._run(path, rounds=3)
            self.assertFalse(run.round_complete(2))
            with open(victim, "wb") as f:
                f.write(original)
        self.assertLen(self._run(path, rounds=3), 3)

    def test_a_file_missing_from_the_manifest_counts_as_not_written(self):
        path = os.path.join(self.get_temp_dir(), "run")
        self._run(path, rounds=1)
        run = RunDir(path)
        manifest = os.path.join(run.round_dir(0), "MANIFEST.json")
        with open(manifest) as f:
            entries = json.load(f)
        del entries["metrics.json"]
        with open(manifest, "w") as f:  # as if killed before recording it
            f.write(json.dumps(entries))
        self.assertFalse(run.round_complete(0))

    def test_disk_full_leaves_the_previous_state_valid_and_says_so(self):
        path = os.path.join(self.get_temp_dir(), "run")
        self._run(path, rounds=1)
        original = storage._stage
        calls = []

        def full_disk(target, data):
            calls.append(target)
            if "round_001" in target and target.endswith("weights.npz"):
                raise OSError(errno.ENOSPC, "No space left on device")
            return original(target, data)

        with mock.patch.object(storage, "_stage", full_disk):
            with self.assertRaisesRegex(errors.LotteryError,
                                        r"could not write .*round_001/weights.npz: No space left on device; "
                                        "everything completed before is intact"):
                self._run(path, rounds=2)
        run = RunDir(path)
        self.assertTrue(run.round_complete(0))
        self.assertFalse(run.round_complete(1))
        self.assertEqual([f for f in os.listdir(run.round_dir(1)) if f.startswith(".tmp-")], [])
        self.assertLen(self._run(path, rounds=2), 2)

    def test_nothing_is_unpickled(self):
        path = os.path.join(self.get_temp_dir(), "evil.npz")
        np.savez(path, a=np.array([{"x": 1}], dtype=object))
        with self.assertRaisesRegex(errors.LotteryError, "is damaged"):
            storage.read_arrays(path)


class LockTest(tf.test.TestCase):
    def test_a_second_writer_is_refused_and_a_dead_one_leaves_no_lock(self):
        path = os.path.join(self.get_temp_dir(), "run")
        os.makedirs(path)
        holder = RunDir(path)
        holder.lock()
        with self.assertRaisesRegex(errors.LotteryError, f"run directory {path} is in use by process {os.getpid()}"):
            RunDir(path).lock()
        holder.unlock()
        # A process that dies holding the lock (SIGKILL) does not leave it stuck.
        code = ("import sys, os, signal; sys.path.insert(0, %r); from lottery_tf.lottery.run_dir import RunDir; "
                "RunDir(%r).lock(); os.kill(os.getpid(), signal.SIGKILL)") % (REPO, path)
        self.assertEqual(subprocess.run([sys.executable, "-c", code]).returncode, -signal.SIGKILL)
        RunDir(path).lock()


class DivergenceTest(tf.test.TestCase):
    def test_divergence_stops_with_round_and_iteration_and_resumes_only_explicitly(self):
        path = os.path.join(self.get_temp_dir(), "run")
        with mock_tfds():
            runner.run(_tiny(output_dir=path, rounds=1), progress=lambda line: None)
            wild = _tiny(output_dir=path, rounds=2, learning_rate=1e30, allow_changed_hyperparameters=True)
            with self.assertRaisesRegex(errors.LotteryError,
                                        r"round 1 diverged: loss (nan|inf) by iteration \d+; rounds before it are intact"):
                runner.run(wild, progress=lambda line: None)
            self.assertTrue(RunDir(path).round_complete(0))
            self.assertFalse(RunDir(path).round_complete(1))
            tame = _tiny(output_dir=path, rounds=2, learning_rate=1e-3)
            with self.assertRaisesRegex(errors.LotteryError, "other hyperparameters: learning_rate=1e\\+30 \\(now 0.001\\)"):
                runner.run(tame, progress=lambda line: None)
            results = runner.run(_tiny(output_dir=path, rounds=2, learning_rate=1e-3,
                                       allow_changed_hyperparameters=True), progress=lambda line: None)
        self.assertLen(results, 2)
        history = read_json(RunDir(path).changes_path)
        self.assertEqual([h["changes"] for h in history],
                         [{"learning_rate": [0.0012, 1e30]}, {"learning_rate": [1e30, 0.001]}])
        self.assertEqual([h["from_round"] for h in history], [1, 1])


class DeterminismTest(tf.test.TestCase):
    def test_same_command_twice_gives_identical_masks_and_metrics(self):
        runs = []
        for name in ("a", "b"):
            path = os.path.join(self.get_temp_dir(), name)
            with mock_tfds():
                runs.append(runner.run(_tiny(output_dir=path, rounds=3), progress=lambda line: None))
        for a, b in zip(*runs):
            a, b = dict(a), dict(b)
            a.pop("wall_time_s"), b.pop("wall_time_s")
            self.assertEqual(a, b)
        for r in range(4):
            a = read_arrays(RunDir(os.path.join(self.get_temp_dir(), "a")).mask_path(r))
            b = read_arrays(RunDir(os.path.join(self.get_temp_dir(), "b")).mask_path(r))
            for name in a:
                self.assertAllEqual(a[name], b[name])
