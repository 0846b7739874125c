"""make_prunable: any functional or Sequential model, with masks, computing the same."""

import numpy as np
import tensorflow as tf
import tf_keras as keras

import own_fixtures
from lottery_tf import errors, make_prunable
from lottery_tf.nn.layers import MaskedConv2D, MaskedDense, masked_layers


def _sequential():
    return keras.Sequential([
        keras.Input((6, 6, 2)),
        keras.layers.Conv2D(3, 3, activation="relu", name="conv"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(5, activation="tanh", name="hidden"),
        keras.layers.Dense(4, name="out"),
    ], name="seq")


def _functional():
    inputs = keras.Input((6, 6, 2))
    a = keras.layers.Conv2D(3, 3, padding="same", strides=2, name="conv_a")(inputs)
    b = keras.layers.Conv2D(3, 1, strides=2, use_bias=False, name="conv_b")(inputs)
    x = keras.layers.Concatenate(name="cat")([a, b])
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(4, name="logits")(x)
    return keras.Model(inputs, keras.layers.Softmax(name="probs")(x), name="func")


def _nested():
    inner = keras.Sequential([keras.Input((5,)), keras.layers.Dense(6, activation="relu", name="d1"),
                              keras.layers.Dense(3, name="d2")], name="inner")
    block = keras.Model(*_block(), name="block")
    inputs = keras.Input((5,))
    x = inner(inputs)
    x = keras.layers.Reshape((3, 1, 1))(x)
    x = keras.layers.Flatten()(block(keras.layers.UpSampling2D((1, 3))(x)))
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(x), name="outer")


def _block():
    inputs = keras.Input((3, 3, 1))
    return inputs, keras.layers.Conv2D(2, 2, name="block_conv")(inputs)


def _residual():
    return own_fixtures.residual_cnn((8, 8, 1), 3)


def _perturb_batch_norm(model):
    # Moving statistics that differ from their initial values, so copying them matters.
    rng = np.random.default_rng(1)
    for layer in model.submodules:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(size=layer.moving_mean.shape).astype(np.float32))
            layer.moving_variance.assign(rng.random(layer.moving_variance.shape).astype(np.float32) + 0.5)


class OutputsTest(tf.test.TestCase):
    def test_outputs_bitwise_equal_on_random_inputs(self):
        keras.utils.set_random_seed(0)
        cases = {"sequential": (_sequential(), (16, 6, 6, 2)), "functional": (_functional(), (16, 6, 6, 2)),
                 "nested": (_nested(), (16, 5)), "residual": (_residual(), (16, 8, 8, 1))}
        for name, (model, shape) in cases.items():
            _perturb_batch_norm(model)
            prunable = make_prunable(model)
            x = np.random.default_rng(2).normal(size=shape).astype(np.float32)
            self.assertAllEqual(prunable(x, training=False), model(x, training=False), name)
            self.assertAllEqual(prunable.predict(x, verbose=0), model.predict(x, verbose=0), name)
            self.assertEqual(type(prunable), type(model), name)
            self.assertEqual(prunable.name, model.name)
            self.assertEqual([layer.name for layer in prunable.layers], [layer.name for layer in model.layers])
            originals = [v.name for v in model.weights]
            # Every Dense / Conv2D gained a mask, nothing else changed.
            self.assertEqual([v.name for v in prunable.weights if "mask" not in v.name], originals, name)
            self.assertLen(masked_layers(prunable), sum(
                isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)) for layer in model.submodules))

    def test_nested_models_stay_nested_and_other_layers_keep_their_types(self):
        prunable = make_prunable(_nested())
        inner = prunable.get_layer("inner")
        self.assertIsInstance(inner, keras.Sequential)
        self.assertIsInstance(inner.get_layer("d1"), MaskedDense)
        self.assertIsInstance(prunable.get_layer("block").get_layer("block_conv"), MaskedConv2D)
        self.assertIsInstance(prunable.layers[2], keras.layers.Reshape)

    def test_original_model_is_left_alone(self):
        model = _sequential()
        before = [w.copy() for w in model.get_weights()]
        prunable = make_prunable(model)
        prunable.get_layer("out").mask.assign(tf.zeros_like(prunable.get_layer("out").mask))
        self.assertNotIsInstance(model.get_layer("out"), MaskedDense)
        for a, b in zip(before, model.get_weights()):
            self.assertAllEqual(a, b)


class ChoosingTest(tf.test.TestCase):
    def _groups(self, model):
        return {layer.name: layer.pruning_group for layer in masked_layers(model)}

    def test_default_groups(self):
        self.assertEqual(self._groups(make_prunable(_sequential())),
                         {"conv": "conv", "hidden": "fc", "out": "output"})
        # Through the softmax (no weights), logits is still the output layer.
        self.assertEqual(self._groups(make_prunable(_functional())),
                         {"conv_a": "conv", "conv_b": "conv", "logits": "output"})
        self.assertEqual(self._groups(make_prunable(_nested())),
                         {"d1": "fc", "d2": "fc", "block_conv": "conv", "head": "output"})

    def test_prune_by_names_types_and_predicate(self):
        model = _sequential()
        self.assertEqual(list(self._groups(make_prunable(model, prune=["conv", "out"]))), ["conv", "out"])
        self.assertEqual(list(self._groups(make_prunable(model, prune="hidden"))), ["hidden"])
        self.assertEqual(list(self._groups(make_prunable(model, prune=keras.layers.Dense))), ["hidden", "out"])
        self.assertEqual(list(self._groups(make_prunable(model, prune=lambda layer: layer.name != "out"))),
                         ["conv", "hidden"])
        unpruned = make_prunable(model, prune="hidden").get_layer("out")
        self.assertEqual(type(unpruned), keras.layers.Dense)

    def test_groups_by_names_types_and_callable(self):
        model = _sequential()
        self.assertEqual(self._groups(make_prunable(model, groups={"output": ["hidden", "out"]})),
                         {"conv": "conv", "hidden": "output", "out": "output"})
        self.assertEqual(self._groups(make_prunable(model, groups={"fc": keras.layers.Layer})),
                         {"conv": "fc", "hidden": "fc", "out": "fc"})
        self.assertEqual(self._groups(make_prunable(
            model, groups=lambda layer: "conv" if layer.name == "hidden" else None)),
            {"conv": "conv", "hidden": "conv", "out": "output"})

    def test_bad_choices_are_one_line_errors(self):
        model = _sequential()
        cases = [
            (dict(prune=["nope"]), "has no layer named 'nope'"),
            (dict(prune=["flat"]), "layer 'flat' (Flatten) cannot be pruned"),
            (dict(prune=[]), "chooses no Dense or Conv2D layer"),
            (dict(prune=3), "is not 'all', layer names"),
            (dict(groups={"big": ["out"]}), "'big' is not a pruning group"),
            (dict(groups={"fc": ["out"], "output": ["out"]}), "layer 'out' is in both 'fc' and 'output'"),
            (dict(prune=["conv"], groups={"output": ["out"]}), "layer 'out' is given a pruning group but is not pruned"),
        ]
        for kwargs, expected in cases:
            with self.assertRaises(errors.LotteryError, msg=str(kwargs)) as caught:
                make_prunable(model, **kwargs)
            self.assertIn(expected, str(caught.exception))
            self.assertNotIn("\n", str(caught.exception))


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__(name="mine")
        self.dense = keras.layers.Dense(2)

    def call(self, x):
        return self.dense(x)


class _NoConfig(keras.layers.Layer):
    # A function argument: Keras cannot record it as a config by itself.
    def __init__(self, function):
        super().__init__(name="apply")
        self.function = function

    def call(self, x):
        return self.function(x)


class RefusalTest(tf.test.TestCase):
    def _refused(self, model, expected, **kwargs):
        with self.assertRaises(errors.LotteryError) as caught:
            make_prunable(model, **kwargs)
        message = str(caught.exception)
        self.assertNotIn("\n", message)
        for part in expected:
            self.assertIn(part, message)
        return message

    def test_subclassed_model(self):
        model = _Subclassed()
        model(np.zeros((1, 3), np.float32))
        self._refused(model, ["model 'mine' is a subclassed Keras model (_Subclassed)",
                              "build it as a functional model"])
        inputs = keras.Input((3,))
        self._refused(keras.Model(inputs, model(inputs)), ["'mine' (inside 'model", "subclassed"])

    def test_unconvertible_layers(self):
        inputs = keras.Input((4, 4, 2))
        x = keras.layers.Conv2DTranspose(2, 2, name="up")(inputs)
        x = keras.layers.Conv2D(4, 3, groups=2, name="grouped")(x)
        model = keras.Model(inputs, keras.layers.Dense(2, name="out")(keras.layers.Flatten()(x)))
        self._refused(model, ["layer 'up' (Conv2DTranspose, a subclass of Conv2D)",
                              "prune=lambda layer: layer.name != 'up'"])
        self._refused(model, ["layer 'grouped' (Conv2D with groups=2)"],
                      prune=lambda layer: layer.name != "up")
        # Leaving both out, as the messages say, works.
        prunable = make_prunable(model, prune=lambda layer: layer.name not in ("up", "grouped"))
        self.assertEqual([layer.name for layer in masked_layers(prunable)], ["out"])

    def test_layer_that_cannot_be_copied(self):
        inputs = keras.Input((3,))
        model = keras.Model(inputs, keras.layers.Dense(2)(_NoConfig(tf.math.square)(inputs)))
        self._refused(model, ["layer 'apply' (_NoConfig) cannot be copied", "get_config()"])

    def test_not_a_tf_keras_model(self):
        self._refused(keras.layers.Dense(3), ["needs a tf_keras functional or Sequential model"])


class TrainingTest(tf.test.TestCase):
    def test_pruned_weights_stay_exactly_zero_through_training(self):
        keras.utils.set_random_seed(0)
        model = make_prunable(own_fixtures.residual_cnn((8, 8, 1), 2))
        rng = np.random.default_rng(0)
        for layer in masked_layers(model):
            mask = (rng.random(layer.mask.shape) < 0.5).astype(np.float32)
            layer.mask.assign(mask)
            layer.kernel.assign(layer.kernel * mask)  # as the lottery's rewind does
        model.compile(keras.optimizers.AdamW(0.01, weight_decay=0.1),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        x = rng.random((64, 8, 8, 1)).astype(np.float32)
        model.fit(x, rng.integers(0, 2, 64), batch_size=16, epochs=3, verbose=0)
        for layer in masked_layers(model):
            pruned = layer.mask.numpy() == 0
            self.assertTrue(pruned.any() and (~pruned).any())
            self.assertAllEqual(layer.kernel.numpy()[pruned], np.zeros(pruned.sum()), layer.name)
            # ...while the survivors trained.
            self.assertGreater(np.count_nonzero(layer.kernel.numpy()[~pruned]), 0)
