import os

import numpy as np
import tensorflow as tf
import tf_keras as keras
from tensorflow_model_optimization.sparsity import keras as tfmot_sparsity

from conftest import mock_tfds, tiny_config
from lottery_tf.lottery import runner
from lottery_tf.lottery.run_dir import RunDir
from lottery_tf.lottery.storage import read_arrays
from lottery_tf.nn.layers import CUSTOM_OBJECTS, MaskedConv2D, MaskedDense, masked_layers
from lottery_tf.train import optimizers


def _random_mask(shape, keep, seed):
    rng = np.random.default_rng(seed)
    return (rng.random(shape) < keep).astype(np.float32)


def _tiny_model(layer, input_shape):
    return keras.Sequential([keras.Input(input_shape), layer])


class ZeroStaysZeroTest(tf.test.TestCase):
    """Pruned weights stay exactly 0 through many optimizer steps.

    The RAW kernel (`layer.kernel`, what `weights.npz` saves and the next
    pruning reads), not `kernel * mask` (0 whatever training does): a round
    starts with the kernel times its mask, and no optimizer step may move a
    pruned position away from 0, under Adam, SGD with momentum, and with
    (decoupled) weight decay, built as the runner builds them.
    """

    def _train_and_check(self, layer, input_shape, optimizer):
        model = _tiny_model(layer, input_shape)
        mask = _random_mask(layer.kernel.shape, keep=0.3, seed=1)
        layer.mask.assign(mask)
        layer.kernel.assign(layer.kernel * mask)  # as a round starts (LotteryCallback)
        model.compile(optimizer=optimizer, loss="mse")
        rng = np.random.default_rng(0)
        x = rng.normal(size=(64,) + input_shape).astype(np.float32)
        y = rng.normal(size=(64,) + tuple(model.output_shape[1:])).astype(np.float32)
        before = layer.kernel.numpy().copy()
        model.fit(x, y, batch_size=8, epochs=5, verbose=0)
        effective = layer.masked_kernel().numpy()
        pruned = mask == 0
        self.assertTrue(pruned.any() and (~pruned).any())
        self.assertAllEqual(effective[pruned], np.zeros(pruned.sum(), np.float32))
        raw = layer.kernel.numpy()
        self.assertAllEqual(raw[pruned], np.zeros(pruned.sum(), np.float32))
        # Training really happened on the survivors.
        self.assertGreater(np.abs(raw - before)[~pruned].max(), 1e-4)
        self.assertAllEqual(layer.mask.numpy(), mask)

    def _check_every_optimizer(self, make_layer, input_shape):
        for name, momentum, weight_decay in (("adam", 0.0, 0.0), ("adam", 0.0, 1e-2),
                                             ("sgd", 0.9, 0.0), ("sgd", 0.9, 1e-2)):
            with self.subTest(optimizer=name, momentum=momentum, weight_decay=weight_decay):
                self._train_and_check(make_layer(), input_shape,
                                      optimizers.make_optimizer(name, 1e-2, momentum, weight_decay))

    def test_dense_adam(self):
        self._train_and_check(MaskedDense(7), (5,), keras.optimizers.Adam(1e-2))

    def test_dense_sgd_momentum(self):
        self._train_and_check(
            MaskedDense(7), (5,), keras.optimizers.SGD(1e-2, momentum=0.9)
        )

    def test_conv_adam(self):
        self._train_and_check(
            MaskedConv2D(3, 3, padding="same"), (6, 6, 2), keras.optimizers.Adam(1e-2)
        )

    def test_conv_sgd_momentum(self):
        self._train_and_check(
            MaskedConv2D(3, 3, padding="valid"),
            (6, 6, 2),
            keras.optimizers.SGD(1e-2, momentum=0.9),
        )

    def test_dense_every_optimizer_with_and_without_weight_decay(self):
        self._check_every_optimizer(lambda: MaskedDense(7), (5,))

    def test_conv_every_optimizer_with_and_without_weight_decay(self):
        self._check_every_optimizer(lambda: MaskedConv2D(3, 3, padding="same"), (6, 6, 2))

    def test_resnet20_sgd_momentum_weight_decay_saves_exact_zeros(self):
        # A whole run as the paper trains ResNet-20: the saved kernels of round 1
        # are exactly 0 wherever round 1's mask is.
        path = os.path.join(self.get_temp_dir(), "resnet")
        with mock_tfds():
            runner.run(tiny_config(model="resnet20", iterations=5, rounds=2, eval_every=5, batch_size=8,
                                   jit_compile=False, optimizer="sgd", learning_rate=0.05, momentum=0.9,
                                   weight_decay=1e-4, output_dir=path),
                       progress=lambda line: None)
        run = RunDir(path)
        masks, weights = run.load_masks(1), read_arrays(run.weights_path(1))
        self.assertLen(masks, 22)  # 21 convolutions and the output layer
        for name, mask in masks.items():
            kernel = weights[f"{name}/kernel"]
            pruned = mask == 0
            self.assertTrue(pruned.any(), name)
            self.assertAllEqual(kernel[pruned], np.zeros(pruned.sum(), np.float32), name)
            self.assertTrue(np.all(kernel[~pruned] != 0), name)

    def test_forward_equals_plain_layer_with_masked_kernel(self):
        masked = MaskedConv2D(4, 3, padding="same", activation="relu")
        plain = keras.layers.Conv2D(4, 3, padding="same", activation="relu")
        x = tf.random.stateless_normal((2, 5, 5, 3), seed=(1, 2))
        masked(x)
        plain(x)
        mask = _random_mask(masked.kernel.shape, keep=0.5, seed=3)
        masked.mask.assign(mask)
        plain.kernel.assign(masked.kernel * mask)
        plain.bias.assign(tf.random.stateless_normal((4,), seed=(3, 4)))
        masked.bias.assign(plain.bias)
        self.assertAllClose(masked(x), plain(x))


class TrainingKernelTest(tf.test.TestCase):
    """A training step reads the kernel as is and masks its gradient (nn/layers.py).

    Under `assign_mask` (pruned entries zeroed), that is `kernel * mask`
    exactly: the same outputs and the same gradients, bit for bit, as the
    inference path that multiplies.
    """

    def _check(self, layer, x):
        layer(x)
        layer.kernel.assign(tf.random.stateless_normal(layer.kernel.shape, seed=(5, 6)))
        layer.bias.assign(tf.random.stateless_normal(layer.bias.shape, seed=(7, 8)))
        mask = _random_mask(layer.kernel.shape, keep=0.4, seed=9)
        layer.assign_mask(mask)
        self.assertAllEqual(layer.kernel.numpy()[mask == 0], np.zeros(int((mask == 0).sum()), np.float32))
        self.assertAllEqual(layer.mask.numpy(), mask)
        results = {}
        for training in (True, False):
            with tf.GradientTape() as tape:
                out = layer(x, training=training)
                loss = tf.reduce_sum(out * out)
            results[training] = (out.numpy(), tape.gradient(loss, layer.kernel).numpy())
        self.assertAllEqual(results[True][0], results[False][0])
        self.assertAllEqual(results[True][1], results[False][1])
        gradient = results[True][1]
        self.assertAllEqual(gradient[mask == 0], np.zeros(int((mask == 0).sum()), np.float32))
        self.assertGreater(np.abs(gradient[mask == 1]).max(), 0.0)

    def test_dense(self):
        self._check(MaskedDense(6, activation="relu"), tf.random.stateless_normal((4, 5), seed=(1, 2)))

    def test_conv(self):
        self._check(MaskedConv2D(3, 3, padding="same"), tf.random.stateless_normal((2, 6, 6, 2), seed=(3, 4)))

    def test_inference_masks_a_kernel_assigned_from_outside(self):
        layer = MaskedDense(4)
        x = tf.random.stateless_normal((3, 5), seed=(1, 1))
        layer(x)
        mask = _random_mask(layer.kernel.shape, keep=0.5, seed=2)
        layer.mask.assign(mask)  # not assign_mask: pruned kernel entries stay nonzero
        self.assertTrue(np.any(layer.kernel.numpy()[mask == 0] != 0))
        expected = tf.matmul(x, layer.kernel * mask) + layer.bias
        self.assertAllClose(layer(x), expected)
        self.assertAllClose(layer(x, training=False), expected)


class LayerConfigAndCheckpointTest(tf.test.TestCase):
    def test_get_config_round_trip(self):
        for layer in (
            MaskedDense(5, pruning_group="output", activation="relu", name="d"),
            MaskedConv2D(4, (3, 3), strides=2, padding="same", name="c"),
        ):
            config = layer.get_config()
            clone = type(layer).from_config(config)
            self.assertEqual(clone.get_config(), config)
            self.assertEqual(clone.pruning_group, layer.pruning_group)

    def test_model_clone_and_json_round_trip(self):
        model = _tiny_model(MaskedDense(3, pruning_group="output", name="out"), (4,))
        restored = keras.models.model_from_json(model.to_json(), custom_objects=CUSTOM_OBJECTS)
        self.assertEqual(masked_layers(restored)[0].pruning_group, "output")

    def test_mask_saved_and_restored_by_checkpoint_and_weights(self):
        layer = MaskedDense(6, name="d")
        model = _tiny_model(layer, (4,))
        mask = _random_mask(layer.kernel.shape, keep=0.5, seed=7)
        layer.mask.assign(mask)
        prefix = self.get_temp_dir() + "/ckpt"
        path = tf.train.Checkpoint(model=model).write(prefix)
        weights_path = self.get_temp_dir() + "/w.h5"
        model.save_weights(weights_path)

        other_layer = MaskedDense(6, name="d")
        other = _tiny_model(other_layer, (4,))
        self.assertAllEqual(other_layer.mask.numpy(), np.ones_like(mask))
        tf.train.Checkpoint(model=other).read(path).assert_consumed()
        self.assertAllEqual(other_layer.mask.numpy(), mask)
        self.assertAllEqual(other_layer.kernel.numpy(), layer.kernel.numpy())

        third_layer = MaskedDense(6, name="d")
        third = _tiny_model(third_layer, (4,))
        third.load_weights(weights_path)
        self.assertAllEqual(third_layer.mask.numpy(), mask)

    def test_mask_is_not_trainable_and_bias_is_not_prunable(self):
        layer = MaskedDense(3)
        layer.build((None, 2))
        self.assertNotIn(id(layer.mask), [id(w) for w in layer.trainable_weights])
        self.assertIn(id(layer.mask), [id(w) for w in layer.non_trainable_weights])
        prunable = layer.get_prunable_weights()
        self.assertLen(prunable, 1)
        self.assertIs(prunable[0], layer.kernel)

    def test_unknown_group_is_refused(self):
        with self.assertRaisesRegex(ValueError, "pruning_group"):
            MaskedDense(3, pruning_group="bias")


class TfmotInteropTest(tf.test.TestCase):
    def test_layers_are_tfmot_prunable(self):
        for layer in (MaskedDense(4), MaskedConv2D(2, 3)):
            self.assertIsInstance(layer, tfmot_sparsity.PrunableLayer)
            wrapped = tfmot_sparsity.prune_low_magnitude(layer)
            self.assertIs(wrapped.layer, layer)

    def test_tfmot_prunes_the_kernel_it_is_given(self):
        model = keras.Sequential(
            [keras.Input((8,)), tfmot_sparsity.prune_low_magnitude(MaskedDense(4, name="d"))]
        )
        wrapper = model.layers[0]
        self.assertEqual(len(wrapper.pruning_vars), 1)
        self.assertIs(wrapper.pruning_vars[0][0], wrapper.layer.kernel)
