"""Optimizers by name (the registry behind --optimizer) and the learning-rate schedule."""

import tensorflow as tf
import tf_keras as keras

from lottery_tf.registry import Registry

OPTIMIZERS = Registry("optimizer")


@keras.utils.register_keras_serializable(package="lottery_tf")
class WarmupStepSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0, then the base rate times `factor` per drop passed.

    The optimizer's iteration count is reset at each round start, so every
    round replays the same schedule (as the paper retrains from scratch).
    """

    def __init__(self, learning_rate, warmup_iterations=0, drops=(), factor=0.1):
        self.learning_rate = float(learning_rate)
        self.warmup_iterations = int(warmup_iterations)
        self.drops = tuple(int(d) for d in drops)
        self.factor = float(factor)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        rate = tf.constant(self.learning_rate, tf.float32)
        for drop in self.drops:
            rate = tf.where(step >= drop, rate * self.factor, rate)
        if self.warmup_iterations:
            rate = rate * tf.minimum(1.0, (step + 1.0) / self.warmup_iterations)
        return rate

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "warmup_iterations": self.warmup_iterations,
            "drops": list(self.drops),
            "factor": self.factor,
        }


def make_optimizer(name, learning_rate, momentum=0.0, weight_decay=0.0,
                   warmup_iterations=0, lr_drops=(), lr_drop_factor=0.1):
    """Registered optimizer `name`, optional decoupled weight decay and schedule.

    Weight decay shrinks raw kernels, so pruned entries (already 0) stay 0.
    """
    if warmup_iterations or lr_drops:
        learning_rate = WarmupStepSchedule(learning_rate, warmup_iterations, lr_drops, lr_drop_factor)
    return OPTIMIZERS.get(name)(learning_rate, momentum=momentum, weight_decay=weight_decay or None)


def for_config(config):
    """The optimizer `config` describes (a fresh one, with its schedule)."""
    return make_optimizer(
        config.optimizer, config.learning_rate, config.momentum, config.weight_decay,
        config.warmup_iterations, config.lr_drop_iterations(), config.lr_drop_factor,
    )


@OPTIMIZERS.register("adam")
def adam(learning_rate, momentum, weight_decay):
    del momentum  # Adam has its own moments.
    return keras.optimizers.Adam(learning_rate, weight_decay=weight_decay)


@OPTIMIZERS.register("sgd")
def sgd(learning_rate, momentum, weight_decay):
    return keras.optimizers.SGD(learning_rate, momentum=momentum, weight_decay=weight_decay)
