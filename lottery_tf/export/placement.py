"""Where an export goes: default path, overwrite checks, a staging directory, atomic placement.

An export is written into a temporary directory next to its target, verified
there, and renamed into place; an existing export is replaced only with
--overwrite (and never something that is not an export).
"""

import contextlib
import os
import shutil
import tempfile

from lottery_tf import errors, faults
from lottery_tf.export.ticket_json import TICKET_FILE
from lottery_tf.lottery.storage import fsync_path

DEFAULT_ROOT = "saved_models"


def default_output(ticket, fmt, quantize):
    name = os.path.basename(os.path.normpath(os.path.abspath(ticket.run_dir)))
    suffix = "" if fmt == "saved_model" else ("_tflite_quantized" if quantize else "_tflite")
    return os.path.join(DEFAULT_ROOT, f"{name}_round_{ticket.round:03d}{suffix}")


def _is_export(path):
    return os.path.isfile(os.path.join(path, "assets", TICKET_FILE)) or os.path.isfile(
        os.path.join(path, TICKET_FILE))


def check_output(output, overwrite):
    """Refuses an output path that cannot (or must not) be written."""
    if os.path.lexists(output):
        if not overwrite:
            raise errors.LotteryError(
                f"--output {output} exists; pass --overwrite to replace it")
        if not os.path.isdir(output) or not _is_export(output):
            raise errors.LotteryError(
                f"--output {output} exists and is not a lottery-tf export; not overwriting it")
    parent = os.path.dirname(os.path.abspath(output))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise errors.LotteryError(f"--output {output} is not writable ({parent})")


@contextlib.contextmanager
def staging_dir(output):
    """A temporary directory next to `output`, removed unless `place` moved it.

    Parent directories it had to create are removed again on failure.
    """
    target = os.path.abspath(output)
    parent = os.path.dirname(target)
    created = []
    probe = parent
    while not os.path.exists(probe):
        created.append(probe)
        probe = os.path.dirname(probe)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.tmp-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would hide it from a serving user
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for directory in created:  # deepest first
            try:
                os.rmdir(directory)
            except OSError:
                break
        raise
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def place(tmp, output, overwrite):
    """Renames the finished `tmp` directory to `output` (replacing an old export)."""
    target = os.path.abspath(output)
    _fsync_tree(tmp)
    faults.point("export")
    aside = None
    if os.path.lexists(target):
        check_output(output, overwrite)  # it may have appeared meanwhile
        aside = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.old-",
                                 dir=os.path.dirname(target))
        os.rename(target, os.path.join(aside, "export"))
    try:
        os.rename(tmp, target)
    except BaseException:
        if aside:
            os.rename(os.path.join(aside, "export"), target)
            os.rmdir(aside)
        raise
    fsync_path(os.path.dirname(target))
    if aside:
        shutil.rmtree(aside, ignore_errors=True)


def _fsync_tree(path):
    for root, _, files in os.walk(path):
        for name in files:
            fsync_path(os.path.join(root, name))
        fsync_path(root)


def tree_bytes(path):
    """Bytes of the file at `path`, or of every file under the directory `path`."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(path) for f in files)
