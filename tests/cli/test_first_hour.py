"""A newcomer's first hour: help, Ctrl-C, and the messages of common mistakes."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from unittest import mock

import tensorflow as tf

from conftest import mock_tfds, real_mnist_manual_dir, run_cli, tiny_flags, tree_files
from lottery_tf.lottery.run_dir import RunDir

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(TESTS)


@contextlib.contextmanager
def _cwd(path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


class HelpTest(tf.test.TestCase):
    def test_help_lists_commands_and_flags_and_exits_0(self):
        for flag in ("--help", "-h"):
            status, out, err = run_cli([flag])
            self.assertEqual((status, err), (0, ""), flag)
            self.assertStartsWith(out, "usage: lottery-tf [COMMAND] [--flag=value ...]")
            for command in ("train", "branch", "export", "report"):
                self.assertRegex(out, rf"\n  {command} +\S", command)
            self.assertIn("--model: Model: conv2, conv4, conv6, lenet_300_100, resnet20, vgg19", out)
            self.assertIn("--criterion:", out)
            self.assertIn("--helpfull", out)

    def test_a_commands_help_shows_its_own_flags(self):
        status, out, _ = run_cli(["export", "--help"])
        self.assertEqual(status, 0)
        self.assertStartsWith(out, "usage: lottery-tf export [--flag=value ...]")
        self.assertIn("--round:", out)
        self.assertIn("--check_input_range:", out)
        self.assertNotIn("--model:", out)
        for command, flag in (("branch", "--branch:"), ("report", "--report_dir:")):
            status, out, _ = run_cli([command, "-h"])
            self.assertEqual(status, 0)
            self.assertIn(flag, out)

    def test_helpfull_has_the_whole_help(self):
        _, short, _ = run_cli(["--help"])
        status, full, _ = run_cli(["--helpfull"])
        self.assertEqual(status, 0)
        # The short help keeps the first sentence; the full help all of it.
        self.assertNotIn("Not for model, dataset, validation_size", short)
        self.assertIn("Not for model, dataset, validation_size, one_shot_sparsity, rewind_iteration, "
                      "seed, which the run's weights", full)


class CtrlCTest(tf.test.TestCase):
    def test_interrupt_is_one_line_exit_130_and_resumes(self):
        out_dir = os.path.join(self.get_temp_dir(), "run")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS, REPO]))
        env.pop("LOTTERY_TF_FAULT", None)
        command = [sys.executable, os.path.join(TESTS, "mock_cli.py"),
                   *tiny_flags(iterations=4000, eval_every=1000, checkpoint_every=0,
                               steps_per_execution=1), "--rounds=1", f"--output_dir={out_dir}"]
        child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        try:
            deadline = time.monotonic() + 120
            while not os.path.exists(RunDir(out_dir).mask_path(0)):
                self.assertIsNone(child.poll(), "the run ended before it could be interrupted")
                self.assertLess(time.monotonic(), deadline, "the run never started its round")
                time.sleep(0.1)
            time.sleep(2.0)  # inside model.fit
            child.send_signal(signal.SIGINT)
            out, err = child.communicate(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate()
        self.assertEqual(child.returncode, 130, err)
        # mock_cli.py imports TensorFlow unmuted (for the mock data) before the CLI starts:
        # what the CLI itself printed is the last line, and there is no traceback.
        self.assertNotIn("Traceback", err)
        self.assertRegex(err.splitlines()[-1], r"^lottery-tf: interrupted at round 0, iteration "
                                               r"\d+; rerun the same command to resume$")
        self.assertFalse(RunDir(out_dir).round_complete(0))
        rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        self.assertEqual(rerun.returncode, 0, rerun.stderr)
        self.assertTrue(RunDir(out_dir).round_complete(0))


class MistakesTest(tf.test.TestCase):
    """Each mistake: one line naming what is wrong and what to do, exit 2, nothing written."""

    def _refused(self, args, message, cwd=None):
        with mock_tfds(), _cwd(cwd or self.get_temp_dir()):
            before = tree_files(".")
            status, out, err = run_cli(args)
            after = tree_files(".")
        self.assertEqual(status, 2, err)
        self.assertEqual(err, f"lottery-tf: error: {message}\n")
        self.assertEqual(after, before)
        return out

    def test_misspelled_command(self):
        self._refused(["tarin", "--rounds=2"],
                      "unknown command 'tarin'; commands: train, branch, export, report "
                      "(`lottery-tf --help` lists them)")

    def test_report_without_runs_or_onto_an_unwritable_directory(self):
        self._refused(["report"], "--runs is required: run directories, or parents of their trial_* "
                                  "directories (e.g. --runs=runs/quickstart)")
        run = os.path.join(self.get_temp_dir(), "run")
        with mock_tfds():
            self.assertEqual(run_cli([*tiny_flags(iterations=20), f"--output_dir={run}"])[0], 0)
        self._refused(["report", f"--runs={run}", "--report_dir=/proc/lottery_tf_test/report"],
                      "--report_dir /proc/lottery_tf_test/report cannot be written (No such file or "
                      "directory); choose a directory you can write")

    def test_branch_before_round_0_is_complete(self):
        run = os.path.join(self.get_temp_dir(), "run")
        with mock_tfds(), mock.patch("lottery_tf.lottery.runner._rounds", return_value=[]):
            # A run directory whose round 0 has not finished yet (training in another terminal).
            self.assertEqual(run_cli([*tiny_flags(iterations=20), f"--output_dir={run}"])[0], 0)
        self._refused(["branch", f"--run_dir={run}", "--branch=random_reinit"],
                      f"run {run} has no pruned round to branch from yet (its round 0 is not "
                      "complete): let the training finish round 0, then rerun this command")

    def test_infinite_learning_rate(self):
        self._refused([*tiny_flags(iterations=20), "--learning_rate=inf", "--output_dir=run"],
                      "--learning_rate=inf must be finite and positive")

    def test_output_dir_that_cannot_be_created(self):
        self._refused([*tiny_flags(iterations=20), "--output_dir=/proc/lottery_tf_test/run"],
                      "--output_dir /proc/lottery_tf_test/run cannot be created (No such file or "
                      "directory); choose a directory you can write")

    def test_nested_flagfile_from_another_directory(self):
        quickstart = os.path.join(REPO, "flags", "quickstart.flags")
        self._refused([f"--flagfile={quickstart}"],
                      f"flagfile flags/lenet300_mnist.flags, included by {quickstart}, does not exist "
                      f"here ({os.path.realpath(self.get_temp_dir())}): flagfiles it includes are read "
                      "relative to the current directory; run from the directory they are relative "
                      "to (for the shipped flags/*.flags, the repository root)")

    def test_changing_the_model_of_a_run_is_refused_up_front(self):
        with _cwd(self.get_temp_dir()), mock_tfds():
            status, _, err = run_cli([*tiny_flags(iterations=20), "--output_dir=run"])
            self.assertEqual(status, 0, err)
        message = self._refused(
            [*tiny_flags(iterations=20), "--output_dir=run", "--model=conv2", "--rounds=2",
             "--allow_changed_hyperparameters"],
            "run directory run was made with other hyperparameters: model='lenet_300_100' (now "
            "'conv2'); model cannot change in an existing run (its weights, masks and data depend "
            "on them, even with --allow_changed_hyperparameters): use another --output_dir")
        self.assertEqual(message, "")
        self.assertFalse(os.path.exists(os.path.join(self.get_temp_dir(), "run",
                                                     "hyperparameter_changes.json")))

    def test_tilde_is_the_home_directory(self):
        home = os.path.join(self.get_temp_dir(), "home")
        os.makedirs(home)
        with _cwd(self.get_temp_dir()), mock_tfds(), mock.patch.dict(os.environ, {"HOME": home}):
            status, _, err = run_cli([*tiny_flags(iterations=20), "--output_dir=~/runs/x"])
        self.assertEqual(status, 0, err)
        self.assertTrue(RunDir(os.path.join(home, "runs", "x")).round_complete(0))
        self.assertFalse(os.path.exists(os.path.join(self.get_temp_dir(), "~")))

    def test_manual_dir_with_recompressed_files(self):
        originals = real_mnist_manual_dir()
        import gzip

        manual = os.path.join(self.get_temp_dir(), "manual")
        os.makedirs(manual)
        for name in os.listdir(originals):
            shutil.copy(os.path.join(originals, name), manual)
        # The same bytes recompressed: a different archive.
        small = os.path.join(manual, "t10k-labels-idx1-ubyte.gz")
        with gzip.open(os.path.join(originals, "t10k-labels-idx1-ubyte.gz")) as f:
            data = f.read()
        with gzip.open(small, "wb", compresslevel=1) as f:
            f.write(data)
        data_dir = os.path.join(self.get_temp_dir(), "tfds")
        status, out, err = run_cli([f"--manual_dir={manual}", f"--data_dir={data_dir}",
                                    f"--output_dir={os.path.join(self.get_temp_dir(), 'run')}"])
        self.assertEqual(status, 2)
        self.assertEqual(out, "")
        self.assertRegex(err, rf"^lottery-tf: error: {small} is not the file TFDS registered for "
                              r"dataset 'mnist': SHA-256 [0-9a-f]{64} \([^)]+\), expected [0-9a-f]{64} "
                              r"\([^)]+\); put the original, unmodified download in --manual_dir=")
        self.assertEqual(len(err.splitlines()), 1)
        self.assertFalse(os.path.exists(data_dir))
        self.assertFalse(os.path.exists(os.path.join(self.get_temp_dir(), "run")))
