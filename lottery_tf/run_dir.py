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
"""

import csv
import io
import json
import os
import tempfile

import numpy as np

from lottery_tf import errors
from lottery_tf.config import Config

DEFAULT_ROOT = "runs"


def _atomic_write(path, data):
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_json(path, value):
    _atomic_write(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def read_json(path):
    with open(path) as f:
        return json.load(f)


def write_arrays(path, arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    _atomic_write(path, buffer.getvalue())


def read_arrays(path):
    with np.load(path, allow_pickle=False) as f:
        return {name: f[name] for name in f.files}


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
        if differing:
            details = ", ".join(f"{k}={saved.get(k)!r} (now {wanted[k]!r})" for k in differing)
            raise errors.LotteryError(
                f"run directory {self.path} was made with other hyperparameters: "
                f"{details}; use another --output_dir"
            )

    def create(self, config, dataset_info):
        """Makes the directory; saves the configuration and dataset facts.

        `dataset_info` (input shape, class count, ...) lets later tools rebuild
        the model without loading the dataset.
        """
        try:
            os.makedirs(self.path, exist_ok=True)
            self._remove_stale_temp_files()
            write_json(self.config_path, config.to_dict())
            write_json(self.dataset_path, dataset_info)
        except OSError as e:
            raise errors.LotteryError(f"--output_dir {self.path}: {e.strerror}") from None

    def _remove_stale_temp_files(self):
        # Left by a process killed mid-write; never read, so safe to drop.
        for root, _, files in os.walk(self.path):
            for name in files:
                if name.startswith(".tmp-"):
                    os.unlink(os.path.join(root, name))

    def round_complete(self, r):
        return os.path.exists(self.metrics_path(r))

    def save_round(self, r, weights, metrics, next_masks=None):
        """Writes round r's outputs; metrics.json last marks it complete."""
        os.makedirs(self.round_dir(r), exist_ok=True)
        write_arrays(self.weights_path(r), weights)
        if next_masks is not None:
            os.makedirs(self.round_dir(r + 1), exist_ok=True)
            write_arrays(self.mask_path(r + 1), next_masks)
        write_json(self.metrics_path(r), metrics)

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
