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
    With `held=True` the schedule can be held at one step (`hold_rate`), for
    rounds that train at the schedule's final rate (--reset=finetune).
    """

    def __init__(self, learning_rate, warmup_iterations=0, drops=(), factor=0.1, held=False):
        self.learning_rate = float(learning_rate)
        self.warmup_iterations = int(warmup_iterations)
        self.drops = tuple(int(d) for d in drops)
        self.factor = float(factor)
        # A variable: changing it needs no retrace of the compiled train step.
        self.hold = tf.Variable(-1.0, trainable=False, name="lr_hold") if held else None

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        if self.hold is not None:
            step = tf.where(self.hold >= 0.0, self.hold, step)
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
                   warmup_iterations=0, lr_drops=(), lr_drop_factor=0.1, holdable=False):
    """Registered optimizer `name`, optional decoupled weight decay and schedule.

    Weight decay shrinks raw kernels, so pruned entries (already 0) stay 0.
    `holdable`: a schedule's step can be held (`hold_rate`).
    """
    if warmup_iterations or lr_drops:
        learning_rate = WarmupStepSchedule(learning_rate, warmup_iterations, lr_drops, lr_drop_factor,
                                           held=holdable)
    return OPTIMIZERS.get(name)(learning_rate, momentum=momentum, weight_decay=weight_decay or None)


def for_config(config):
    """The optimizer `config` describes (a fresh one, with its schedule)."""
    return make_optimizer(
        config.optimizer, config.learning_rate, config.momentum, config.weight_decay,
        config.warmup_iterations, config.lr_drop_iterations(), config.lr_drop_factor,
        holdable=config.reset == "finetune",
    )


def hold_rate(optimizer, step):
    """Trains `optimizer` at its schedule's rate of `step` from now on; None: follow it.

    A no-op for a constant rate (it is its own final rate) or a schedule made
    without `holdable`.
    """
    schedule = getattr(optimizer, "_learning_rate", None)
    hold = getattr(schedule, "hold", None)
    if hold is not None:
        hold.assign(-1.0 if step is None else float(step))
    elif step is not None and isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        raise ValueError("hold_rate needs an optimizer made with holdable=True")


@OPTIMIZERS.register("adam")
def adam(learning_rate, momentum, weight_decay):
    del momentum  # Adam has its own moments.
    return keras.optimizers.Adam(learning_rate, weight_decay=weight_decay)


@OPTIMIZERS.register("sgd")
def sgd(learning_rate, momentum, weight_decay):
    return keras.optimizers.SGD(learning_rate, momentum=momentum, weight_decay=weight_decay)
