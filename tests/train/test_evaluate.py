"""The compiled evaluation reports what `model.evaluate` reports, bit for bit."""

import numpy as np
import tensorflow as tf
import tf_keras as keras

from lottery_tf.nn.layers import MaskedDense, masked_layers
from lottery_tf.train import fit as training
from lottery_tf.train import optimizers
from lottery_tf.train.evaluate import Evaluator


def _sets(sizes, batch_size, seed=0):
    rng = np.random.default_rng(seed)
    sets = {}
    for name, size in sizes.items():
        x = rng.random((size, 28, 28, 1)).astype(np.float32)
        y = rng.integers(0, 10, size)
        sets[name] = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).cache()
    return sets


def _model(jit_compile, regularized=False):
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              MaskedDense(16, activation="relu", kernel_initializer=keras.initializers.GlorotNormal(3)),
                              MaskedDense(10, kernel_initializer=keras.initializers.GlorotNormal(4))])
    if regularized:  # two, so that the order of the sums matters
        model.add_loss(lambda: 1e-3 * tf.reduce_sum(tf.square(masked_layers(model)[0].kernel)))
        model.add_loss(lambda: 1e-4 * tf.reduce_sum(tf.abs(masked_layers(model)[1].kernel)))
    training.compile_model(model, optimizers.make_optimizer("adam", 1e-3), jit_compile, 1)
    return model


class EvaluatorTest(tf.test.TestCase):
    def _check_equals_keras(self, model, sets, jit_compile):
        got = Evaluator(model, sets, jit_compile=jit_compile)()
        for name, dataset in sets.items():
            want = model.evaluate(dataset, verbose=0, return_dict=True)
            self.assertEqual(got[f"{name}_loss"], want["loss"], name)
            self.assertEqual(got[f"{name}_accuracy"], want["accuracy"], name)

    def test_equals_model_evaluate_with_and_without_xla(self):
        # Uneven sets: full batches of 64 and a smaller last batch in each.
        sets = _sets({"val": 300, "test": 1000}, 64)
        for jit_compile in (False, True):
            with self.subTest(jit_compile=jit_compile):
                model = _model(jit_compile)
                x, y = next(iter(sets["val"]))
                model.fit(x, y, epochs=3, verbose=0)  # not the initial weights
                self._check_equals_keras(model, sets, jit_compile)

    def test_regularization_losses_count_as_in_keras(self):
        model = _model(False, regularized=True)
        self.assertNotEmpty(model.losses)
        self._check_equals_keras(model, _sets({"val": 100}, 32), False)

    def test_a_loss_given_by_name_or_function_as_keras_takes_it(self):
        for loss in ("sparse_categorical_crossentropy", keras.losses.sparse_categorical_crossentropy):
            with self.subTest(loss=loss):
                model = _model(False)
                model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
                self._check_equals_keras(model, _sets({"val": 100}, 32), False)

    def test_reads_the_data_once_and_traces_once(self):
        model = _model(False)
        reads = []
        batches = list(_sets({"val": 70}, 32)["val"].as_numpy_iterator())

        def generate():
            reads.append(1)
            yield from batches

        spec = (tf.TensorSpec((None, 28, 28, 1), tf.float32), tf.TensorSpec((None,), tf.int64))
        evaluator = Evaluator(model, {"val": tf.data.Dataset.from_generator(generate, output_signature=spec)})
        first = evaluator()
        kernel = masked_layers(model)[0].kernel
        kernel.assign(kernel * 0.5)
        second = evaluator()
        self.assertLen(reads, 1)
        self.assertNotEqual(first["val_loss"], second["val_loss"])  # it sees the new weights
        self.assertEqual(evaluator._function.experimental_get_tracing_count(), 1)

    def test_empty_set_is_refused(self):
        empty = tf.data.Dataset.from_tensor_slices((np.zeros((0, 28, 28, 1), np.float32),
                                                    np.zeros((0,), np.int64))).batch(8)
        with self.assertRaisesRegex(ValueError, "empty"):
            Evaluator(_model(False), {"val": empty})()
