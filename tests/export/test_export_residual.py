"""VGG-19 and ResNet-20 tickets: batch norm folded, residual blocks compacted exactly.

Random weights (batch norms with non-trivial gamma, beta and moving statistics)
and random masks on the registry's real architectures, at small image sizes
(ResNet-20 at 8x8x3, VGG-19 at 16x16x3, the smallest its four valid poolings
allow), so the numpy reference stays fast.
"""

import json
import os

import numpy as np
import tensorflow as tf
import tf_keras as keras

from export.helpers import class_tmp, random_images, random_ticket_weights, run_export, write_run
from lottery_tf import errors, export
from lottery_tf.export import ir, layers as ir_layers, serving
from lottery_tf.export.verify import LOGIT_TOLERANCE
from lottery_tf.nn import models
from lottery_tf.nn.layers import MaskedConv2D, MaskedDense, masked_layers

RESNET_SHAPE = (8, 8, 3)
VGG_SHAPE = (16, 16, 3)


def _random_masks(model, density, seed):
    rng = np.random.default_rng(seed)
    return {layer.name: (rng.random(layer.kernel.shape) < density).astype(np.float32)
            for layer in masked_layers(model)}


def _write_ticket_run(path, model_name, shape, density, seed, change=None):
    """A run directory with round 1 only (exported with --round=1): random masks
    at `density`, then `change(masks, weights)`, if given, edits them."""
    model = models.build(model_name, shape, 10, seed=0)
    masks = _random_masks(model, density, seed)
    if change:
        change(masks, None)
    weights = random_ticket_weights(model, masks, seed=seed)
    if change:
        change(masks, weights)
    write_run(path, model_name, shape, rounds={1: (masks, weights)})


def _ticket_model(path, r=1):
    return export.keras_model(export.load_ticket(path, str(r)))


def _saved_model_logits(network, path, images):
    serving.save_saved_model(serving.serving_module(network), path)
    return serving.run_saved_model(path, images)["logits"]


class ZooExportTest(tf.test.TestCase):
    def _export_ticket(self, name, shape):
        """Exports a random 10 % ticket of `name` with the CLI; returns (run dir, export)."""
        run_dir = os.path.join(self.get_temp_dir(), name)
        _write_ticket_run(run_dir, name, shape, density=0.1, seed=3)
        out = os.path.join(self.get_temp_dir(), f"{name}_export")
        status, stdout, err = run_export([f"--run={run_dir}", "--round=1", f"--output={out}",
                                          "--probe=random", "--probe_size=64"])
        self.assertEqual(status, 0, err)
        self.assertIn("class ids identical", stdout)
        with open(os.path.join(out, "assets", "ticket.json")) as f:
            info = json.load(f)
        self.assertLessEqual(info["verification"]["max_abs_logit_diff"], LOGIT_TOLERANCE)
        # Every masked layer is reported; batch norms left no layer of their own.
        self.assertCountEqual(info["sparsity"]["layers"],
                              list(export.load_ticket(run_dir, "1").masks))
        return run_dir, out

    def test_vgg19_ticket_exports_and_verifies(self):
        self._export_ticket("vgg19", VGG_SHAPE)

    def test_resnet20_ticket_exports_verifies_and_serves(self):
        run_dir, out = self._export_ticket("resnet20", RESNET_SHAPE)
        # Served by TensorFlow alone, on images the verification did not see.
        images = random_images(16, RESNET_SHAPE, seed=11)
        served = serving.run_saved_model(out, images)["logits"]
        reference = _ticket_model(run_dir)(images, training=False).numpy()
        self.assertAllClose(served, reference, atol=LOGIT_TOLERANCE, rtol=0)
        self.assertAllEqual(np.argmax(served, -1), np.argmax(reference, -1))

    def test_a_ticket_with_large_logits_verifies_within_the_scaled_limit(self):
        # Folding rounds differently in float32, by a few ulps of the logits' scale:
        # output weights x40 put the logits in the hundreds and their rounding above
        # an absolute 1e-5, which refused such tickets although nothing else differed.
        def scale_output(masks, weights):
            if weights is not None:
                weights["output/kernel"] *= np.float32(40.0)

        run_dir = os.path.join(self.get_temp_dir(), "loud")
        _write_ticket_run(run_dir, "resnet20", RESNET_SHAPE, density=0.1, seed=3,
                          change=scale_output)
        out = os.path.join(self.get_temp_dir(), "loud_export")
        status, stdout, err = run_export([f"--run={run_dir}", "--round=1", f"--output={out}",
                                          "--probe=random", "--probe_size=64"])
        self.assertEqual(status, 0, err)
        with open(os.path.join(out, "assets", "ticket.json")) as f:
            verification = json.load(f)["verification"]
        self.assertGreater(verification["max_abs_logit_diff"], LOGIT_TOLERANCE)  # the old refusal
        self.assertLessEqual(verification["max_scaled_logit_diff"], verification["logit_limit"])

    def test_batch_norms_and_relus_fold_into_the_convolutions(self):
        run_dir = os.path.join(self.get_temp_dir(), "resnet")
        _write_ticket_run(run_dir, "resnet20", RESNET_SHAPE, density=0.3, seed=4)
        model = _ticket_model(run_dir)
        network = export.network_from_model(model)
        kinds = [type(layer).__name__ for layer in ir.walk(network.layers)]
        self.assertNotIn("BatchNorm", kinds)
        self.assertEqual(kinds.count("Residual"), 9)
        self.assertEqual(kinds.count("Conv2D"), 21)
        stem = network.layers[0]
        self.assertEqual((stem.name, stem.activation), ("stem", "relu"))
        images = random_images(8, RESNET_SHAPE)
        reference = model(images, training=False).numpy()
        self.assertAllClose(ir.forward(network, images), reference, atol=1e-5, rtol=0)

    def test_a_batch_norm_without_a_layer_to_fold_into_stays_an_affine_layer(self):
        # BN right after the input and after an Add, Dropout, an Activation layer.
        inputs = keras.Input((6, 6, 2), name="image")
        x = keras.layers.BatchNormalization(name="input_bn")(inputs)
        x = MaskedConv2D(4, 3, padding="same", name="conv")(x)
        y = keras.layers.Activation("tanh", name="tanh")(x)
        y = keras.layers.Dropout(0.5, name="drop")(y)
        x = keras.layers.Add(name="add")([x, y])
        x = keras.layers.BatchNormalization(name="add_bn")(x)
        x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
        logits = MaskedDense(3, pruning_group="output", name="output")(x)
        model = keras.Model(inputs, logits, name="bn_everywhere")
        weights = random_ticket_weights(
            model, {"conv": np.ones((3, 3, 2, 4)), "output": np.ones((4, 3))}, seed=5)
        for variable in model.weights:
            key = variable.name.split(":")[0]
            if not key.endswith("/mask"):
                variable.assign(weights[key])
        network = export.network_from_model(model)
        kinds = [type(layer).__name__ for layer in ir.walk(network.layers)]
        self.assertEqual(kinds, ["BatchNorm", "Conv2D", "Residual", "Activation", "Dropout",
                                 "BatchNorm", "GlobalAveragePool", "Dense"])
        images = random_images(16, (6, 6, 2))
        reference = model(images, training=False).numpy()
        compact, _ = export.compact(network)
        self.assertAllClose(ir.forward(compact, images), reference, atol=1e-5, rtol=0)
        served = _saved_model_logits(compact, os.path.join(self.get_temp_dir(), "sm"), images)
        self.assertAllClose(served, reference, atol=LOGIT_TOLERANCE, rtol=0)

    def test_batch_norm_folds_into_a_linear_dense_only(self):
        inputs = keras.Input((6,), name="image")
        x = MaskedDense(5, name="linear")(inputs)
        x = keras.layers.BatchNormalization(name="linear_bn")(x)
        x = keras.layers.ReLU(name="linear_relu")(x)
        x = MaskedDense(5, activation="relu", name="relu")(x)
        x = keras.layers.BatchNormalization(name="relu_bn")(x)  # after the relu: not foldable
        logits = MaskedDense(3, pruning_group="output", name="output")(x)
        model = keras.Model(inputs, logits, name="dense_bn")
        masks = {"linear": np.ones((6, 5)), "relu": np.ones((5, 5)), "output": np.ones((5, 3))}
        masks["linear"][:, 2] = 0  # a dead unit: constant relu(shift), folded downstream
        weights = random_ticket_weights(model, masks, seed=7)
        for variable in model.weights:
            key = variable.name.split(":")[0]
            variable.assign(masks[key[:-5]] if key.endswith("/mask") else weights[key])
        network = export.network_from_model(model)
        self.assertEqual([(type(layer).__name__, getattr(layer, "activation", None))
                          for layer in network.layers],
                         [("Dense", "relu"), ("Dense", "relu"), ("BatchNorm", None),
                          ("Dense", "linear")])
        images = np.random.default_rng(2).normal(size=(32, 6)).astype(np.float32)
        reference = model(images, training=False).numpy()
        compact, reports = export.compact(network)
        self.assertEqual((reports[0].units_kept, reports[0].units_constant), (4, 1))
        self.assertAllClose(ir.forward(compact, images), reference, atol=1e-5, rtol=0)

    def test_refuses_what_is_not_a_residual_block(self):
        inputs = keras.Input((8,), name="image")
        a = MaskedDense(4, name="a")(inputs)
        b = MaskedDense(4, name="b")(a)
        c = MaskedDense(4, name="c")(a)
        x = keras.layers.Add(name="add")([b, keras.layers.Add(name="inner")([c, a])])
        logits = MaskedDense(3, pruning_group="output", name="output")(x)
        with self.assertRaisesRegex(errors.LotteryError,
                                    "export: branches from one tensor must meet again at one layer"):
            export.network_from_model(keras.Model(inputs, logits, name="nested"))


class ResidualCompactionTest(tf.test.TestCase):
    """Whole channels pruned in ResNet-20's first stage (16 channels).

    * channel 3: stem filter 3 and filter 3 of every stage-1 conv2 pruned: the
      residual stream's channel 3 is the constant relu(shift) (not zero) on
      every branch through stage 1, so it is removed there and folded into
      stage 2's first convolutions;
    * channel 5: stem filter 5 pruned (constant), but block 1's conv2 filter 5
      is live: the sum varies and the channel must stay; the identity shortcut
      no longer carries it, so its constant goes into the block's bias;
    * channel 7: block 2's conv2 filter 7 pruned (its branch is constant there)
      while the shortcut varies: must stay, conv2 keeps computing the constant.
    """

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        def prune_channels(masks, weights):
            if weights is None:
                masks["stem"][..., [3, 5]] = 0
                for block in (1, 2, 3):
                    masks[f"stage1_block{block}_conv2"][..., 3] = 0
                masks["stage1_block2_conv2"][..., 7] = 0
            else:  # the stem's dead filters 3 and 5 emit relu(beta) = beta > 0, not zero
                weights["stem_bn/moving_mean"][[3, 5]] = 0.0
                weights["stem_bn/beta"][[3, 5]] = [0.7, 0.9]

        cls.run_dir = os.path.join(class_tmp("residual"), "run")
        _write_ticket_run(cls.run_dir, "resnet20", RESNET_SHAPE, 0.5, 6, prune_channels)
        cls.model = _ticket_model(cls.run_dir)
        cls.compact, reports = export.compact(export.network_from_model(cls.model))
        cls.reports = {r.name: r for r in reports}

    def test_channel_dead_on_every_branch_is_removed(self):
        stem = self.reports["stem"]
        self.assertEqual((stem.units_kept, stem.units_constant), (14, 2))
        # Block 1 reads the stem's output (3 and 5 constant), blocks 2-3 the sums (3 constant).
        for block, inputs in ((1, 14), (2, 15), (3, 15)):
            self.assertEqual(self.reports[f"stage1_block{block}_conv1"].inputs_kept, inputs)
        shortcut = self.reports["stage2_block1_shortcut"]
        self.assertEqual((shortcut.inputs, shortcut.inputs_kept), (16, 15))

    def test_channels_live_on_one_branch_are_kept(self):
        conv2 = self.reports["stage1_block1_conv2"]
        self.assertEqual((conv2.units_kept, conv2.units_constant), (15, 1))  # 5 kept, 3 gone
        conv2 = self.reports["stage1_block2_conv2"]
        self.assertEqual((conv2.units_kept, conv2.units_constant), (15, 1))  # 7 kept, 3 gone
        block1 = next(layer for layer in self.compact.layers if layer.name == "stage1_block1_add")
        identity = block1.branches[0]  # Add([shortcut, conv branch])
        self.assertLen(identity, 1)
        self.assertIsInstance(identity[0], ir_layers.Select)
        self.assertEqual(int((identity[0].indices < 0).sum()), 1)  # channel 5
        self.assertEqual(int(np.count_nonzero(block1.bias)), 1)

    def test_compact_network_and_saved_model_are_exact(self):
        images = random_images(32, RESNET_SHAPE, seed=9)
        reference = self.model(images, training=False).numpy()
        self.assertAllClose(ir.forward(self.compact, images), reference, atol=1e-5, rtol=0)
        served = _saved_model_logits(self.compact, os.path.join(self.get_temp_dir(), "sm"),
                                     images)
        self.assertAllClose(served, reference, atol=LOGIT_TOLERANCE, rtol=0)
        self.assertAllEqual(np.argmax(served, -1), np.argmax(reference, -1))
