"""An execution compiled whole trains bitwise as Keras's loop of compiled steps, where it applies."""

from unittest import mock

import numpy as np
import tensorflow as tf
import tf_keras as keras

from lottery_tf.nn.layers import MaskedDense
from lottery_tf.train import compiled_loop, random_layers
from lottery_tf.train import fit as training


def _model(whole_loop, jit_compile=True, steps_per_execution=4):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), MaskedDense(8, activation="relu"), keras.layers.Dropout(0.3),
                              MaskedDense(3)])
    model.layers[0].assign_mask(np.random.default_rng(1).random((6, 8)) > 0.4)
    optimizer = keras.optimizers.Adam(0.05)
    if whole_loop:
        training.compile_model(model, optimizer, jit_compile, steps_per_execution)
    else:  # Keras's own train function, as before this module
        model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                      jit_compile=jit_compile, steps_per_execution=steps_per_execution)
    random_layers.seed_by_step(model, 7)
    return model


def _data():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 6)).astype(np.float32), rng.integers(0, 3, 40)
    return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(5, drop_remainder=True)


def _train(model, data, steps):
    logs = []
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, l: logs.append((batch, dict(l))))
    model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[record])
    return logs


def _is_whole_loop(model):
    return "_whole_loop" in model.train_function.python_function.__qualname__


class CompiledLoopTest(tf.test.TestCase):
    def test_same_weights_logs_and_counters_as_keras_loop(self):
        # 10 steps at 4 per execution: the last execution is lowered to 2; dropout draws by step.
        ours, keras_own = _model(True), _model(False)
        for _ in range(2):  # a second fit continues from the first, as the next round does
            got, want = _train(ours, _data(), 10), _train(keras_own, _data(), 10)
            self.assertEqual([b for b, _ in got], [3, 7, 9])
            self.assertEqual(got, want)
        self.assertTrue(_is_whole_loop(ours))
        self.assertFalse(_is_whole_loop(keras_own))
        for a, b in zip(ours.get_weights() + ours.optimizer.variables,
                        keras_own.get_weights() + keras_own.optimizer.variables):
            self.assertAllEqual(a, b)
        self.assertEqual(int(ours._train_counter.numpy()), 10)
        self.assertEqual(int(ours.optimizer.iterations.numpy()), 20)
        # Pruned weights stay exactly 0: the masked layers' semantics hold inside the loop.
        kernel, mask = ours.layers[0].kernel.numpy(), ours.layers[0].mask.numpy()
        self.assertTrue(np.all(kernel[mask == 0] == 0))

    def test_keras_loop_where_it_does_not_apply(self):
        for kwargs in ({"jit_compile": False}, {"steps_per_execution": 1}):
            model = _model(True, **kwargs)
            _train(model, _data(), 4)
            self.assertFalse(_is_whole_loop(model), kwargs)
        # Batches of unknown shape cannot be stacked: the same train function falls back to Keras's loop.
        model, keras_own = _model(True), _model(False)
        ragged = _data().unbatch().batch(5)  # batch dimension None
        self.assertEqual(_train(model, ragged, 6), _train(keras_own, ragged, 6))
        self.assertAllClose(model.get_weights(), keras_own.get_weights(), rtol=0, atol=0)
        # An execution's batches above MAX_BYTES are not stacked either: here 4 steps x 5 examples x
        # (6 float32 + 1 int64 label) = 640 bytes.
        real_stack = tf.TensorArray.stack
        for limit, whole in ((640, True), (639, False)):
            stacked = []

            def stack(array, *args, **kwargs):
                stacked.append(array)
                return real_stack(array, *args, **kwargs)

            model, keras_own = _model(True), _model(False)
            with mock.patch.object(compiled_loop, "MAX_BYTES", limit), \
                    mock.patch.object(tf.TensorArray, "stack", stack):
                self.assertEqual(_train(model, _data(), 6), _train(keras_own, _data(), 6))
            self.assertEqual(bool(stacked), whole, limit)
            self.assertAllClose(model.get_weights(), keras_own.get_weights(), rtol=0, atol=0)

    def test_keras_loop_under_another_strategy_even_with_one_replica(self):
        strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
        with strategy.scope():
            model = keras.Sequential([keras.Input((6,)), MaskedDense(3)])
            training.compile_model(model, keras.optimizers.Adam(0.05), True, 4)
        _train(model, _data(), 4)
        self.assertFalse(_is_whole_loop(model))

    def test_recompiling_decides_again(self):
        model = _model(True)
        _train(model, _data(), 4)
        self.assertTrue(_is_whole_loop(model))
        training.compile_model(model, keras.optimizers.Adam(0.05), False, 4)
        _train(model, _data(), 4)
        self.assertFalse(_is_whole_loop(model))
        compiled_loop.install(model)  # installing twice is harmless
        _train(model, _data(), 4)
        self.assertFalse(_is_whole_loop(model))

    def test_a_model_with_its_own_train_function_keeps_it(self):
        class OwnLoop(keras.Sequential):
            def make_train_function(self, force=False):
                self.train_function = super().make_train_function(force)
                self.own_loop_used = True
                return self.train_function

        model = OwnLoop([keras.Input((6,)), MaskedDense(3)])
        training.compile_model(model, keras.optimizers.Adam(0.05), True, 4)
        _train(model, _data(), 4)
        self.assertTrue(model.own_loop_used)
        self.assertFalse(_is_whole_loop(model))
