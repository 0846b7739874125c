"""A killed or damaged run can always be continued, as the messages say.

Crashes at *every* fail point (each file write, mid-fit checkpoints, after
pruning) are simulated in this process: `faults.die` raises instead of
SIGKILLing, so the run stops exactly there, leaving what a kill would leave
(files renamed so far, manifests so far). The two points that used to strand
a run in its first seconds are also killed for real, in a subprocess.
Damage messages are followed to the letter, and must lead to the same result.
"""

import contextlib
import csv
import os
import shutil
import subprocess
import sys
from unittest import mock

import numpy as np
import tensorflow as tf

from conftest import mock_tfds, tiny_config, tree_files
from lottery_tf import errors, faults
from lottery_tf.lottery import runner, storage
from lottery_tf.lottery.run_dir import RunDir
from lottery_tf.lottery.storage import read_arrays, read_json

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(TESTS)


class _Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so no handler of ours catches it."""


def _config(path, **overrides):
    # No XLA and one step per execution: the crash logic does not depend on
    # them, and compiling and tracing cost seconds per run.
    return tiny_config(**{"iterations": 10, "eval_every": 5, "rounds": 2, "checkpoint_every": 5,
                          "steps_per_execution": 1, "jit_compile": False, "output_dir": path,
                          **overrides})


_DATASET = []


def _dataset():
    """The mock dataset, loaded once (inside `mock_tfds`) for every run here."""
    if not _DATASET:
        from lottery_tf.train import data

        _DATASET.append(data.load("mnist", validation_size=60))
    return _DATASET[0]


def _run(path, **overrides):
    return runner.run(_config(path, **overrides), progress=lambda line: None, dataset=_dataset())


@contextlib.contextmanager
def _fault(spec):
    """Stops the run at fail point `spec` ("write:3", "mid_fit:2", ...)."""
    faults.reset()

    def die():
        raise _Killed(spec)

    with mock.patch.dict(os.environ, {"LOTTERY_TF_FAULT": spec}), mock.patch.object(faults, "die", die):
        yield
    faults.reset()


def _state(path):
    """Masks, metrics and summary of a finished 2-round run, wall times aside."""
    run = RunDir(path)
    masks = [read_arrays(run.mask_path(r)) for r in range(3)]
    metrics = [{k: v for k, v in read_json(run.metrics_path(r)).items() if k != "wall_time_s"}
               for r in range(2)]
    with open(run.summary_path) as f:
        rows = [{k: v for k, v in row.items() if k != "wall_time_s"} for row in csv.DictReader(f)]
    return masks, metrics, rows


def assert_resumes(test, spec, path, run, state, expected):
    """Stops `run(path)` at fail point `spec`, reruns it, and compares `state(path)`
    (masks, metrics, summary rows) with `expected`."""
    shutil.rmtree(path, ignore_errors=True)
    with mock_tfds():
        with _fault(spec), test.assertRaises(_Killed):
            run(path)
        run(path)
    masks, metrics, rows = state(path)
    for got, want in zip(masks, expected[0]):
        for name in want:
            test.assertAllEqual(got[name], want[name], f"{spec}: {name}")
    test.assertEqual(metrics, expected[1], spec)
    test.assertEqual(rows, expected[2], spec)


class CrashAtEveryPointTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tf.compat.v1.test.get_temp_dir()
        cls.reference = os.path.join(cls.tmp, "reference")
        shutil.rmtree(cls.reference, ignore_errors=True)
        counts = {}
        original = faults.point

        def count(name):
            counts[name] = counts.get(name, 0) + 1
            original(name)

        with mock_tfds(), mock.patch.object(faults, "point", count):
            # The fail points are reached through the module attribute.
            _run(cls.reference)
        cls.counts = counts
        cls.expected = _state(cls.reference)

    def _assert_resumes(self, spec):
        assert_resumes(self, spec, os.path.join(self.tmp, spec.replace(":", "_")), _run, _state,
                       self.expected)

    def test_every_write_point(self):
        self.assertGreaterEqual(self.counts["write"], 20)
        for n in range(1, self.counts["write"] + 1):
            self._assert_resumes(f"write:{n}")

    def test_every_mid_fit_and_after_prune_point(self):
        self.assertEqual(self.counts["mid_fit"], 2)  # one per round (at 5 of 10 iterations)
        self.assertEqual(self.counts["after_prune"], 2)
        for name in ("mid_fit", "after_prune"):
            for n in range(1, self.counts[name] + 1):
                self._assert_resumes(f"{name}:{n}")


class FirstWritesSigkillTest(tf.test.TestCase):
    """The two points that stranded a run (only .lock and a temp file; θ0
    renamed but not yet in the manifest), killed for real."""

    def test_rerun_after_sigkill_in_the_first_writes(self):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS, REPO]))
        args = ["--rounds=1", "--iterations=20", "--eval_every=10", "--validation_size=60",
                "--batch_size=16", "--verbose=0", "--nojit_compile"]
        for point in ("write:1", "write:8"):  # write:8: θ0 renamed, its manifest entry not yet written
            path = os.path.join(self.get_temp_dir(), point.replace(":", "_"))
            command = [sys.executable, os.path.join(TESTS, "mock_cli.py"), *args, f"--output_dir={path}"]
            killed = subprocess.run(command, env=dict(env, LOTTERY_TF_FAULT=point),
                                    capture_output=True, text=True, timeout=300)
            self.assertEqual(killed.returncode, -9, killed.stderr)
            rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
            self.assertEqual(rerun.returncode, 0, rerun.stderr)
            self.assertTrue(RunDir(path).round_complete(0), point)


class DamageAdviceTest(tf.test.TestCase):
    """Each damage message names a recovery; following it gives the same run."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tf.compat.v1.test.get_temp_dir()
        cls.reference = os.path.join(cls.tmp, "damage_reference")
        shutil.rmtree(cls.reference, ignore_errors=True)
        with mock_tfds():
            _run(cls.reference, rounds=3)

    def _copy(self, name):
        path = os.path.join(self.get_temp_dir(), name)
        shutil.copytree(self.reference, path)
        return path

    def _refused_without_writing(self, path):
        before = tree_files(path)
        with mock_tfds(), self.assertRaises(errors.LotteryError) as refusal:
            _run(path, rounds=3)
        self.assertEqual(tree_files(path), before, "a failing rerun wrote something")
        return str(refusal.exception)

    def _follow(self, path, advice):
        """Does what the advice says (delete the named paths), then reruns."""
        for target in advice:
            self.assertTrue(os.path.exists(target), target)
            shutil.rmtree(target) if os.path.isdir(target) else os.unlink(target)
        with mock_tfds():
            _run(path, rounds=3)
        want, got = RunDir(self.reference), RunDir(path)
        for r in range(4):
            for name, mask in read_arrays(want.mask_path(r)).items():
                self.assertAllEqual(read_arrays(got.mask_path(r))[name], mask)
        for r in range(3):
            self.assertEqual(got.read_metrics(r)["curve"], want.read_metrics(r)["curve"])

    def _damage(self, path):
        with open(path, "ab") as f:
            f.write(b"x")

    def test_damaged_mask_of_a_complete_round(self):
        path = self._copy("mask")
        run = RunDir(path)
        self._damage(run.mask_path(2))
        message = self._refused_without_writing(path)
        self.assertIn(f"{run.mask_path(2)} is damaged", message)
        self.assertIn(f"delete {run.round_dir(2)} and rerun the same command", message)
        self._follow(path, [run.round_dir(2)])

    def test_damaged_weights_and_metrics(self):
        for name in ("weights", "metrics"):
            path = self._copy(name)
            run = RunDir(path)
            target = run.weights_path(1) if name == "weights" else run.metrics_path(1)
            self._damage(target)
            message = self._refused_without_writing(path)
            self.assertIn(f"delete {run.round_dir(1)} and rerun the same command", message)
            self._follow(path, [run.round_dir(1)])

    def test_damaged_theta0_is_rebuilt_from_the_seed(self):
        path = self._copy("theta0")
        run = RunDir(path)
        self._damage(run.theta0_path)
        message = self._refused_without_writing(path)
        self.assertIn(f"delete {run.theta0_path} and rerun the same command", message)
        self._follow(path, [run.theta0_path])
        want = read_arrays(RunDir(self.reference).theta0_path)
        for key, value in read_arrays(run.theta0_path).items():
            self.assertAllEqual(value, want[key])

    def test_damaged_or_deleted_manifest(self):
        path = self._copy("manifest")
        run = RunDir(path)
        with open(os.path.join(run.round_dir(1), storage.MANIFEST), "w") as f:
            f.write("{not json")
        message = self._refused_without_writing(path)
        self.assertIn("MANIFEST.json is damaged", message)
        self.assertIn(f"delete {os.path.join(run.round_dir(1), storage.MANIFEST)} and rerun", message)
        self._follow(path, [os.path.join(run.round_dir(1), storage.MANIFEST)])
        # The top-level manifest deleted: its files are taken as they are.
        os.unlink(os.path.join(path, storage.MANIFEST))
        self._follow(path, [])
        self.assertTrue(storage.is_recorded(run.theta0_path))

    def test_damaged_config_names_a_recovery_that_exists(self):
        path = self._copy("config")
        run = RunDir(path)
        self._damage(run.config_path)
        message = self._refused_without_writing(path)
        self.assertIn("start the run again with another --output_dir", message)

    def test_deleted_round_is_retrained_with_recomputed_masks(self):
        path = self._copy("deleted")
        self._follow(path, [RunDir(path).round_dir(1)])

    def test_finished_rerun_rewrites_nothing(self):
        path = os.path.join(self.get_temp_dir(), "finished")
        def modified():
            # Same bytes would not show a rewrite; a rewrite (temp file renamed) changes
            # the modification time and inode.
            return {name: (os.stat(os.path.join(path, name)).st_mtime_ns,
                           os.stat(os.path.join(path, name)).st_ino) for name in tree_files(path)}

        with mock_tfds():
            _run(path, rounds=2)
            before, stamps = tree_files(path), modified()
            _run(path, rounds=2)
        self.assertEqual(tree_files(path), before)
        self.assertEqual(modified(), stamps)


class UpFrontRefusalTest(tf.test.TestCase):
    def test_fixed_hyperparameter_change_is_refused_even_when_allowed(self):
        path = os.path.join(self.get_temp_dir(), "run")
        with mock_tfds():
            _run(path, rounds=1)
            before = tree_files(path)
            for change in (dict(model="conv2"), dict(seed=5), dict(dataset="fashion_mnist"),
                           dict(validation_size=50)):
                with self.assertRaises(errors.LotteryError) as refusal:
                    _run(path, rounds=2, allow_changed_hyperparameters=True, **change)
                name = next(iter(change))
                self.assertIn(f"{name} cannot change in an existing run", str(refusal.exception))
                self.assertNotIn("(or --allow_changed_hyperparameters", str(refusal.exception))
                self.assertEqual(tree_files(path), before, change)
            # A safe change goes on, recorded.
            _run(path, rounds=2, allow_changed_hyperparameters=True, learning_rate=1e-3)
        history = read_json(RunDir(path).changes_path)
        self.assertEqual(history[0]["changes"], {"learning_rate": [1.2e-3, 1e-3]})
        self.assertEqual(history[0]["from_round"], 1)

    def test_stale_checkpoints_are_dropped_after_a_change(self):
        path = os.path.join(self.get_temp_dir(), "run")
        with mock_tfds():
            with _fault("mid_fit:1"), self.assertRaises(_Killed):
                _run(path, rounds=1)
            checkpoints = RunDir(path).round(0).checkpoint_dir
            self.assertNotEmpty(os.listdir(checkpoints))
            _run(path, rounds=1, allow_changed_hyperparameters=True, learning_rate=1e-3)
            fresh = os.path.join(self.get_temp_dir(), "fresh")
            _run(fresh, rounds=1, learning_rate=1e-3)
        # The round trained again from its start with the new rate, not from the old checkpoint.
        self.assertEqual(RunDir(path).read_metrics(0)["curve"], RunDir(fresh).read_metrics(0)["curve"])
        self.assertFalse(os.path.exists(checkpoints))

    def test_batch_larger_than_the_training_split(self):
        path = os.path.join(self.get_temp_dir(), "run")
        with mock_tfds(), self.assertRaisesRegex(
                errors.LotteryError,
                r"^--batch_size=241 is larger than the 240 training examples of mnist "
                r"\(after --validation_size=60\)"):
            _run(path, batch_size=241)
        self.assertFalse(os.path.exists(path))


class PruningStoppedNoticeTest(tf.test.TestCase):
    def test_notice_when_a_layer_stops_losing_weights(self):
        path = os.path.join(self.get_temp_dir(), "run")
        lines = []
        with mock_tfds():
            # Output layer: 100x10 weights at 0.04 % a round: round-half-up(0.0004 x 1000) = 0.
            # The fc layers have rate 0: not pruning them is no notice.
            runner.run(_config(path, rounds=2, fc_rate=0.0, output_rate=0.0004), progress=lines.append,
                       dataset=_dataset())
        notices = [line for line in lines if "pruning has stopped" in line]
        self.assertEqual(notices, ["round 0: pruning has stopped for output: the rate times their "
                                   "surviving weights rounds to 0 weights (round-half-up); later "
                                   "rounds train the same mask there"])
        self.assertTrue(np.all(read_arrays(RunDir(path).mask_path(1))["output"] == 1))
