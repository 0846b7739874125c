"""How every file of a run is written and read: whole or not at all, checksummed.

A write goes to a temp file, is fsynced and renamed into place; its SHA-256
is in the directory's MANIFEST.json (written the same way) before the rename,
beside the replaced content's until the rename is done. Reads check it: a
truncated or altered file is reported by name and never used, and a file the
manifest does not list counts as not written. Directories without a manifest (made
before lottery-tf 0.1 kept one) are read unchecked. Nothing is unpickled.
Which file lives where is `run_dir.py`'s business, not this module's.
"""

import hashlib
import io
import json
import os
import tempfile
import zipfile

import numpy as np

from lottery_tf import errors, faults

MANIFEST = "MANIFEST.json"
TEMP_PREFIX = ".tmp-"


class DamagedFileError(errors.LotteryError):
    """A file whose bytes do not match its manifest checksum.

    `path` names the file; what to do about it depends on what the file is,
    which the run directory knows (`RunDir.recovery_advice`).
    """

    def __init__(self, message, path):
        super().__init__(message)
        self.path = path

_UMASK = os.umask(0)
os.umask(_UMASK)
# Storage writes only these; a directory that lost its manifest adopts them.
_ADOPTED_SUFFIXES = (".json", ".npz", ".csv")


def _stage(path, data):
    """The bytes in a fsynced temp file beside `path`; returns its name."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
    try:
        # mkstemp makes the file private (0600); a run's files get the usual
        # permissions (umask), so another user or job can read a shared run.
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _discard(tmp)
        raise
    return tmp


def _commit(tmp, path):
    """Renames the staged temp file to `path` (atomic) and makes that durable."""
    try:
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise
    fsync_path(os.path.dirname(path) or ".")


def _discard(tmp):
    if os.path.exists(tmp):
        os.unlink(tmp)


def _write_file(path, data):
    """Writes `path` whole or not at all (no manifest: used for manifests)."""
    tmp = _stage(path, data)
    try:
        faults.point("write")
    except BaseException:
        _discard(tmp)
        raise
    _commit(tmp, path)


def fsync_path(path):
    """fsync a file or directory by path (a directory: its entries are durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _manifest_path(path):
    return os.path.join(os.path.dirname(path) or ".", MANIFEST)


def _read_manifest(manifest):
    if not os.path.exists(manifest):
        return None
    try:
        with open(manifest) as f:
            return json.load(f)
    except (OSError, ValueError):
        raise DamagedFileError(
            f"{manifest} is damaged (not valid JSON); it cannot vouch for its files", manifest) from None


def _adopted_entries(directory, skip):
    """Checksums of the files already in a directory that has no manifest.

    A manifest that was deleted (a recovery step) must not turn the complete
    files beside it into "never completely written" ones: every file under a
    real name was renamed into place whole, so it is recorded as it is.
    """
    entries = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if (name == skip or name == MANIFEST or name.startswith(TEMP_PREFIX)
                or not name.endswith(_ADOPTED_SUFFIXES) or not os.path.isfile(path)):
            continue
        entries[name] = _file_digest(path)
    return entries


def _hashes(entry):
    """The checksums a manifest entry accepts: one, or two while a file is replaced."""
    if entry is None:
        return []
    return list(entry) if isinstance(entry, list) else [entry]


def _write_manifest(manifest, entries):
    _write_file(manifest, (json.dumps(entries, indent=1, sort_keys=True) + "\n").encode())


def _atomic_write(path, data):
    """Writes `data` to `path` whole or not at all, its checksum recorded.

    The manifest learns the new checksum before the file changes and forgets
    the old one after, so at any instant a kill leaves the file with a
    content the manifest accepts: the old one, or the new one. Writing what
    the file already holds (checked, not assumed) writes nothing.
    """
    digest = hashlib.sha256(data).hexdigest()
    directory, name = os.path.dirname(path) or ".", os.path.basename(path)
    manifest = os.path.join(directory, MANIFEST)
    try:
        entries = _read_manifest(manifest)
        if entries is None:
            entries = _adopted_entries(directory, name)
        exists = os.path.exists(path)
        if exists and entries.get(name) == digest and _file_digest(path) == digest:
            return
        tmp = _stage(path, data)
        try:
            faults.point("write")
            entries[name] = (_hashes(entries.get(name)) if exists else []) + [digest]
            if len(entries[name]) == 1:
                entries[name] = digest
            _write_manifest(manifest, entries)
        except BaseException:
            _discard(tmp)
            raise
        _commit(tmp, path)
        if entries[name] != digest:
            entries[name] = digest
            _write_manifest(manifest, entries)
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from None


def _file_digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def is_recorded(path):
    """Whether `path` exists and its manifest lists it (or there is none)."""
    if not os.path.exists(path):
        return False
    entries = _read_manifest(_manifest_path(path))
    return entries is None or os.path.basename(path) in entries


def _read_checked(path):
    with open(path, "rb") as f:
        data = f.read()
    entries = _read_manifest(_manifest_path(path))
    if entries is not None:
        expected = entries.get(os.path.basename(path))
        if expected is None:
            raise DamagedFileError(
                f"{path} is not in its directory's {MANIFEST}: it was never completely written", path)
        if hashlib.sha256(data).hexdigest() not in _hashes(expected):
            raise DamagedFileError(
                f"{path} is damaged (checksum mismatch: truncated or altered); it was not used", path)
    return data


def verify_directory(directory):
    """Checks every file the directory's manifest records that is present.

    Raises `DamagedFileError` for the first one whose bytes do not match.
    """
    entries = _read_manifest(os.path.join(directory, MANIFEST)) or {}
    for name in sorted(entries):
        if os.path.exists(os.path.join(directory, name)):
            _read_checked(os.path.join(directory, name))


def write_json(path, value):
    _atomic_write(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def read_json(path):
    try:
        return json.loads(_read_checked(path))
    except ValueError:
        raise DamagedFileError(f"{path} is damaged (not valid JSON)", path) from None


def write_arrays(path, arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    _atomic_write(path, buffer.getvalue())


def read_arrays(path):
    data = _read_checked(path)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as f:
            return {name: f[name] for name in f.files}
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise DamagedFileError(f"{path} is damaged ({e})", path) from None


def write_text(path, text):
    _atomic_write(path, text.encode())


def read_text(path):
    return _read_checked(path).decode()
