"""TensorFlow without its C++ start-up chatter (for commands and the export)."""

import contextlib
import os
import sys


@contextlib.contextmanager
def quiet_stderr():
    """Mutes C++ stderr (file descriptor 2) at TF_CPP_MIN_LOG_LEVEL >= 2.

    TensorFlow 2.21 prints its start-up banner (oneDNN, CUDA stubs, cuInit)
    before it reads TF_CPP_MIN_LOG_LEVEL, and the TFLite converter logs MLIR
    passes the same way, so that variable alone cannot hide them. Set
    TF_CPP_MIN_LOG_LEVEL=0 to see everything. Python exceptions still
    surface (after restoring).
    """
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") < "2":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def start_tensorflow_quietly():
    """Imports TensorFlow and finds its devices with C++ stderr muted."""
    with quiet_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices()
