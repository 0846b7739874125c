"""Pruning criteria by name (the registry behind --criterion).

A criterion is one file here: a `base.Criterion` subclass registered with
`@CRITERIA.register("name")`, imported below so that the name is known.

  from the trained round:  magnitude, magnitude_increase, movement,
                           large_init_large_final, large_final_same_sign
  at initialization:       snip, grasp, synflow, magnitude_at_init, random

At-initialization criteria score the round's start weights (θ0, or the
rewind point) under its masks; `network.py` evaluates the network there.
"""

from lottery_tf.registry import Registry

CRITERIA = Registry("criterion")


def get(name, config=None):
    """A fresh instance of registered criterion `name` (with the run's `config`)."""
    return CRITERIA.get(name)(config)


def at_init_names():
    """Registered criteria that do not read the trained weights."""
    return [name for name in CRITERIA.names() if "trained" not in CRITERIA.get(name).reads]


# Built-in criteria register themselves on import.
from lottery_tf.pruning.criteria import magnitude  # noqa: E402,F401,I001
from lottery_tf.pruning.criteria import magnitude_increase  # noqa: E402,F401
from lottery_tf.pruning.criteria import movement  # noqa: E402,F401
from lottery_tf.pruning.criteria import large_init_large_final  # noqa: E402,F401
from lottery_tf.pruning.criteria import large_final_same_sign  # noqa: E402,F401
from lottery_tf.pruning.criteria import snip  # noqa: E402,F401
from lottery_tf.pruning.criteria import grasp  # noqa: E402,F401
from lottery_tf.pruning.criteria import synflow  # noqa: E402,F401
from lottery_tf.pruning.criteria import magnitude_at_init  # noqa: E402,F401
from lottery_tf.pruning.criteria import random_scores  # noqa: E402,F401
