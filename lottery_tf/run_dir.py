"""The run directory: where each step's outputs live, and how they are written.

Layout (every file written whole or not at all: temp file, fsync, rename):

    config.json               the full configuration of the run
    dataset.json              dataset name, input shape, class count, sizes
    theta0.npz                θ0: every model weight at initialization
    rewind.npz                with --rewind_iteration=k: the weights after k
                              iterations of round 0, where later rounds start
    summary.csv               one row per completed round
    round_000/mask.npz        masks the round trained with
    round_000/weights.npz     weights at the end of the round's training
    round_000/metrics.json    the round's metrics; written last, so its
                              presence is what marks the round complete
    tensorboard/              TensorBoard scalars, per round and per iteration
    branches/NAME/            controls (see branches.py), laid out alike

Each step skips when its outputs exist, so rerunning a command resumes it.

Integrity: each directory's MANIFEST.json holds the SHA-256 of every file
written there, recorded after the file is in place. Reads check it: a
truncated or altered file is reported by name and never used, and a file the
manifest does not list (the process died before recording it) counts as not
written. Directories without a manifest (made before lottery-tf 0.1 kept
one) are read unchecked. Nothing is ever unpickled.
"""

import csv
import fcntl
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
import zipfile

import numpy as np

from lottery_tf import errors, faults
from lottery_tf.config import Config

DEFAULT_ROOT = "runs"
MANIFEST = "MANIFEST.json"


class DamagedFileError(errors.LotteryError):
    """A file whose bytes do not match its manifest checksum."""


def _write_file(path, data):
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        faults.point("write")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_path(directory)


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
        raise DamagedFileError(f"{manifest} is damaged (not valid JSON); it cannot vouch for its files") from None


def _atomic_write(path, data):
    """Writes `data` to `path` whole or not at all, then records its checksum."""
    try:
        _write_file(path, data)
        manifest = _manifest_path(path)
        entries = _read_manifest(manifest) or {}
        entries[os.path.basename(path)] = hashlib.sha256(data).hexdigest()
        _write_file(manifest, (json.dumps(entries, indent=1, sort_keys=True) + "\n").encode())
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from None


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
            raise DamagedFileError(f"{path} is not in its directory's {MANIFEST}: it was never completely written")
        if hashlib.sha256(data).hexdigest() != expected:
            raise DamagedFileError(
                f"{path} is damaged (checksum mismatch: truncated or altered); it was not used. "
                "Delete it (and its round) to have it recomputed"
            )
    return data


def write_json(path, value):
    _atomic_write(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def read_json(path):
    try:
        return json.loads(_read_checked(path))
    except ValueError:
        raise DamagedFileError(f"{path} is damaged (not valid JSON)") from None


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
        raise DamagedFileError(f"{path} is damaged ({e})") from None


class RunDir:
    """Paths and reads/writes of one run directory."""

    def __init__(self, path):
        self.path = path

    @classmethod
    def for_config(cls, config):
        return cls(config.output_dir or os.path.join(DEFAULT_ROOT, config.default_run_name()))

    @property
    def config_path(self):
        return os.path.join(self.path, "config.json")

    @property
    def theta0_path(self):
        return os.path.join(self.path, "theta0.npz")

    @property
    def rewind_path(self):
        return os.path.join(self.path, "rewind.npz")

    @property
    def tensorboard_dir(self):
        return os.path.join(self.path, "tensorboard")

    @property
    def dataset_path(self):
        return os.path.join(self.path, "dataset.json")

    @property
    def summary_path(self):
        return os.path.join(self.path, "summary.csv")

    def round_dir(self, r):
        return os.path.join(self.path, f"round_{r:03d}")

    def mask_path(self, r):
        return os.path.join(self.round_dir(r), "mask.npz")

    def weights_path(self, r):
        return os.path.join(self.round_dir(r), "weights.npz")

    def metrics_path(self, r):
        return os.path.join(self.round_dir(r), "metrics.json")

    @property
    def changes_path(self):
        return os.path.join(self.path, "hyperparameter_changes.json")

    def check(self, config):
        """Refuses, before anything is written, a path this run cannot use."""
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise errors.LotteryError(f"--output_dir {self.path} exists and is not a directory")
        parent = self.path
        while not os.path.exists(parent):
            parent = os.path.dirname(os.path.abspath(parent))
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
            raise errors.LotteryError(f"--output_dir {self.path} is not writable ({parent})")
        if os.path.exists(self.config_path):
            self._check_same_hyperparameters(config)
        elif os.path.isdir(self.path) and os.listdir(self.path):
            raise errors.LotteryError(
                f"--output_dir {self.path} is not empty and holds no lottery-tf run "
                "(no config.json); choose another directory"
            )

    def _check_same_hyperparameters(self, config):
        try:
            saved = Config.from_dict(read_json(self.config_path)).hyperparameters()
        except (OSError, ValueError, TypeError) as e:
            raise errors.LotteryError(f"cannot read {self.config_path}: {e}") from None
        wanted = config.hyperparameters()
        differing = [k for k in wanted if saved.get(k) != wanted[k]]
        if differing and not config.allow_changed_hyperparameters:
            details = ", ".join(f"{k}={saved.get(k)!r} (now {wanted[k]!r})" for k in differing)
            raise errors.LotteryError(
                f"run directory {self.path} was made with other hyperparameters: "
                f"{details}; use another --output_dir (or --allow_changed_hyperparameters "
                "to continue it with these, recorded in hyperparameter_changes.json)"
            )
        return {k: [saved.get(k), wanted[k]] for k in differing}

    def create(self, config, dataset_info):
        """Takes the run's lock, then saves the configuration and dataset facts.

        `dataset_info` (input shape, class count, ...) lets later tools rebuild
        the model without loading the dataset. A change of hyperparameters
        (allowed by --allow_changed_hyperparameters) is appended to
        hyperparameter_changes.json with the first round it applies to, and
        that round's mid-round checkpoints (made with the old ones) are dropped.
        """
        try:
            os.makedirs(self.path, exist_ok=True)
            self.lock()
            changes = self._check_same_hyperparameters(config) if os.path.exists(self.config_path) else {}
            self._remove_stale_temp_files()
            if changes:
                first = 0
                while self.round_complete(first):
                    first += 1
                history = read_json(self.changes_path) if os.path.exists(self.changes_path) else []
                history.append({"from_round": first, "changes": changes,
                                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
                write_json(self.changes_path, history)
                shutil.rmtree(self.checkpoint_dir(first), ignore_errors=True)
            write_json(self.config_path, config.to_dict())
            write_json(self.dataset_path, dataset_info)
        except OSError as e:
            raise errors.LotteryError(f"--output_dir {self.path}: {e.strerror}") from None

    def lock(self):
        """Takes this directory's writer lock, or refuses if another process has it.

        An flock: the kernel drops it when its process ends, however it ends,
        so a crashed run never leaves it stuck.
        """
        if getattr(self, "_lock_fd", None) is not None:
            return
        fd = os.open(os.path.join(self.path, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise errors.LotteryError(
                f"run directory {self.path} is in use by {holder}; wait for it to finish "
                "or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()}".encode())
        self._lock_fd = fd

    def unlock(self):
        if getattr(self, "_lock_fd", None) is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _remove_stale_temp_files(self):
        # Left by a process killed mid-write; never read, so safe to drop.
        for root, dirs, files in os.walk(self.path):
            # Branch processes write under branches/ concurrently; not ours.
            dirs[:] = [d for d in dirs if d != "branches"]
            for name in files:
                if name.startswith(".tmp-"):
                    os.unlink(os.path.join(root, name))

    def round_complete(self, r):
        return is_recorded(self.metrics_path(r))

    def checkpoint_dir(self, r):
        return os.path.join(self.round_dir(r), "checkpoints")

    def save_round(self, r, weights, metrics, next_masks=None):
        """Writes round r's outputs; metrics.json last marks it complete.

        The round's mid-round checkpoints are dropped once it is complete.
        """
        os.makedirs(self.round_dir(r), exist_ok=True)
        write_arrays(self.weights_path(r), weights)
        if next_masks is not None:
            os.makedirs(self.round_dir(r + 1), exist_ok=True)
            write_arrays(self.mask_path(r + 1), next_masks)
        write_json(self.metrics_path(r), metrics)
        shutil.rmtree(self.checkpoint_dir(r), ignore_errors=True)

    def load_masks(self, r):
        path = self.mask_path(r)
        if not os.path.exists(path):
            raise errors.LotteryError(
                f"run directory {self.path} is damaged: {path} is missing although "
                f"round {r - 1} is complete"
            )
        return read_arrays(path)

    def write_summary(self, rows):
        if not rows:
            return
        columns = list(rows[0])
        for row in rows[1:]:
            columns += [c for c in row if c not in columns]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        _atomic_write(self.summary_path, text.getvalue().encode())
