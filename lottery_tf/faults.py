"""Fail points for crash-injection tests (off unless LOTTERY_TF_FAULT is set).

`LOTTERY_TF_FAULT=NAME` (or `NAME:N`) kills the process with SIGKILL the
first (or N-th) time it reaches fail point NAME, as a power cut or the OOM
killer would: no cleanup, no exception handlers, no flushed buffers. Points:

  mid_fit        inside model.fit, right after a mid-round checkpoint
  after_prune    a round's next masks are computed, nothing is saved yet
  write          a file's bytes are in its temp file, not yet renamed
  export         an export is written to its temp directory, not yet renamed
"""

import os
import signal

_counts = {}


def point(name):
    spec = os.environ.get("LOTTERY_TF_FAULT", "")
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == int(nth or 1):
        die()


def die():
    """SIGKILL this process (tests that stay in one process replace it)."""
    os.kill(os.getpid(), signal.SIGKILL)


def reset():
    """Forgets how often each point was reached (for several runs in one process)."""
    _counts.clear()
