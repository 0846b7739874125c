"""A Ctrl-C is honoured at the next training step even if its KeyboardInterrupt was swallowed."""

import numpy as np
import tensorflow as tf
import tf_keras as keras

from lottery_tf import interrupts
from lottery_tf.nn.layers import MaskedDense
from lottery_tf.train import fit as training


class InterruptCheckTest(tf.test.TestCase):
    def test_a_recorded_ctrl_c_stops_fit_at_the_next_step(self):
        model = keras.Sequential([keras.Input((4,)), MaskedDense(3)])
        training.compile_model(model, keras.optimizers.SGD(0.1), False, 1)
        data = tf.data.Dataset.from_tensors((np.ones((2, 4), np.float32), np.zeros(2, np.int64))).repeat()
        steps = []
        record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: steps.append(batch))
        evaluate = lambda: dict.fromkeys(training.CURVE_KEYS, 0.0)  # noqa: E731
        training.train_round(model, data, evaluate, 5, 5, [record], verbose=0)
        self.assertLen(steps, 5)  # nothing recorded: the round runs through
        del steps[:]
        interrupts._requested.set()  # what the SIGINT handler does, whatever became of its exception
        try:
            with self.assertRaises(KeyboardInterrupt):
                training.train_round(model, data, evaluate, 5, 5, [record], verbose=0)
        finally:
            interrupts._requested.clear()
        self.assertLen(steps, 1)
