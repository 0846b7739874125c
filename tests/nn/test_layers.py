import numpy as np
import tensorflow as tf
import tf_keras as keras
from tensorflow_model_optimization.sparsity import keras as tfmot_sparsity

from lottery_tf.nn.layers import CUSTOM_OBJECTS, MaskedConv2D, MaskedDense, masked_layers


def _random_mask(shape, keep, seed):
    rng = np.random.default_rng(seed)
    return (rng.random(shape) < keep).astype(np.float32)


def _tiny_model(layer, input_shape):
    return keras.Sequential([keras.Input(input_shape), layer])


class ZeroStaysZeroTest(tf.test.TestCase):
    """Pruned weights stay exactly 0 through many optimizer steps."""

    def _train_and_check(self, layer, input_shape, optimizer):
        model = _tiny_model(layer, input_shape)
        mask = _random_mask(layer.kernel.shape, keep=0.3, seed=1)
        layer.mask.assign(mask)
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
        # Training really happened on the survivors.
        self.assertGreater(np.abs(layer.kernel.numpy() - before)[~pruned].max(), 1e-4)
        self.assertAllEqual(layer.mask.numpy(), mask)

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
