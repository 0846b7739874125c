"""The export package's shape: a layer type is one class, no flags on import, the commands."""

import dataclasses
import json
import os
import subprocess
import sys
from unittest import mock

import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl import flags

from export.helpers import LENET_SHAPE, REPO, run_export, write_run
from lottery_tf import errors, export
from lottery_tf.bench.export_bench import ExportBenchmarkCommand
from lottery_tf.cli import app
from lottery_tf.cli.export import ExportCommand
from lottery_tf.export import compaction, ir
from lottery_tf.nn import models
from lottery_tf.nn.layers import MaskedDense, masked_layers


# --- a layer type from outside the package: one Keras layer, one IR class --------------------


class ScaleLayer(keras.layers.Layer):
    """Multiplies each feature by its own (trainable) factor."""

    def build(self, input_shape):
        self.scale = self.add_weight("scale", shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.scale


@dataclasses.dataclass
class Scale(ir.Layer):
    """The IR of `ScaleLayer`: channel-wise, so only what differs is written."""

    name: str
    scale: np.ndarray

    keras_description = "Scale"

    @classmethod
    def keras_types(cls):
        return (ScaleLayer,)

    @classmethod
    def from_keras(cls, layer):
        return cls(layer.name, layer.scale.numpy())

    def forward(self, x):
        return x * self.scale

    def constants(self, in_const, in_shape):
        return in_const * self.scale, None  # NaN (not constant) stays NaN

    def keep_channels(self, keep):
        return Scale(self.name, self.scale[keep])

    def arrays(self):
        return {"scale": self.scale}

    def tf_call(self, tensors):
        return lambda x: x * tensors["scale"]()


def _scale_model(name, input_shape, num_classes, seed):
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    x = MaskedDense(32, activation="relu", name="fc1")(x)
    x = ScaleLayer(name="scale")(x)
    logits = MaskedDense(num_classes, pruning_group="output", name="output")(x)
    return keras.Model(inputs, logits, name=name)


class LayerTypeIsOneClassTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        # Registered for this test only.
        registry = mock.patch.object(ir, "_REGISTRY", ir.registered())
        registry.start()
        self.addCleanup(registry.stop)

    def _scale_run(self):
        """A run of `_scale_model` with dead fc1 units (constant relu(bias) > 0) and
        fc1 units the output never reads."""
        real_build = models.build

        def build(name, *args):
            return _scale_model(name, *args) if name == "scale_net" else real_build(name, *args)

        patch = mock.patch.object(models, "build", build)
        patch.start()
        self.addCleanup(patch.stop)
        model = build("scale_net", LENET_SHAPE, 10, 0)
        rng = np.random.default_rng(8)
        masks = {"fc1": (rng.random((784, 32)) < 0.1).astype(np.float32),
                 "output": (rng.random((32, 10)) < 0.5).astype(np.float32)}
        masks["fc1"][:, :4] = 0      # fc1 units 0-3: constant
        masks["output"][4:7] = 0     # fc1 units 4-6: unread
        weights = {}
        for layer in masked_layers(model):
            kernel = rng.normal(0, 0.1, layer.kernel.shape).astype(np.float32)
            weights[f"{layer.name}/kernel"] = kernel * masks[layer.name]
            weights[f"{layer.name}/bias"] = (np.abs(rng.normal(0, 0.1, layer.bias.shape)) + 0.5
                                            ).astype(np.float32)
        weights["scale/scale"] = rng.uniform(0.5, 2.0, 32).astype(np.float32)
        run_dir = os.path.join(self.get_temp_dir(), "scale_run")
        write_run(run_dir, "scale_net", rounds={0: (masks, weights)})
        return run_dir

    def test_an_unregistered_layer_is_refused_and_a_registered_one_exports_exactly(self):
        run_dir = self._scale_run()
        out = os.path.join(self.get_temp_dir(), "scale_export")
        status, _, err = run_export([f"--run={run_dir}", "--round=0", f"--output={out}",
                                     "--probe=random"])
        self.assertEqual(status, 2, err)
        self.assertIn("layer 'scale' (ScaleLayer) is not supported by export: unknown layer "
                      "type (supported: InputLayer, Flatten, (Masked)Dense, (Masked)Conv2D, "
                      "MaxPool2D, BatchNormalization, ReLU, Activation, Dropout, "
                      "GlobalAveragePooling2D, Add; a chain of them, in which a tensor may fork "
                      "into branches that meet again at an Add)", err)

        ir.register(Scale)  # the whole extension: one class, one registration
        ticket = export.load_ticket(run_dir, "0")
        model = export.keras_model(ticket)
        network = export.network_from_model(model)
        self.assertIsInstance(network.layers[2], Scale)
        compact, reports = compaction.compact(network)
        self.assertEqual([type(layer).__name__ for layer in compact.layers],
                         ["Flatten", "Dense", "Scale", "Dense"])
        self.assertEqual(compact.layers[2].scale.shape, (25,))  # 32 - 4 constant - 3 unread
        self.assertEqual((reports[0].units_constant, reports[0].units_unread), (4, 3))
        images = np.random.default_rng(1).random((50,) + LENET_SHAPE, dtype=np.float32)
        reference = model(images, training=False).numpy()
        self.assertAllClose(ir.forward(compact, images), reference, atol=1e-5, rtol=0)

        status, stdout, err = run_export([f"--run={run_dir}", "--round=0", f"--output={out}",
                                          "--probe=random", "--probe_size=100"])
        self.assertEqual(status, 0, err)
        self.assertIn("verified on 100 random images", stdout)
        loaded = tf.saved_model.load(out)
        logits = loaded.signatures["serving_default"](image=tf.constant(images))["logits"]
        self.assertAllClose(logits, reference, atol=1e-5, rtol=0)
        with open(os.path.join(out, "assets", "ticket.json")) as f:
            layers = json.load(f)["sparsity"]["layers"]
        self.assertEqual(sorted(layers), ["fc1", "output"])
        self.assertEqual(layers["fc1"]["units_kept"], 25)


class NoIsinstanceLadderTest(tf.test.TestCase):
    def test_generic_modules_do_not_name_layer_types(self):
        # Generic code calls the layers' methods; only layers.py knows the types.
        package = os.path.join(REPO, "lottery_tf", "export")
        for name in ("compaction.py", "serving.py", "tflite.py", "storage.py", "convert.py",
                     "exporter.py"):
            with open(os.path.join(package, name)) as f:
                text = f.read()
            for layer_type in ("Dense", "Conv2D", "MaxPool2D", "Flatten"):
                self.assertNotIn(f"isinstance(layer, layers.{layer_type}", text, name)
                self.assertNotIn(f"layers.{layer_type})", text, name)


# --- flags: none on import; each command defines its own ------------------------------------

EXPORT_FLAGS = {
    "run": "", "round": "best", "best_tolerance": 0.5, "output": "", "format": "saved_model",
    "quantize": False, "overwrite": False, "probe": "auto", "probe_data_dir": "",
    "probe_size": 1000, "quantized_min_agreement": 1.0, "check_input_range": False,
}


class FlagsTest(tf.test.TestCase):
    def test_importing_the_package_defines_no_absl_flag(self):
        script = (
            "import importlib, pkgutil\n"
            "from absl import flags\n"
            "import lottery_tf.export as package\n"
            "names = ['lottery_tf.export', 'lottery_tf.cli.export', "
            "'lottery_tf.bench.export_bench']\n"
            "names += [f'lottery_tf.export.{m.name}'\n"
            "          for m in pkgutil.iter_modules(package.__path__)]\n"
            "for name in names:\n"
            "    importlib.import_module(name)\n"
            "print(len(names), sorted(m for m in flags.FLAGS.flags_by_module_dict() "
            "if m.startswith('lottery_tf')))\n")
        env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                env=env, timeout=120)
        self.assertEqual(result.returncode, 0, result.stderr)
        count, defined = result.stdout.split(" ", 1)
        self.assertGreaterEqual(int(count), 15)
        self.assertEqual(defined.strip(), "[]")

    def test_export_command_flags(self):
        for _ in range(2):  # a fresh FlagValues each time: defining twice is fine
            fv = flags.FlagValues()
            ExportCommand().define_flags(fv)
            self.assertEqual({name: fv[name].default for name in fv}, EXPORT_FLAGS)
        self.assertEqual(ExportCommand.name, "export")
        self.assertEqual(ExportCommand().refused_flag("model"),
                         "--model is a training flag; `lottery-tf export` does not take it")
        self.assertIsNone(ExportCommand().refused_flag("no_such_flag"))

    def test_export_benchmark_command_checks_its_flags(self):
        command = ExportBenchmarkCommand()
        self.assertEqual(command.name, "export_benchmark")
        fv, _ = app.parse(command, ["bench", "--export_bench_repeats=0"])
        self.assertTrue(all(name.startswith("export_bench_") for name in fv))
        with self.assertRaisesRegex(errors.LotteryError, "must be positive"):
            command.run(fv)
