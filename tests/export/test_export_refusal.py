"""Refusals, atomic writes and bad input: one line, exit status 2, nothing written."""

import json
import os
import subprocess
import sys
import tempfile
from unittest import mock

import numpy as np
import tensorflow as tf
import tf_keras as keras

from export.helpers import (EXPORT_IN_A_PROCESS, REPO, LENET_SHAPE, lenet_run, run_export,
                            tree_files, write_run)
from lottery_tf.export import compaction, serving
from lottery_tf.nn import models
from lottery_tf.nn.layers import MaskedDense, masked_layers


def _ln_model(name, input_shape, num_classes, seed):
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    x = MaskedDense(32, activation="relu", name="fc1")(x)
    x = keras.layers.LayerNormalization(name="fc1_ln")(x)
    logits = MaskedDense(num_classes, pruning_group="output", name="output")(x)
    return keras.Model(inputs, logits, name=name)


class RefusalTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.run_dir = os.path.join(self.get_temp_dir(), "run")
        lenet_run(self.run_dir)
        self.parent = os.path.join(self.get_temp_dir(), "exports")

    def _refused(self, args, message):
        status, out, err = run_export([f"--run={self.run_dir}", "--probe=random",
                                       "--probe_size=32"] + list(args))
        self.assertEqual(status, 2, (args, out, err))
        self.assertEqual(err.count("\n"), 1, err)
        self.assertStartsWith(err, "lottery-tf: error: ")
        self.assertIn(message, err)
        self.assertEqual(out, "")
        return err

    def test_mismatching_compact_model_is_refused_with_the_figures(self):
        real_compact = compaction.compact

        def off_by_a_little(network, **kwargs):
            compact, reports = real_compact(network, **kwargs)
            compact.layers[-1].bias = compact.layers[-1].bias + np.float32(1e-3)
            return compact, reports

        out = os.path.join(self.parent, "deep", "bad")
        with mock.patch.object(compaction, "compact", off_by_a_little):
            err = self._refused(["--round=1", f"--output={out}"], "disagrees with the masked model")
        self.assertRegex(err, r"max \|logit difference\| 0\.001\d*, relative to max\(1, its "
                              r"example's largest \|logit\|\) [0-9.e-]+ \(limit 1e-05\)")
        self.assertIn("nothing written", err)
        self.assertFalse(os.path.exists(self.parent))  # not even the parents it created

    def test_a_failure_while_writing_leaves_nothing(self):
        real_save = serving.save_saved_model

        def save_then_fail(module_and_serve, path):
            real_save(module_and_serve, path)  # a complete SavedModel in the temp dir...
            raise OSError(28, "No space left on device")  # ...then the disk fills

        os.makedirs(self.parent)
        out = os.path.join(self.parent, "e")
        with mock.patch.object(serving, "save_saved_model", save_then_fail):
            self._refused(["--round=1", f"--output={out}"], "No space left on device")
        self.assertEqual(os.listdir(self.parent), [])

    def test_existing_export_needs_overwrite_and_is_replaced_whole(self):
        out = os.path.join(self.parent, "e")
        status, _, err = run_export([f"--run={self.run_dir}", "--round=0", f"--output={out}",
                                     "--probe=random", "--probe_size=16"])
        self.assertEqual(status, 0, err)
        before = tree_files(out)
        self._refused(["--round=1", f"--output={out}"], "exists; pass --overwrite")
        self.assertEqual(tree_files(out), before)
        status, _, err = run_export([f"--run={self.run_dir}", "--round=1", f"--output={out}",
                                     "--probe=random", "--probe_size=16", "--overwrite"])
        self.assertEqual(status, 0, err)
        with open(os.path.join(out, "assets", "ticket.json")) as f:
            self.assertEqual(json.load(f)["source"]["round"], 1)
        self.assertEqual(os.listdir(self.parent), ["e"])  # no temp or set-aside directory
        # --overwrite never replaces something that is not an export.
        photos = os.path.join(self.parent, "photos")
        os.makedirs(photos)
        with open(os.path.join(photos, "cat.jpg"), "w") as f:
            f.write("meow")
        self._refused(["--round=1", f"--output={photos}", "--overwrite"],
                      "is not a lottery-tf export")
        self.assertEqual(os.listdir(photos), ["cat.jpg"])

    def test_bad_inputs_are_one_line_and_write_nothing(self):
        out = os.path.join(self.parent, "never")
        missing_masks = os.path.join(self.get_temp_dir(), "no_masks")
        lenet_run(missing_masks)
        os.unlink(os.path.join(missing_masks, "round_001", "mask.npz"))
        incomplete = os.path.join(self.get_temp_dir(), "incomplete")
        lenet_run(incomplete)
        os.unlink(os.path.join(incomplete, "round_001", "metrics.json"))
        damaged = os.path.join(self.get_temp_dir(), "damaged")
        lenet_run(damaged)
        with open(os.path.join(damaged, "round_001", "weights.npz"), "r+b") as f:
            f.truncate(1000)  # what a crash or a full disk may leave
        not_a_run = os.path.join(self.get_temp_dir(), "not_a_run")
        os.makedirs(not_a_run)
        cases = [
            ([f"--run={self.run_dir}x"], "does not exist"),
            ([f"--run={not_a_run}"], "not a lottery-tf run directory (no config.json)"),
            (["--round=9"], "round 9 of"),
            (["--round=9"], "complete rounds: 0, 1"),
            (["--round=-1"], "--round=-1 must not be negative"),
            (["--round=first"], "--round=first is neither a round number, 'best' nor 'last'"),
            ([f"--run={missing_masks}", "--round=1"], "round 1 of"),
            ([f"--run={missing_masks}", "--round=1"], "has no masks"),
            ([f"--run={incomplete}", "--round=1"], "does not exist or is not complete"),
            ([f"--run={damaged}", "--round=1"], "weights.npz"),
            (["--format=onnx"], "--format=onnx is not one of saved_model, tflite"),
            (["--quantize"], "--quantize applies to --format=tflite only"),
            (["--probe=mnist"], "--probe=mnist is not one of auto, dataset, random"),
            (["--best_tolerance=-1"], "--best_tolerance=-1.0 must not be negative"),
            (["--format=tflite", "--quantize", "--quantized_min_agreement=1.5"],
             "--quantized_min_agreement=1.5 is outside [0, 1]"),
            (["stray"], "unexpected arguments: stray"),
        ]
        for args, message in cases:
            self._refused(args + [f"--output={out}"], message)
            self.assertFalse(os.path.exists(self.parent), args)
        os.makedirs(out)
        self._refused([f"--output={out}"], "exists; pass --overwrite")
        self.assertEqual(os.listdir(out), [])

    def test_unsupported_layer_is_named(self):
        run_dir = os.path.join(self.get_temp_dir(), "ln_run")
        real_build = models.build

        def build(name, *args):
            return _ln_model(name, *args) if name == "ln_net" else real_build(name, *args)

        with mock.patch.object(models, "build", build):
            model = build("ln_net", LENET_SHAPE, 10, 0)
            masks = {layer.name: np.ones(layer.kernel.shape, np.float32)
                     for layer in masked_layers(model)}
            weights = {v.name.split(":")[0]: v.numpy() for v in model.weights
                       if not v.name.split(":")[0].endswith("/mask")}
            write_run(run_dir, "ln_net", rounds={0: (masks, weights)})
            status, out, err = run_export([f"--run={run_dir}", "--round=0",
                                           f"--output={os.path.join(self.parent, 'ln')}"])
        self.assertEqual(status, 2, err)
        self.assertEqual(err.count("\n"), 1, err)
        self.assertIn("layer 'fc1_ln' (LayerNormalization) is not supported by export", err)
        self.assertFalse(os.path.exists(self.parent))

    def test_default_output_and_best_round(self):
        cwd = os.getcwd()
        os.chdir(tempfile.mkdtemp(dir=self.get_temp_dir()))
        try:
            # Round 1 loses 0.1 points of validation accuracy: within 0.5, and sparser.
            status, out, err = run_export([f"--run={self.run_dir}", "--probe=random",
                                           "--probe_size=16"])
            self.assertEqual(status, 0, err)
            self.assertEqual(os.listdir("saved_models"), ["run_round_001"])
            self.assertIn("round 1 of", out)
            self.assertIn("best: sparsest complete round", out)
            status, out, err = run_export([f"--run={self.run_dir}", "--probe=random",
                                           "--probe_size=16", "--best_tolerance=0.05"])
            self.assertEqual(status, 0, err)
            self.assertEqual(sorted(os.listdir("saved_models")),
                             ["run_round_000", "run_round_001"])
        finally:
            os.chdir(cwd)

    def test_subcommand_in_a_real_process(self):
        env = dict(os.environ, PYTHONPATH=REPO)
        env.pop("TF_CPP_MIN_LOG_LEVEL", None)
        tmp = tempfile.mkdtemp(dir=self.get_temp_dir())
        result = subprocess.run(
            [sys.executable, "-c", EXPORT_IN_A_PROCESS, "--run=nowhere", "--round=3"],
            capture_output=True, text=True, cwd=tmp, env=env, timeout=120)
        self.assertEqual(result.returncode, 2)
        self.assertEqual(result.stderr,
                         "lottery-tf: error: --run nowhere does not exist or is not a directory\n")
        self.assertEqual(os.listdir(tmp), [])
