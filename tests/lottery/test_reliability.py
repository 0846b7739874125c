"""Crash injection, integrity, the writer lock, divergence, determinism."""

import csv
import errno
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time
from unittest import mock

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import config as tf_framework_config

from conftest import mock_tfds, tiny_config, tree_files
from lottery_tf import errors
from lottery_tf.lottery import runner
from lottery_tf.lottery import storage
from lottery_tf.lottery.run_dir import RunDir
from lottery_tf.lottery.storage import read_arrays, read_json

# tests/, where conftest.py and mock_cli.py live.
TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(TESTS)
ROUNDS = 2
# No XLA: what these tests check does not depend on it, and each process would
# compile the model again (seconds each).
ARGS = [f"--rounds={ROUNDS}", "--iterations=100", "--eval_every=25", "--checkpoint_every=50",
        "--validation_size=60", "--batch_size=16", "--verbose=0", "--nojit_compile"]


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
        # it is saved; write:9 is round 0's mask, before its training (config,
        # dataset, environment, theta0 and their manifests are writes 1-8); write:15 is in the
        # middle of round 0's files (weights written, round 1's mask being
        # written, metrics not yet).
        #
        # The resume must START from the newest checkpoint, not redo the round
        # (a redone round would match the reference too): with --verbose=2 Keras
        # prints one "N/N - ..." line per fit, N the steps it trained. mid_fit:2
        # leaves round 1's checkpoint at 50, so 50 steps are left; after_prune:1
        # and write:15 leave round 0's checkpoint at 50 (its metrics not yet
        # recorded), so round 0 trains its last 50 steps and round 1 all 100;
        # write:9 comes before any checkpoint: both rounds train from the start.
        trained = {"mid_fit:2": ["50/50"], "after_prune:1": ["50/50", "100/100"],
                   "write:9": ["100/100", "100/100"], "write:15": ["50/50", "100/100"]}
        for fault in ("mid_fit:2", "after_prune:1", "write:9", "write:15"):
            path = os.path.join(tmp, fault.replace(":", "_"))
            crashed = _cli(path, fault)
            self.assertEqual(crashed.returncode, -signal.SIGKILL, (fault, crashed.stderr))
            self.assertFalse(RunDir(path).round_complete(ROUNDS - 1), fault)
            # Killed where the comment above says.
            self.assertEqual(RunDir(path).round_complete(0), fault == "mid_fit:2", fault)
            self.assertEqual(storage.is_recorded(RunDir(path).weights_path(0)), fault in ("mid_fit:2", "write:15"),
                             fault)
            resumed = _cli(path, extra=["--verbose=2"])
            self.assertEqual(resumed.returncode, 0, (fault, resumed.stderr))
            self.assertEqual(re.findall(r"^(\d+/\d+) - ", resumed.stdout, re.M), trained[fault],
                             (fault, resumed.stdout))
            masks, metrics, rows = _final_state(path)
            for got, want in zip(masks, want_masks):
                for name in want:
                    self.assertAllEqual(got[name], want[name], fault)
            self.assertEqual(metrics, want_metrics, fault)
            self.assertEqual(rows, want_rows, fault)
            if fault.startswith("mid_fit"):
                rounds = [line for line in resumed.stdout.splitlines() if line.startswith("round ")]
                self.assertLen(rounds, ROUNDS)
                self.assertIn("[saved]", rounds[0])


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


# A real `lottery-tf` process (mock data) that takes its directory's lock and
# then, instead of training, sleeps inside the round's training step: a writer
# that holds the lock as long as the test needs, without using the CPU.
_HOLDER = """
import sys, time
from conftest import mock_tfds
from lottery_tf import cli
from lottery_tf.train import fit

MARKER = sys.argv[1]

def train_round(*args, **kwargs):
    open(MARKER, "w").close()  # now training: nothing more is written
    time.sleep(600)

fit.train_round = train_round
sys.argv = ["lottery-tf"] + sys.argv[2:]
with mock_tfds():
    cli.run()
"""


# TensorFlow's C++ log lines (absl format) and absl's pre-init notice.
_TF_LOG = re.compile(r"^([IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] |WARNING: All log messages before absl)")


class ProcessLockTest(tf.test.TestCase):
    """A second real `lottery-tf` process on a directory a first one is writing."""

    def _env(self):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS, REPO]))
        env.pop("LOTTERY_TF_FAULT", None)
        return env

    def _start_holder(self, args, lock_glob):
        """Starts the first process; returns it once it holds a lock matching `lock_glob` and trains."""
        marker = os.path.join(self.get_temp_dir(), f"training-{len(os.listdir(self.get_temp_dir()))}")
        holder = subprocess.Popen([sys.executable, "-c", _HOLDER, marker, *args], env=self._env(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.addCleanup(holder.wait)
        self.addCleanup(holder.kill)
        deadline = time.monotonic() + 180
        while True:
            locks = glob.glob(lock_glob)
            held = [p for p in locks if open(p).read() == f"process {holder.pid}"]
            if held and os.path.exists(marker):
                return holder, held[0]
            if holder.poll() is not None:
                self.fail(f"the first process ended ({holder.returncode}): {holder.stderr.read()}")
            if time.monotonic() > deadline:
                self.fail("the first process did not take the lock and start training in 180 s")
            time.sleep(0.2)

    def _assert_refused(self, holder, lock_path, args, tree_root):
        before = tree_files(tree_root, skip=())  # .lock too: it must still name the first
        second = subprocess.run([sys.executable, os.path.join(TESTS, "mock_cli.py"), *args], env=self._env(),
                                capture_output=True, text=True, timeout=300)
        self.assertEqual(second.returncode, 2, second.stderr)
        # mock_cli.py imports TensorFlow (for the mock data) before the CLI can
        # mute its C++ start-up log; everything else is the one line.
        ours = [line for line in second.stderr.splitlines(keepends=True) if not _TF_LOG.match(line)]
        self.assertEqual(
            ours,
            [f"lottery-tf: error: run directory {os.path.dirname(lock_path)} is in use by process "
             f"{holder.pid}; wait for it to finish or stop it first\n"])
        self.assertEqual(second.stdout, "")
        self.assertEqual(tree_files(tree_root, skip=()), before)
        self.assertIsNone(holder.poll())  # the first held its lock all along
        self.assertEqual(open(lock_path).read(), f"process {holder.pid}")

    def test_a_second_run_process_is_refused_and_changes_nothing(self):
        path = os.path.join(self.get_temp_dir(), "run")
        args = [*ARGS, f"--output_dir={path}"]
        holder, lock_path = self._start_holder(args, os.path.join(path, ".lock"))
        self._assert_refused(holder, lock_path, args, path)

    def test_a_second_branch_process_is_refused_and_changes_nothing(self):
        path = os.path.join(self.get_temp_dir(), "run")
        with mock_tfds():
            runner.run(_tiny(output_dir=path, rounds=1, iterations=20), progress=lambda line: None)
        args = ["branch", f"--run_dir={path}", "--branch=random_reinit"]
        holder, lock_path = self._start_holder(args, os.path.join(path, "branches", "*", ".lock"))
        self._assert_refused(holder, lock_path, args, path)


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
    def test_setup_turns_op_determinism_on(self):
        # Process-wide state another test may have set: start from "off".
        was_on = tf_framework_config.is_op_determinism_enabled()
        tf_framework_config.disable_op_determinism()
        try:
            with mock_tfds():
                runner.setup(_tiny(output_dir=os.path.join(self.get_temp_dir(), "unused"), deterministic=True))
            self.assertTrue(tf_framework_config.is_op_determinism_enabled())
        finally:
            if was_on:
                tf.config.experimental.enable_op_determinism()
            else:
                tf_framework_config.disable_op_determinism()

    def _assert_bitwise_equal(self, a, b, what):
        self.assertEqual((a.dtype, a.shape), (b.dtype, b.shape), what)
        self.assertTrue(a.tobytes() == b.tobytes(), f"{what}: {np.count_nonzero(a != b)} entries differ")

    def test_same_command_in_two_processes_gives_bitwise_identical_masks_weights_and_metrics(self):
        paths = [os.path.join(self.get_temp_dir(), name) for name in ("process_a", "process_b")]
        for path in paths:
            result = _cli(path)
            self.assertEqual(result.returncode, 0, result.stderr)
        a, b = (RunDir(path) for path in paths)
        for r in range(ROUNDS + 1):
            mask_a, mask_b = read_arrays(a.mask_path(r)), read_arrays(b.mask_path(r))
            self.assertEqual(sorted(mask_a), sorted(mask_b))
            for name in mask_a:
                self._assert_bitwise_equal(mask_a[name], mask_b[name], (r, name))
        for r in range(ROUNDS):
            weights_a, weights_b = read_arrays(a.weights_path(r)), read_arrays(b.weights_path(r))
            self.assertEqual(sorted(weights_a), sorted(weights_b))
            for name in weights_a:
                self._assert_bitwise_equal(weights_a[name], weights_b[name], (r, name))
            metrics_a, metrics_b = read_json(a.metrics_path(r)), read_json(b.metrics_path(r))
            metrics_a.pop("wall_time_s"), metrics_b.pop("wall_time_s")
            # Floats compared exactly (JSON keeps every bit of a float64).
            self.assertEqual(metrics_a, metrics_b, r)

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
