"""Random layers (dropout, noise, augmentation) that draw as a pure function of the step.

Keras's random layers draw from stateful random ops whose position lives in
the process, not in the model: a round resumed from a checkpoint, or started
in a new process, would draw other dropout masks than an uninterrupted run
and end with other weights and masks. Here each random layer draws with
stateless ops seeded by (its own seed, the optimizer's iteration count); the
count is zeroed when a round starts and saved in every checkpoint, so a
round's draws are the same however often it is stopped and resumed.
"""

import tensorflow as tf
from tf_keras.src import backend
from tf_keras.src.engine.base_layer import BaseRandomLayer


class _StepSeeded(backend.RandomGenerator):
    """Stateless draws seeded by (seed, step), `step` read when the op runs."""

    @tf.__internal__.tracking.no_automatic_dependency_tracking
    def __init__(self, seed, step):
        super().__init__(seed, rng_type=self.RNG_STATELESS)
        self._step = step  # not tracked: the optimizer owns (and checkpoints) it
        self._maybe_init()

    def make_seed_for_stateless_op(self):
        return tf.stack([tf.constant(self._seed, tf.int64), tf.cast(self._step, tf.int64)])


def random_layers(model):
    """The model's random layers (nested ones included), in a fixed order."""
    return [layer for layer in model.submodules if isinstance(layer, BaseRandomLayer)]


def seed_by_step(model, seed):
    """Makes every random layer of compiled `model` draw by (seed, layer, iteration).

    Args:
      model: a compiled Keras model (its optimizer's iteration count is the step).
      seed: the model's seed; layer i draws with seed * 1000 + i.

    Returns:
      The random layers changed (none for a model without random layers).
    """
    layers = random_layers(model)
    for i, layer in enumerate(layers):
        # Assigned past Keras's attribute tracking: the generator is no weight.
        object.__setattr__(layer, "_random_generator",
                           _StepSeeded(int(seed) * 1000 + i, model.optimizer.iterations))
    return layers
