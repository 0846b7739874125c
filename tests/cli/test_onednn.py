"""lottery-tf's commands start TensorFlow with oneDNN on (x86-64), unless the user says otherwise."""

import os
import platform
import subprocess
import sys
import unittest
from unittest import mock

import tensorflow as tf

from lottery_tf.nn import models
from lottery_tf.train import xla

# What a program's start-up leaves: the variable, and whether TensorFlow then runs on oneDNN.
PROBE = ("import os\n{before}import {entry}\nfrom lottery_tf import onednn\n"
         "import tensorflow\nprint(os.environ.get('TF_ENABLE_ONEDNN_OPTS'), onednn.enabled())\n")
# The modules behind `lottery-tf` / `python -m lottery_tf` and the benchmarks' `python -m`.
ENTRIES = ("lottery_tf.cli.main", "lottery_tf.bench.train_bench", "lottery_tf.bench.export_bench",
           "lottery_tf.bench.runtime_bench", "lottery_tf.export_benchmark")


def start(before="", entry="lottery_tf.cli.main", **variables):
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env.update(variables)
    done = subprocess.run([sys.executable, "-c", PROBE.format(before=before, entry=entry)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


@unittest.skipUnless(platform.machine().lower() in ("x86_64", "amd64"), "oneDNN default is x86-64 only")
class OneDnnStartTest(unittest.TestCase):
    def test_on_by_default_for_every_program(self):
        # Any of them importing TensorFlow before cli.app would leave oneDNN off.
        for entry in ENTRIES:
            self.assertEqual(start(entry=entry), ["1", "True"], entry)

    def test_the_users_choice_wins(self):
        self.assertEqual(start(TF_ENABLE_ONEDNN_OPTS="0"), ["0", "False"])

    def test_left_alone_once_tensorflow_runs(self):
        # Too late to change the kernels: the variable would then misreport them.
        self.assertEqual(start(before="import tensorflow\n")[0], "None")


class OneDnnXlaTest(tf.test.TestCase):
    def test_conv_nets_run_without_xla_on_onednn(self):
        # Residual nets train, and conv nets evaluate, without XLA on oneDNN (XLA does not use it);
        # LeNet is compiled whole either way.
        strategy = tf.distribute.get_strategy()
        resnet = models.build("resnet20", (32, 32, 3), 10, 0)
        conv2 = models.build("conv2", (28, 28, 1), 10, 0)
        lenet = models.build("lenet_300_100", (28, 28, 1), 10, 0)
        for on in (True, False):
            with mock.patch.object(xla.onednn, "enabled", return_value=on), \
                    mock.patch.object(xla.tf.config, "list_logical_devices", return_value=[]):
                self.assertEqual(xla.device_type(), "cpu_onednn" if on else "cpu")
                self.assertEqual(xla.for_training(None, resnet, strategy, deterministic=True), not on)
                self.assertTrue(xla.for_training(None, lenet, strategy, deterministic=True))
                for model in (resnet, conv2):
                    self.assertEqual(xla.for_evaluation(None, model, strategy), not on, model.name)
                self.assertTrue(xla.for_evaluation(None, lenet, strategy))


class OneDnnUnknownTest(unittest.TestCase):
    def test_a_tensorflow_without_the_private_probe_still_runs(self):
        from lottery_tf import environment, onednn

        # A module of that name without IsMklEnabled, as a later TensorFlow might have.
        with mock.patch("tensorflow.python.util._pywrap_util_port", new=object()), \
                mock.patch.object(xla.tf.config, "list_logical_devices", return_value=[]):
            self.assertIsNone(onednn.enabled())
            self.assertIsNone(environment.describe()["onednn"])
            self.assertEqual(xla.device_type(), "cpu")
