"""Ctrl-C that is always honoured, even where a library swallows the KeyboardInterrupt.

Python raises KeyboardInterrupt wherever the main thread happens to be when
SIGINT arrives. Seen here: a Ctrl-C landing while a round was still being set
up under load (tracing and compiling inside TensorFlow and Keras) was lost,
and the run trained on to the end. So the handler also records the request,
and the training loop checks it after every step (`fit.InterruptCheck`).
"""

import signal
import threading

_requested = threading.Event()


def _on_sigint(signum, frame):
    _requested.set()
    raise KeyboardInterrupt


def watch():
    """Installs the handler (the command line does, in its main thread)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_sigint)


def requested():
    """Whether Ctrl-C was pressed since `watch`."""
    return _requested.is_set()
