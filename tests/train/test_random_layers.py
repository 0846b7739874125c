"""Random layers draw as a pure function of (seed, layer, step): resumable dropout."""

import numpy as np
import tensorflow as tf
import tf_keras as keras

from lottery_tf.train import random_layers


def _model():
    inputs = keras.Input((64,))
    x = keras.layers.Dropout(0.5, name="drop")(inputs)
    x = keras.layers.GaussianNoise(1.0, name="noise")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    model.compile(keras.optimizers.SGD(0.1), "mse")
    return model


class StepSeededTest(tf.test.TestCase):
    def test_draws_depend_on_seed_and_step_only(self):
        x = np.ones((4, 64), np.float32)
        a, b = _model(), _model()
        b.set_weights(a.get_weights())
        weights_before = [v.name for v in a.weights]
        self.assertLen(random_layers.seed_by_step(a, 3), 2)
        random_layers.seed_by_step(b, 3)
        self.assertEqual([v.name for v in a.weights], weights_before)  # no new weights
        first = a(x, training=True).numpy()
        self.assertAllEqual(a(x, training=True), first)   # same step, same draws
        self.assertAllEqual(b(x, training=True), first)   # another model, same seed
        self.assertNotAllClose(first, a(x, training=False))  # it does drop
        a.optimizer.iterations.assign(1)
        second = a(x, training=True).numpy()
        self.assertNotAllClose(second, first)
        a.optimizer.iterations.assign(0)
        self.assertAllEqual(a(x, training=True), first)   # back to step 0: the same again
        random_layers.seed_by_step(b, 4)
        self.assertNotAllClose(b(x, training=True), first)

    def test_model_without_random_layers_is_left_alone(self):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        model.compile("sgd", "mse")
        self.assertEqual(random_layers.seed_by_step(model, 0), [])
