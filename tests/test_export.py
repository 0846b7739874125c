"""`lottery-tf export`: compaction exactness, verification, atomic writes, serving.

Run directories are written by hand (models.build, masks and weights chosen
here, run_dir's writers), so each ticket has exactly the dead inputs, dead
units and dead filters a test needs, and no test trains. The fresh-process
serving test loads an export with `tf.saved_model.load` only, in a new Python
process that never imports lottery_tf.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from unittest import mock

import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl import flags

from conftest import mock_tfds, run_absl_main
from lottery_tf import errors
from lottery_tf.export import compaction
from lottery_tf.export import export
from lottery_tf.nn import models
from lottery_tf.nn.layers import MaskedDense, masked_layers
from lottery_tf.lottery.run_dir import write_arrays, write_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
LENET_SHAPE = (28, 28, 1)


# --- helpers --------------------------------------------------------------------------


def run_export(args):
    """Runs `lottery-tf export` in-process; returns (exit status, stdout, stderr)."""
    return run_absl_main(export.main, "lottery-tf export", args)


def _tree(path):
    """{relative path: bytes} of every file under `path` (empty if missing)."""
    found = {}
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                found[os.path.relpath(full, path)] = f.read()
    return found


def _lenet_masks(seed, sparse):
    """LeNet-300-100 masks. Sparse ones hold every kind of dead structure:

    fc1: pixels 0-99 dead (zero rows), units 0-9 without incoming weights;
    fc2: rows 10-14 zero (fc1 units 10-14 unread), units 0-2 reading only
    fc1 units 0-9 (which are constant), output: 30 % dense.
    """
    rng = np.random.default_rng(seed)
    if not sparse:
        return {"fc1": np.ones((784, 300), np.float32), "fc2": np.ones((300, 100), np.float32),
                "output": np.ones((100, 10), np.float32)}
    fc1 = (rng.random((784, 300)) < 0.04).astype(np.float32)
    fc1[:100] = 0
    fc1[:, :10] = 0
    fc2 = (rng.random((300, 100)) < 0.05).astype(np.float32)
    fc2[10:15] = 0
    fc2[:, :3] = 0
    fc2[:10, :3] = 1
    output = (rng.random((100, 10)) < 0.3).astype(np.float32)
    return {"fc1": fc1, "fc2": fc2, "output": output}


def _weights(model, masks, seed, positive_bias=()):
    """Random trained-looking weights, kernels zero where masked."""
    rng = np.random.default_rng(seed)
    weights = {}
    for layer in masked_layers(model):
        live_fan_in = np.prod(layer.kernel.shape[:-1]) * masks[layer.name].mean()
        std = 1.0 / np.sqrt(max(live_fan_in, 1.0))  # keeps logits O(1): float32 rounding small
        kernel = rng.normal(0, std, layer.kernel.shape).astype(np.float32)
        weights[f"{layer.name}/kernel"] = kernel * masks[layer.name]
        bias = rng.normal(0, 0.1, layer.bias.shape).astype(np.float32)
        if layer.name in positive_bias:
            bias = np.abs(bias) + 0.5  # dead units with relu(bias) > 0: folded, not dropped
        weights[f"{layer.name}/bias"] = bias
    return weights


def write_run(path, model_name="lenet_300_100", input_shape=LENET_SHAPE, rounds=None, seed=0):
    """A run directory with hand-made rounds; `rounds` maps round -> (masks, weights)."""
    os.makedirs(path)
    write_json(os.path.join(path, "config.json"), {
        "model": model_name, "dataset": "mnist", "seed": seed, "validation_size": 60,
        "data_dir": "", "rounds": len(rounds)})
    write_json(os.path.join(path, "dataset.json"), {
        "name": "mnist", "input_shape": list(input_shape), "num_classes": 10,
        "num_train": 240, "iterations_per_round": 30})
    for r, (masks, weights) in rounds.items():
        round_dir = os.path.join(path, f"round_{r:03d}")
        os.makedirs(round_dir)
        write_arrays(os.path.join(round_dir, "mask.npz"), masks)
        write_arrays(os.path.join(round_dir, "weights.npz"), weights)
        alive = sum(int(m.sum()) for m in masks.values())
        total = sum(m.size for m in masks.values())
        write_json(os.path.join(round_dir, "metrics.json"), {
            "round": r, "remaining_pct": 100.0 * alive / total,
            "remaining_pct_by_layer": {k: float(100.0 * m.mean()) for k, m in masks.items()},
            "early_stop_iteration": 30, "early_stop_val_loss": 0.5,
            "early_stop_val_accuracy": 0.9 - 0.001 * r, "early_stop_test_accuracy": 0.9,
            "final_test_accuracy": 0.9, "wall_time_s": 1.0})


def lenet_run(path):
    """Round 0 dense, round 1 sparse (see `_lenet_masks`)."""
    model = models.build("lenet_300_100", LENET_SHAPE, 10, seed=0)
    rounds = {}
    for r, sparse in ((0, False), (1, True)):
        masks = _lenet_masks(r, sparse)
        rounds[r] = (masks, _weights(model, masks, seed=r, positive_bias=("fc1",)))
    write_run(path, rounds=rounds)
    return rounds


def masked_reference(run_dir, r, images):
    ticket = export.load_ticket(run_dir, str(r))
    return export.keras_model(ticket)(images, training=False).numpy()


def random_images(n, shape=LENET_SHAPE, seed=7):
    return np.random.default_rng(seed).random((n,) + tuple(shape), dtype=np.float32)


# --- compaction (numpy), checked against TensorFlow's own ops ------------------------------


def _tf_forward(network, x):
    """The uncompacted network run with TensorFlow ops (the independent reference)."""
    x = tf.constant(x, tf.float32)
    acts = {"relu": tf.nn.relu, "linear": tf.identity}
    for layer in network.layers:
        if isinstance(layer, compaction.Dense):
            x = acts[layer.activation](tf.matmul(x, layer.kernel) + layer.bias)
        elif isinstance(layer, compaction.Conv2D):
            x = tf.nn.conv2d(x, layer.kernel, list(layer.strides), layer.padding.upper())
            x = acts[layer.activation](x + layer.bias)
        elif isinstance(layer, compaction.MaxPool2D):
            x = tf.nn.max_pool2d(x, list(layer.pool_size), list(layer.strides),
                                 layer.padding.upper())
        elif isinstance(layer, compaction.Flatten):
            x = tf.reshape(x, [x.shape[0], -1])
    return x.numpy()


def _dense_network():
    """12 inputs -> 8 relu -> 6 relu -> 4 logits, with planted dead structure."""
    rng = np.random.default_rng(3)
    w1 = rng.normal(size=(12, 8)).astype(np.float32)
    w2 = rng.normal(size=(8, 6)).astype(np.float32)
    w3 = rng.normal(size=(6, 4)).astype(np.float32)
    b1 = rng.normal(size=8).astype(np.float32)
    b2 = rng.normal(size=6).astype(np.float32)
    b3 = rng.normal(size=4).astype(np.float32)
    w1[3] = 0                 # input 3 is dead
    w1[:, 2] = 0              # unit 2 has no live input: constant relu(0.7) = 0.7 ...
    b1[2] = 0.7               # ... which must reach layer 2's bias
    w2[5] = 0                 # unit 5 of layer 1 is read by nobody
    w2[:, 0] = 0
    w2[2, 0] = 1.5            # layer-2 unit 0 only reads the constant unit 2: constant too
    b2[0] = 0.2
    w2[:, 4] = 0
    b2[4] = -1.0              # layer-2 unit 4: no input, relu(-1) = 0
    return compaction.Network((12,), [
        compaction.Dense("d1", w1, b1, "relu"),
        compaction.Dense("d2", w2, b2, "relu"),
        compaction.Dense("d3", w3, b3, "linear"),
    ])


class CompactionTest(tf.test.TestCase):
    def test_dense_dead_units_with_bias_are_folded_exactly(self):
        network = _dense_network()
        x = np.random.default_rng(0).normal(size=(50, 12)).astype(np.float32)
        reference = _tf_forward(network, x)
        for gather in (False, True):
            compact, reports = compaction.compact(network, gather_inputs=gather)
            self.assertAllClose(compaction.forward(compact, x), reference, atol=1e-5, rtol=0)
            d1, d2, d3 = reports
            # Layer 1 keeps units 0, 1, 3, 4, 6, 7: unit 2 is constant, unit 5 unread.
            self.assertEqual((d1.units_kept, d1.units_constant, d1.units_unread), (6, 1, 1))
            # Layer 2 keeps 1, 2, 3, 5: unit 0 (reads only a constant) and 4 are constant.
            self.assertEqual((d2.units_kept, d2.units_constant, d2.units_unread), (4, 2, 0))
            self.assertEqual((d2.inputs_live, d3.inputs_kept, d3.units_kept), (6, 4, 4))
            self.assertEqual(d1.inputs_live, 11)
            kernels = [layer.kernel.shape for layer in compact.layers
                       if isinstance(layer, compaction.Dense)]
            self.assertEqual(kernels, [(11 if gather else 12, 6), (6, 4), (4, 4)])
            gathers = [layer for layer in compact.layers if isinstance(layer, compaction.Gather)]
            self.assertLen(gathers, 1 if gather else 0)
        # The folded constants matter: dropping the dead units without folding is wrong.
        unfolded = compaction.Network((12,), [
            compaction.Dense("d1", network.layers[0].kernel, network.layers[0].bias, "relu"),
            compaction.Dense("d2", network.layers[1].kernel * (np.arange(8) != 2)[:, None],
                             network.layers[1].bias, "relu"),
            network.layers[2]])
        self.assertGreater(np.abs(_tf_forward(unfolded, x) - reference).max(), 0.1)

    def test_dead_conv_filters_fold_into_a_bias_map_at_same_padding(self):
        rng = np.random.default_rng(1)
        k1 = (rng.normal(size=(3, 3, 3, 8)) * (rng.random((3, 3, 3, 8)) < 0.6)).astype(np.float32)
        b1 = rng.normal(0, 0.1, 8).astype(np.float32)
        k1[..., 2] = 0
        b1[2] = 0.8               # filter 2: constant 0.8, read by conv2 on every tap
        k1[..., 5] = 0
        b1[5] = 0.6               # filter 5: constant, read by conv2's centre tap only
        k1[:, :, 1, :] = 0        # input channel 1 dead
        k2 = (rng.normal(size=(3, 3, 8, 6)) * (rng.random((3, 3, 8, 6)) < 0.5)).astype(np.float32)
        k2[:, :, 2, :] = rng.normal(size=(3, 3, 6))
        k2[:, :, 5, :] = 0
        k2[1, 1, 5, :] = 1.0
        k2[:, :, 7, :] = 0        # conv1 filter 7 is read by nobody
        k3 = (rng.normal(size=(4 * 4 * 6, 5)) * (rng.random((96, 5)) < 0.3)).astype(np.float32)
        network = compaction.Network((8, 8, 3), [
            compaction.Conv2D("c1", k1, b1, "relu", padding="same"),
            compaction.Conv2D("c2", k2, rng.normal(0, 0.1, 6).astype(np.float32), "relu",
                              padding="same"),
            compaction.MaxPool2D("p", (2, 2), (2, 2), "valid"),
            compaction.Flatten("f"),
            compaction.Dense("d", k3, rng.normal(size=5).astype(np.float32), "linear"),
        ])
        for layer in (network.layers[0], network.layers[1], network.layers[4]):
            layer.kernel *= np.float32(0.2)  # logits O(1): float32 rounding well below 1e-5
        x = rng.random((20, 8, 8, 3)).astype(np.float32)
        reference = _tf_forward(network, x)
        compact, reports = compaction.compact(network)
        self.assertAllClose(compaction.forward(compact, x), reference, atol=1e-5, rtol=0)
        c1, c2 = reports[:2]
        self.assertEqual((c1.units, c1.units_kept, c1.units_constant, c1.units_unread),
                         (8, 5, 2, 1))
        self.assertEqual((c1.inputs_live, c2.inputs_kept), (2, 5))
        self.assertFalse(c1.bias_map)
        self.assertTrue(c2.bias_map)  # the border sees fewer taps of filter 2 than the middle
        self.assertEqual(compact.layers[1].bias.shape, (8, 8, 6))
        # A plain bias vector (the interior value) would be wrong at the border.
        naive = compaction.Network(compact.input_shape, list(compact.layers))
        naive.layers[1] = compaction.Conv2D("c2", compact.layers[1].kernel,
                                            compact.layers[1].bias[4, 4], "relu", padding="same")
        self.assertGreater(np.abs(compaction.forward(naive, x) - reference).max(), 1e-3)
        # With 'valid' padding every position sees every tap: a bias vector suffices.
        valid = compaction.Network((8, 8, 3), [
            compaction.Conv2D("c1", k1, b1, "relu", padding="valid"),
            compaction.Conv2D("c2", k2, network.layers[1].bias, "relu", padding="valid"),
            compaction.Flatten("f"),
            compaction.Dense("d", k3[:4 * 4 * 6], network.layers[4].bias, "linear")])
        compact, reports = compaction.compact(valid)
        self.assertFalse(reports[1].bias_map)
        self.assertAllClose(compaction.forward(compact, x), _tf_forward(valid, x), atol=1e-5,
                            rtol=0)

    def test_storage_formats_round_trip_and_the_smallest_is_chosen(self):
        rng = np.random.default_rng(2)
        cases = {
            "dense": rng.normal(size=(30, 20)),
            "half": rng.normal(size=(30, 20)) * (rng.random((30, 20)) < 0.5),
            "sparse": rng.normal(size=(300, 200)) * (rng.random((300, 200)) < 0.02),
            "empty": np.zeros((40, 5)),
            "long_gaps": np.zeros((70000, 3)),
            "conv": rng.normal(size=(3, 3, 4, 6)) * (rng.random((3, 3, 4, 6)) < 0.3),
        }
        cases["long_gaps"][0, 0] = cases["long_gaps"][-1, -1] = cases["long_gaps"][40000, 1] = 2.0
        expected = {"dense": "dense", "half": "bitmask", "sparse": "delta", "empty": "delta",
                    "long_gaps": "delta", "conv": "bitmask"}
        for name, kernel in cases.items():
            kernel = kernel.astype(np.float32)
            for fmt in compaction.STORAGE_FORMATS:
                arrays = compaction.encode(kernel, fmt)
                self.assertAllEqual(compaction.decode(arrays, fmt, kernel.shape), kernel)
                self.assertEqual(sum(a.nbytes for a in arrays.values()),
                                 compaction.storage_bytes(kernel, fmt), (name, fmt))
            self.assertEqual(compaction.choose_storage(kernel), expected[name], name)
        self.assertEqual(compaction.encode(cases["long_gaps"], "delta")["gaps"].dtype, np.uint16)

    def test_tensorflow_decoding_matches_for_every_format(self):
        network = _dense_network()
        x = np.random.default_rng(5).normal(size=(9, 12)).astype(np.float32)
        reference = _tf_forward(network, x)
        for storage in compaction.STORAGE_FORMATS:
            path = os.path.join(self.get_temp_dir(), storage)
            export.save_saved_model(export.serving_module(network, storage=storage), path)
            loaded = tf.saved_model.load(path)
            logits = loaded.signatures["serving_default"](image=tf.constant(x))["logits"]
            self.assertAllClose(logits, reference, atol=1e-5, rtol=0, msg=storage)


class BestRoundTest(tf.test.TestCase):
    def test_best_is_the_sparsest_round_within_tolerance_of_round_0(self):
        metrics = {
            0: {"remaining_pct": 100.0, "early_stop_val_accuracy": 0.980},
            1: {"remaining_pct": 80.0, "early_stop_val_accuracy": 0.984},
            2: {"remaining_pct": 64.0, "early_stop_val_accuracy": 0.976},   # -0.4 points
            3: {"remaining_pct": 51.2, "early_stop_val_accuracy": 0.9749},  # -0.51 points
            4: {"remaining_pct": 41.0, "early_stop_val_accuracy": 0.970},
        }
        self.assertEqual(export.best_round(metrics, 0.5), 2)
        self.assertEqual(export.best_round(metrics, 1.0), 4)
        self.assertEqual(export.best_round(metrics, 0.0), 1)
        with self.assertRaisesRegex(errors.LotteryError, "round 0"):
            export.best_round({1: metrics[1]}, 0.5)


# --- the export end to end ------------------------------------------------------------------


class SavedModelExportTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = _class_tmp("savedmodel")
        cls.run_dir = os.path.join(cls.tmp, "run")
        cls.rounds = lenet_run(cls.run_dir)
        cls.out = os.path.join(cls.tmp, "exports", "lenet_r1")
        cls.status, cls.stdout, cls.stderr = run_export(
            [f"--run={cls.run_dir}", "--round=1", f"--output={cls.out}", "--probe=random",
             "--probe_size=200"])

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def test_export_is_compact_and_matches_the_masked_model(self):
        self.assertEqual(self.status, 0, self.stderr)
        self.assertEqual(self.stderr, "")
        self.assertIn("verified on 200 random images", self.stdout)
        masks = self.rounds[1][0]
        images = random_images(300)
        reference = masked_reference(self.run_dir, 1, images)
        loaded = tf.saved_model.load(self.out)
        outputs = loaded.signatures["serving_default"](image=tf.constant(images))
        self.assertAllClose(outputs["logits"], reference, atol=1e-5, rtol=0)
        self.assertAllEqual(outputs["class_ids"], reference.argmax(-1))
        self.assertAllClose(outputs["probabilities"], tf.nn.softmax(reference), atol=1e-6)
        with open(os.path.join(self.out, "assets", "ticket.json")) as f:
            ticket = json.load(f)
        self.assertEqual(ticket["source"]["round"], 1)
        self.assertEqual(ticket["source"]["run_dir"], os.path.abspath(self.run_dir))
        self.assertEqual(ticket["versions"]["tensorflow"], tf.__version__)
        self.assertIn("lottery_tf", ticket["versions"])
        self.assertEqual(ticket["accuracy"]["early_stop_test_accuracy"], 0.9)
        nonzeros = sum(int(m.sum()) for m in masks.values())
        self.assertEqual(ticket["sparsity"]["nonzero_weights"], nonzeros)
        self.assertAllClose(ticket["sparsity"]["layers"]["fc1"]["remaining_pct"],
                            100 * masks["fc1"].mean())
        # The kept units, derived here from the masks alone: a unit is constant
        # without a live weight from a non-constant input, and kept when it is
        # not constant and a kept unit of the next layer reads it.
        fc1_constant = ~masks["fc1"].any(0)
        fc2_constant = ~masks["fc2"][~fc1_constant].any(0)
        fc2_kept = ~fc2_constant & masks["output"].any(1)
        fc1_kept = ~fc1_constant & masks["fc2"][:, fc2_kept].any(1)
        layers = ticket["sparsity"]["layers"]
        self.assertEqual((layers["fc1"]["units_constant"], layers["fc2"]["units_constant"]),
                         (10, 3))
        self.assertEqual(layers["fc1"]["units_kept"], int(fc1_kept.sum()))
        self.assertEqual(layers["fc2"]["units_kept"], int(fc2_kept.sum()))
        self.assertEqual(layers["fc1"]["inputs_live"],
                         int(masks["fc1"][:, fc1_kept].any(1).sum()))
        self.assertEqual(layers["fc1"]["inputs_kept"], 784)  # dead inputs: zero rows
        # Sparse storage: the variables cost about what the nonzeros cost.
        variables = export.variable_bytes(self.out)
        self.assertEqual(ticket["size_bytes"]["variables"], variables)
        self.assertLess(variables, 1.6 * 4 * nonzeros + 4 * 1024)
        self.assertEqual(ticket["verification"]["class_ids_differing_random"], 0)
        self.assertLessEqual(ticket["verification"]["max_abs_logit_diff"], 1e-5)

    def test_signature_contract_and_clear_errors(self):
        loaded = tf.saved_model.load(self.out)
        serve = loaded.signatures["serving_default"]
        inputs = serve.structured_input_signature[1]
        self.assertEqual(list(inputs), ["image"])
        self.assertEqual(inputs["image"].dtype, tf.float32)
        self.assertEqual(inputs["image"].shape.as_list(), [None, 28, 28, 1])
        outputs = serve.structured_outputs
        self.assertEqual({k: v.dtype for k, v in outputs.items()},
                         {"logits": tf.float32, "probabilities": tf.float32,
                          "class_ids": tf.int64})
        for batch in (1, 3):
            out = serve(image=tf.zeros((batch, 28, 28, 1)))
            self.assertEqual(out["logits"].shape, (batch, 10))
        with self.assertRaisesRegex((TypeError, ValueError, tf.errors.InvalidArgumentError),
                                    "float.*uint8"):
            serve(image=tf.zeros((2, 28, 28, 1), tf.uint8))
        for wrong in ((2, 784), (2, 28, 28, 3), (28, 28, 1)):
            with self.assertRaisesRegex((TypeError, ValueError, tf.errors.InvalidArgumentError),
                                        r"image.*not compatible with expected shape \[\?,28,28,1\]"):
                serve(image=tf.zeros(wrong))

    def test_fresh_process_serves_with_tf_saved_model_load_only(self):
        images = random_images(64, seed=11)
        expected = masked_reference(self.run_dir, 1, images).argmax(-1)
        tmp = tempfile.mkdtemp(dir=self.get_temp_dir())
        np.save(os.path.join(tmp, "images.npy"), images)
        script = textwrap.dedent("""
            import sys
            import numpy as np
            import tensorflow as tf
            loaded = tf.saved_model.load(sys.argv[1])
            serve = loaded.signatures["serving_default"]
            images = np.load(sys.argv[2])
            print("classes", " ".join(map(str, serve(image=tf.constant(images))["class_ids"].numpy())))
            try:
                serve(image=tf.constant(images.astype(np.uint8)))
                print("wrong dtype accepted")
            except (TypeError, ValueError, tf.errors.InvalidArgumentError) as e:
                print("dtype error:", str(e).splitlines()[0])
            print("lottery_tf imported:", any(m.startswith("lottery_tf") for m in sys.modules))
        """)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        env.pop("PYTHONPATH", None)
        result = subprocess.run([sys.executable, "-c", script, self.out,
                                 os.path.join(tmp, "images.npy")],
                                capture_output=True, text=True, cwd=tmp, env=env, timeout=120)
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
        self.assertEqual(lines["classes"], " ".join(map(str, expected)))
        self.assertRegex(lines["dtype"], "error: .*float.*uint8")
        self.assertEqual(lines["lottery_tf"], "imported: False")

    def test_saved_model_cli_lists_and_runs_the_signature(self):
        cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        show = subprocess.run([cli, "show", "--dir", self.out, "--all"],
                              capture_output=True, text=True, env=env, timeout=120)
        self.assertEqual(show.returncode, 0, show.stderr)
        self.assertIn("signature_def['serving_default']", show.stdout)
        for text in ("inputs['image']", "DT_FLOAT", "(-1, 28, 28, 1)", "outputs['class_ids']",
                     "DT_INT64", "outputs['logits']", "outputs['probabilities']"):
            self.assertIn(text, show.stdout)
        # `run` loads through the TF1 session loader (restore, then the init op that
        # builds the compact kernels), the path TF Serving's C++ loader takes.
        images = random_images(5, seed=13)
        path = os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), "x.npy")
        np.save(path, images)
        run = subprocess.run([cli, "run", "--dir", self.out, "--tag_set", "serve",
                              "--signature_def", "serving_default", "--inputs",
                              f"image={path}"], capture_output=True, text=True, env=env,
                             timeout=120)
        self.assertEqual(run.returncode, 0, run.stderr)
        expected = masked_reference(self.run_dir, 1, images).argmax(-1)
        classes = run.stdout.split("Result for output key class_ids:")[1].split("Result")[0]
        self.assertEqual([int(c) for c in classes.strip().strip("[]").split()], list(expected))


def _class_tmp(name):
    """A temp dir for a whole test class (setUpClass has no self.get_temp_dir())."""
    return tempfile.mkdtemp(prefix=f"test_export_{name}_")


class ConvExportTest(tf.test.TestCase):
    def test_conv2_with_dead_filters_exports_exactly(self):
        shape = (8, 8, 3)
        model = models.build("conv2", shape, 10, seed=0)
        rng = np.random.default_rng(4)
        masks = {layer.name: (rng.random(layer.kernel.shape) < 0.3).astype(np.float32)
                 for layer in masked_layers(model)}
        masks["conv1"][..., :6] = 0          # dead conv1 filters, constant relu(bias) > 0
        masks["conv2"][:, :, :6, :] = 0
        masks["conv2"][:, :, 0, :] = 1       # conv2 reads dead filter 0 on every tap
        masks["conv2"][..., 60:] = 0         # dead conv2 filters
        weights = _weights(model, masks, seed=4, positive_bias=("conv1", "conv2"))
        run_dir = os.path.join(self.get_temp_dir(), "run")
        write_run(run_dir, "conv2", shape, {0: (masks, weights)})
        out = os.path.join(self.get_temp_dir(), "conv2_export")
        ticket = export.load_ticket(run_dir, "0")
        info = export.export(ticket, out, probe=export.random_probe(shape, 100),
                             progress=lambda line: None)
        layers = info["sparsity"]["layers"]
        self.assertEqual((layers["conv1"]["units_constant"], layers["conv1"]["units_kept"]),
                         (6, 58))
        self.assertTrue(layers["conv2"]["bias_map"])
        self.assertEqual(layers["conv2"]["units_constant"], 4)  # 60-63: relu(bias) constants
        self.assertLessEqual(info["verification"]["max_abs_logit_diff"], 1e-5)
        images = random_images(40, shape, seed=3)
        loaded = tf.saved_model.load(out)
        logits = loaded.signatures["serving_default"](image=tf.constant(images))["logits"]
        self.assertAllClose(logits, masked_reference(run_dir, 0, images), atol=1e-5, rtol=0)


class TfliteExportTest(tf.test.TestCase):
    def test_float_and_quantized_tflite_are_verified_and_sized(self):
        run_dir = os.path.join(self.get_temp_dir(), "run")
        lenet_run(run_dir)
        images = random_images(50, seed=21)
        reference = masked_reference(run_dir, 1, images)
        for quantize in (False, True):
            out = os.path.join(self.get_temp_dir(), f"tflite_{quantize}")
            args = [f"--run={run_dir}", "--round=1", "--format=tflite", f"--output={out}",
                    "--probe_size=100"]
            with mock_tfds():  # "dataset" images: TFDS mock MNIST
                status, stdout, stderr = run_export(args + (["--quantize"] if quantize else []))
            self.assertEqual(status, 0, stderr)
            self.assertEqual(sorted(os.listdir(out)), ["model.tflite", "ticket.json"])
            with open(os.path.join(out, "ticket.json")) as f:
                ticket = json.load(f)
            size = os.path.getsize(os.path.join(out, "model.tflite"))
            self.assertEqual(ticket["size_bytes"]["export_without_ticket_json"], size)
            self.assertIn(f"model.tflite {size / 1024:.1f} KiB", stdout)
            self.assertEqual(ticket["verification"]["class_ids_differing_dataset"], 0)
            self.assertIn("100 mnist test images + 64 random images", stdout)
            outputs = export.run_tflite(os.path.join(out, "model.tflite"), images)
            agree = np.mean(outputs["class_ids"] == reference.argmax(-1))
            if quantize:
                self.assertEqual(ticket["format"], "tflite_dynamic_range_quantized")
                self.assertGreater(ticket["verification"]["max_abs_logit_diff"], 1e-5)
                self.assertGreaterEqual(agree, 0.9)
            else:
                self.assertLessEqual(ticket["verification"]["max_abs_logit_diff"], 1e-5)
                self.assertAllClose(outputs["logits"], reference, atol=1e-5, rtol=0)
                # Sparse tensors are stored sparsely: far below the 4 x 266,200 dense bytes.
                self.assertLess(size, 0.25 * 4 * 266200)

    def test_quantized_export_needs_dataset_images(self):
        run_dir = os.path.join(self.get_temp_dir(), "run")
        lenet_run(run_dir)
        out = os.path.join(self.get_temp_dir(), "q")
        status, stdout, stderr = run_export([f"--run={run_dir}", "--round=1", "--format=tflite",
                                             "--quantize", "--probe=random", f"--output={out}"])
        self.assertEqual(status, 2)
        self.assertEqual(stderr.count("\n"), 1)
        self.assertIn("--quantize needs dataset images", stderr)
        self.assertFalse(os.path.exists(out))


# --- refusal, atomicity, bad input ---------------------------------------------------------


def _bn_model(name, input_shape, num_classes, seed):
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    x = MaskedDense(32, activation="relu", name="fc1")(x)
    x = keras.layers.BatchNormalization(name="fc1_bn")(x)
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
        with mock.patch.object(export.compaction, "compact", off_by_a_little):
            err = self._refused(["--round=1", f"--output={out}"], "disagrees with the masked model")
        self.assertRegex(err, r"max \|logit difference\| 0\.001\d* \(limit 1e-05\)")
        self.assertIn("nothing written", err)
        self.assertFalse(os.path.exists(self.parent))  # not even the parents it created

    def test_a_failure_while_writing_leaves_nothing(self):
        real_save = export.save_saved_model

        def save_then_fail(module_and_serve, path):
            real_save(module_and_serve, path)  # a complete SavedModel in the temp dir...
            raise OSError(28, "No space left on device")  # ...then the disk fills

        os.makedirs(self.parent)
        out = os.path.join(self.parent, "e")
        with mock.patch.object(export, "save_saved_model", save_then_fail):
            self._refused(["--round=1", f"--output={out}"], "No space left on device")
        self.assertEqual(os.listdir(self.parent), [])

    def test_existing_export_needs_overwrite_and_is_replaced_whole(self):
        out = os.path.join(self.parent, "e")
        status, _, err = run_export([f"--run={self.run_dir}", "--round=0", f"--output={out}",
                                     "--probe=random", "--probe_size=16"])
        self.assertEqual(status, 0, err)
        before = _tree(out)
        self._refused(["--round=1", f"--output={out}"], "exists; pass --overwrite")
        self.assertEqual(_tree(out), before)
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
        run_dir = os.path.join(self.get_temp_dir(), "bn_run")
        real_build = models.build

        def build(name, *args):
            return _bn_model(name, *args) if name == "bn_net" else real_build(name, *args)

        with mock.patch.object(models, "build", build):
            model = build("bn_net", LENET_SHAPE, 10, 0)
            masks = {layer.name: np.ones(layer.kernel.shape, np.float32)
                     for layer in masked_layers(model)}
            weights = {v.name.split(":")[0]: v.numpy() for v in model.weights
                       if not v.name.split(":")[0].endswith("/mask")}
            write_run(run_dir, "bn_net", rounds={0: (masks, weights)})
            status, out, err = run_export([f"--run={run_dir}", "--round=0",
                                           f"--output={os.path.join(self.parent, 'bn')}"])
        self.assertEqual(status, 2, err)
        self.assertEqual(err.count("\n"), 1, err)
        self.assertIn("layer 'fc1_bn' (BatchNormalization) is not supported by export", err)
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
            [sys.executable, "-m", "lottery_tf", "export", "--run=nowhere", "--round=3"],
            capture_output=True, text=True, cwd=tmp, env=env, timeout=120)
        self.assertEqual(result.returncode, 2)
        self.assertEqual(result.stderr,
                         "lottery-tf: error: --run nowhere does not exist or is not a directory\n")
        self.assertEqual(os.listdir(tmp), [])


class FlagNamesTest(tf.test.TestCase):
    def test_export_flags_coexist_with_every_other_command(self):
        # absl flags are process-global: a name defined twice fails at import.
        import importlib

        from lottery_tf.cli import train as cli

        for module in list(cli.SUBCOMMANDS.values()) + ["lottery_tf.bench.train_bench",
                                                        "lottery_tf.bench.export_bench"]:
            importlib.import_module(module)
        for name in ("run", "round", "output", "format", "quantize", "overwrite", "probe",
                     "probe_data_dir", "probe_size", "best_tolerance"):
            self.assertEqual(FLAGS.find_module_defining_flag(name), "lottery_tf.export.export", name)

