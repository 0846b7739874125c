"""Pruning criteria by name (the registry behind --criterion).

A criterion is one file here: a `base.Criterion` subclass registered with
`@CRITERIA.register("name")`, imported below so that the name is known.
"""

from lottery_tf.registry import Registry

CRITERIA = Registry("criterion")


def get(name):
    """A fresh instance of registered criterion `name`."""
    return CRITERIA.get(name)()


# Built-in criteria register themselves on import.
from lottery_tf.pruning.criteria import magnitude  # noqa: E402,F401
