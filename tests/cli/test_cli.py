"""The `lottery-tf` command line: flagfiles end to end, and every bad input.

Bad inputs are checked in-process (fast) for message, exit status and that
nothing is written; a few run as real subprocesses too, to see exactly what a
user sees: one line on stderr, exit status 2, no traceback.
"""

import contextlib
import io
import os
import subprocess
import sys
from unittest import mock

import tensorflow as tf
import tensorflow_datasets as tfds
from absl import flags

from conftest import TINY_FLAGS, mock_tfds, run_cli
from lottery_tf.cli import config_flags
from lottery_tf.lottery.run_dir import RunDir
from lottery_tf.lottery.storage import read_json

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The tiny configuration, 20 iterations a round.
ARGS = TINY_FLAGS + ["--iterations=20"]
STRATEGY_DEPRECATED = "lottery-tf: warning: --strategy is deprecated; use --distribution_strategy"


def _tree(path):
    found = []
    for root, dirs, files in os.walk(path):
        found += [os.path.join(root, f) for f in files]
    return sorted(found)


def _parse_flags(*args):
    """The training flags `args` parse to, on a fresh FlagValues (nothing runs)."""
    fv = flags.FlagValues()
    config_flags.define(fv)
    fv(["lottery-tf", *args])
    return fv


def _flagfile_config(name):
    """The validated Config a shipped flagfile parses to."""
    fv = _parse_flags(f"--flagfile={os.path.join(REPO, 'flags', name)}")
    return config_flags.config_from_flags(fv).validate().check_choices()


class CliEndToEndTest(tf.test.TestCase):
    def test_flagfile_run_prints_rounds_and_resumes(self):
        out_dir = os.path.join(self.get_temp_dir(), "run")
        flagfile = os.path.join(self.get_temp_dir(), "tiny.flags")
        with open(flagfile, "w") as f:
            f.write("# a tiny experiment\n--model=lenet_300_100\n--rounds=3\n")
            f.write("\n".join(ARGS) + f"\n--output_dir={out_dir}\n")
        with mock_tfds():
            status, out, err = run_cli([f"--flagfile={flagfile}"])
            self.assertEqual(status, 0, err)
            lines = out.splitlines()
            self.assertLen(lines, 3)
            self.assertStartsWith(lines[0], "round 0 (1/3) | 100.00% weights remaining")
            self.assertStartsWith(lines[1], "round 1 (2/3) | 80.04% weights remaining")
            self.assertStartsWith(lines[2], "round 2 (3/3) | 64.06% weights remaining")
            saved = read_json(RunDir(out_dir).config_path)
            self.assertEqual(saved["rounds"], 3)
            self.assertEqual(saved["learning_rate"], 1.2e-3)
            # Extending the run trains only the new round.
            status, out, err = run_cli([f"--flagfile={flagfile}", "--rounds=4"])
        self.assertEqual(status, 0, err)
        self.assertLen(out.splitlines(), 4)
        self.assertEqual(
            out.splitlines()[:3], [line.replace("/3)", "/4)") + " [saved]" for line in lines]
        )
        self.assertStartsWith(out.splitlines()[3], "round 3 (4/4) | 51.")

    def test_shipped_flagfiles_parse_to_valid_configs(self):
        expected = {
            "lenet300_mnist.flags": dict(model="lenet_300_100", learning_rate=1.2e-3, iterations=50000,
                                         fc_rate=0.2, output_rate=0.1, batch_size=60),
            "conv2_cifar10.flags": dict(model="conv2", learning_rate=2e-4, iterations=20000, conv_rate=0.1),
            "conv4_cifar10.flags": dict(model="conv4", learning_rate=3e-4, iterations=25000, conv_rate=0.1),
            "conv6_cifar10.flags": dict(model="conv6", learning_rate=3e-4, iterations=30000, conv_rate=0.15),
        }
        for name, values in expected.items():
            config = _flagfile_config(name)
            for key, value in values.items():
                self.assertEqual(getattr(config, key), value, (name, key))
            self.assertEqual(config.batch_size, 60, name)
            self.assertEqual(config.optimizer, "adam", name)
        deeper = {
            "vgg19_cifar10.flags": dict(model="vgg19", optimizer="sgd", learning_rate=0.1, batch_size=64,
                                        iterations=112480, warmup_iterations=10000, lr_drops="56240,84360"),
            "resnet20_cifar10.flags": dict(model="resnet20", optimizer="sgd", learning_rate=0.03,
                                           batch_size=128, iterations=30000, warmup_iterations=20000,
                                           lr_drops="20000,25000"),
        }
        for name, values in deeper.items():
            config = _flagfile_config(name)
            for key, value in dict(values, momentum=0.9, weight_decay=1e-4, pruning_scope="global",
                                   global_rate=0.2, global_exclude="output").items():
                self.assertEqual(getattr(config, key), value, (name, key))
        quick = _flagfile_config("quickstart.flags")
        self.assertEqual((quick.model, quick.dataset), ("lenet_300_100", "mnist"))
        self.assertGreaterEqual(quick.rounds, 4)


BAD_INPUTS = [
    (["--model=lenet5"], "unknown model 'lenet5'; known: conv2, conv4, conv6, lenet_300_100, resnet20, vgg19"),
    (["--dataset=not_a_dataset"], "unknown dataset 'not_a_dataset'"),
    (["--optimizer=adagrad"], "unknown optimizer 'adagrad'; known: adam, sgd"),
    (["--distribution_strategy=parameter_server"], "unknown strategy 'parameter_server'"),
    (["--pruning_scope=random"], "unknown pruning scope 'random'; known: global, layerwise"),
    (["--global_rate=1"], "--global_rate=1.0 is outside [0, 1)"),
    (["--rewind_iteration=-1"], "--rewind_iteration=-1 must not be negative"),
    (["--rewind_iteration=20"], "--rewind_iteration=20 must be below --iterations=20"),
    (["--lr_drops=300,200"], "--lr_drops=300,200 must be increasing positive iterations"),
    (["--weight_decay=-1"], "--weight_decay=-1.0 must not be negative"),
    (["--trials=0"], "--trials=0 must be at least 1"),
    (["--trials=2", "--trial_index=2"], "--trial_index=2 is outside [0, --trials=2)"),
    (["--fc_rate=1.0"], "--fc_rate=1.0 is outside [0, 1)"),
    (["--conv_rate=-0.1"], "--conv_rate=-0.1 is outside [0, 1)"),
    (["--output_rate=1.5"], "--output_rate=1.5 is outside [0, 1)"),
    (["--rounds=0"], "--rounds=0 must be at least 1"),
    (["--batch_size=0"], "--batch_size=0 must be positive"),
    (["--iterations=-5"], "give exactly one positive training length"),
    (["--iterations=0", "--epochs=0"], "give exactly one positive training length"),
    (["--eval_every=0"], "--eval_every=0 must be positive"),
    (["--learning_rate=0"], "--learning_rate=0.0 must be finite and positive"),
    (["--one_shot_sparsity=1.0"], "--one_shot_sparsity=1.0 is outside (0, 1)"),
    (["--one_shot_sparsity=-0.5"], "--one_shot_sparsity=-0.5 is outside (0, 1)"),
    (["--one_shot_sparsity=0.5", "--rounds=5"], "--one_shot_sparsity runs exactly 2 rounds"),
    (["stray_argument"], "unexpected arguments: stray_argument"),
]


class BadInputTest(tf.test.TestCase):
    def _assert_refused(self, args, message, out_dir):
        with mock_tfds():
            status, out, err = run_cli(ARGS + args + [f"--output_dir={out_dir}"])
        self.assertEqual(status, 2, (args, err))
        self.assertEqual(err.count("\n"), 1, err)
        self.assertStartsWith(err, "lottery-tf: error: ")
        self.assertIn(message, err)
        self.assertEqual(out, "")
        return err

    def test_each_bad_flag_is_one_line_exit_2_and_writes_nothing(self):
        for args, message in BAD_INPUTS:
            out_dir = os.path.join(self.get_temp_dir(), "never")
            self._assert_refused(args, message, out_dir)
            self.assertFalse(os.path.exists(out_dir), args)

    def test_output_dir_that_is_a_file(self):
        path = os.path.join(self.get_temp_dir(), "a_file")
        with open(path, "w") as f:
            f.write("keep me")
        self._assert_refused([], "exists and is not a directory", path)
        with open(path) as f:
            self.assertEqual(f.read(), "keep me")

    def test_output_dir_that_is_not_writable(self):
        parent = os.path.join(self.get_temp_dir(), "a_file2")
        with open(parent, "w") as f:
            f.write("x")
        # Below a regular file nothing can be created, even by root.
        self._assert_refused([], "is not writable", os.path.join(parent, "run"))
        with mock.patch("os.access", return_value=False):
            self._assert_refused([], "is not writable", os.path.join(self.get_temp_dir(), "ro", "run"))
        self.assertFalse(os.path.exists(os.path.join(self.get_temp_dir(), "ro")))

    def test_non_empty_directory_that_is_no_run(self):
        path = os.path.join(self.get_temp_dir(), "photos")
        os.makedirs(path)
        with open(os.path.join(path, "cat.jpg"), "w") as f:
            f.write("meow")
        self._assert_refused([], "holds no lottery-tf run", path)
        self.assertEqual(os.listdir(path), ["cat.jpg"])

    def test_run_dir_with_other_hyperparameters(self):
        out_dir = os.path.join(self.get_temp_dir(), "run")
        with mock_tfds():
            status, _, err = run_cli(ARGS + [f"--output_dir={out_dir}"])
        self.assertEqual(status, 0, err)
        before = {p: open(p, "rb").read() for p in _tree(out_dir)}
        err = self._assert_refused(["--seed=1", "--batch_size=8"], "other hyperparameters", out_dir)
        self.assertIn("seed=0 (now 1)", err)
        self.assertEqual({p: open(p, "rb").read() for p in _tree(out_dir)}, before)

    def test_missing_offline_dataset_fails_fast_naming_the_flags(self):
        data_dir = os.path.join(self.get_temp_dir(), "empty_tfds")
        out_dir = os.path.join(self.get_temp_dir(), "run")
        # Offline, whatever network this machine has. Fast by construction, not
        # by the clock: one short probe of the download host, and TFDS's download
        # (ten retries with backoff per URL offline) never reached.
        probe = mock.Mock(side_effect=OSError("offline"))
        with mock.patch("socket.create_connection", probe), mock.patch.object(
                tfds.core.DatasetBuilder, "download_and_prepare") as download:
            status, out, err = run_cli([f"--data_dir={data_dir}", f"--output_dir={out_dir}"])
        download.assert_not_called()
        self.assertEqual(probe.call_count, 1, probe.call_args_list)
        self.assertEqual(probe.call_args.args[0], ("storage.googleapis.com", 443))
        self.assertLessEqual(probe.call_args.kwargs["timeout"], 5)
        self.assertEqual(status, 2, err)
        self.assertEqual(err.count("\n"), 1, err)
        self.assertIn("--data_dir", err)
        self.assertIn("--manual_dir", err)
        self.assertFalse(os.path.exists(out_dir))


class DeprecatedFlagTest(tf.test.TestCase):
    def test_old_strategy_flag_still_sets_the_strategy_with_a_one_line_notice(self):
        fv = _parse_flags("--strategy=mirrored")
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            config = config_flags.config_from_flags(fv)
        self.assertEqual(config.distribution_strategy, "mirrored")
        self.assertEqual(err.getvalue(), STRATEGY_DEPRECATED + "\n")
        # The new name wins when both are given.
        fv = _parse_flags("--strategy=mirrored", "--distribution_strategy=default")
        with contextlib.redirect_stderr(io.StringIO()):
            self.assertEqual(config_flags.config_from_flags(fv).distribution_strategy, "default")

    def test_bad_value_under_the_old_name_is_the_notice_then_one_error_line(self):
        out_dir = os.path.join(self.get_temp_dir(), "never")
        with mock_tfds():
            status, out, err = run_cli(ARGS + ["--strategy=parameter_server", f"--output_dir={out_dir}"])
        self.assertEqual(status, 2, err)
        lines = err.splitlines()
        self.assertEqual(err.count("\n"), 2, err)
        self.assertEqual(lines[0], STRATEGY_DEPRECATED)
        self.assertStartsWith(lines[1], "lottery-tf: error: ")
        self.assertIn("unknown strategy 'parameter_server'", lines[1])
        self.assertEqual(out, "")
        self.assertFalse(os.path.exists(out_dir))


class SubprocessTest(tf.test.TestCase):
    """What a user's terminal shows: one line, exit status 2, no traceback."""

    def _run(self, *args):
        env = dict(os.environ, PYTHONPATH=REPO)
        env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the CLI's own default applies
        return subprocess.run(
            [sys.executable, "-m", "lottery_tf", *args],
            capture_output=True, text=True, cwd=self.get_temp_dir(), env=env, timeout=120,
        )

    def test_bad_flag_before_tensorflow_starts(self):
        result = self._run("--fc_rate=2")
        self.assertEqual(result.returncode, 2)
        self.assertEqual(result.stderr, "lottery-tf: error: --fc_rate=2.0 is outside [0, 1)\n")

    def test_flag_and_flagfile_errors_are_one_line_too(self):
        cases = [
            (["--rounds=abc"], "lottery-tf: error: flag --rounds=abc: invalid literal for int() with base 10: 'abc'\n"),
            (["--no_such_flag=1"], "lottery-tf: error: Unknown command line flag 'no_such_flag'\n"),
            (["--flagfile=missing.flags"],
             "lottery-tf: error: Unable to open flagfile: [Errno 2] No such file or directory: 'missing.flags'\n"),
            (["branch", "--branch=random_reinit"], "lottery-tf: error: --run_dir and --branch are required\n"),
            (["report", "--runs=nowhere"], "lottery-tf: error: --runs nowhere holds no lottery-tf run\n"),
            (["export", "--model=conv2"],
             "lottery-tf: error: --model is a training flag; `lottery-tf export` does not take it\n"),
        ]
        for args, stderr in cases:
            result = self._run(*args)
            self.assertEqual((result.returncode, result.stderr), (2, stderr), args)

    def test_unknown_model_after_tensorflow_starts(self):
        result = self._run("--model=resnet9000")
        self.assertEqual(result.returncode, 2)
        self.assertEqual(
            result.stderr,
            "lottery-tf: error: unknown model 'resnet9000'; known: conv2, conv4, conv6, lenet_300_100, resnet20, vgg19\n",
        )
        self.assertEqual(os.listdir(self.get_temp_dir()), [])
