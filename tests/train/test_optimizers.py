"""Learning-rate schedules and optimizer settings (from test_extensions)."""

import tensorflow as tf

from lottery_tf.train import optimizers


class ScheduleTest(tf.test.TestCase):
    def test_warmup_and_drops(self):
        lr = optimizers.WarmupStepSchedule(0.1, warmup_iterations=10, drops=(20, 30), factor=0.1)
        values = [float(lr(s)) for s in (0, 4, 9, 15, 20, 29, 30, 100)]
        self.assertAllClose(values, [0.01, 0.05, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
        optimizer = optimizers.make_optimizer("sgd", 0.1, momentum=0.9, weight_decay=1e-4,
                                              warmup_iterations=10, lr_drops=(20,))
        self.assertAllClose(optimizer.momentum, 0.9)
        self.assertAllClose(optimizer.weight_decay, 1e-4)
