"""oneDNN, TensorFlow's fast CPU kernels, on by default for lottery-tf's commands.

This TensorFlow build runs its CPU convolutions on Eigen on an AVX2 processor
unless `TF_ENABLE_ONEDNN_OPTS=1` is set. With oneDNN, VGG-19's training step
is 2.6x faster here (5117 -> 1965 ms) and ResNet-20's 1.4x (705 -> 515 ms;
Conv-2's is not shown faster; docs/BENCHMARKS.md), and `--deterministic` runs
stay bitwise reproducible (Conv-2 and ResNet-20, twice each). Networks that
XLA compiles whole (LeNet) do not use it. The variable is read once, when
TensorFlow is imported, so the commands set it first; a user's own
`TF_ENABLE_ONEDNN_OPTS=0` wins. Other processors (Arm) keep TensorFlow's own
default.
"""

import os
import platform
import sys

VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def default_on():
    """Sets TF_ENABLE_ONEDNN_OPTS=1 unless set, on x86-64, before TensorFlow is imported.

    Returns whether the variable was set here.
    """
    if VARIABLE in os.environ or "tensorflow" in sys.modules:
        return False
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    os.environ[VARIABLE] = "1"
    return True


def enabled():
    """Whether TensorFlow's CPU kernels run on oneDNN in this process; None if it cannot tell."""
    try:  # no public API in TF 2.21; a TensorFlow without this one must still run
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None
