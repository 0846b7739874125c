"""lottery-tf: find, study and ship lottery tickets with TensorFlow/Keras.

The names below are the public Python API; they are imported on first use,
so `import lottery_tf` (and the command line's start) stays light.
"""

import importlib

__version__ = "0.2.0.dev0"

_PUBLIC = {
    "Config": "lottery_tf.config",
    "run": "lottery_tf.lottery.runner",
    "run_branch": "lottery_tf.lottery.branches",
    "make_report": "lottery_tf.report",
    "MaskedDense": "lottery_tf.nn.layers",
    "MaskedConv2D": "lottery_tf.nn.layers",
    "make_prunable": "lottery_tf.nn.prunable",
    "Data": "lottery_tf.train.own_data",
}


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'lottery_tf' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_PUBLIC))
