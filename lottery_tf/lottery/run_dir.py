"""The run directory: the one owner of where each of a run's files lives.

Every path of a run is built here; other modules ask a `RunDir`, a
`BranchDir` or an `EntryDir` for it. The whole layout:

    RUN/                          (with --trials: RUN/trial_T/, each laid out like RUN/)
      config.json                 the full configuration of the run
      dataset.json                dataset name, input shape, class count, sizes
      environment.json            what the run ran on (library versions, CPU), one
                                  entry more each time a resumed run's differs
      theta0.npz                  θ0: every model weight at initialization
      rewind.npz                  with --rewind_iteration=k: the weights after k
                                  iterations of round 0, where later rounds start
      summary.csv                 one row per completed round
      hyperparameter_changes.json changes admitted by --allow_changed_hyperparameters
      MANIFEST.json               SHA-256 of every file written in RUN/ (storage.py)
      .lock                       the writer's flock (held while a process writes)
      tensorboard/                TensorBoard scalars: rounds/ and one round_NNN/ per curve
      round_NNN/                  one *entry* (EntryDir) per round:
        mask.npz                  masks the round trained with
        weights.npz               weights at the end of the round's training
        metrics.json              the round's metrics; written last, so its
                                  presence marks the round complete
        MANIFEST.json
        checkpoints/              while the round trains: ckpt-STEP.* (Keras
                                  variables, tf.train.CheckpointManager), state-STEP.json
                                  (learning curve so far), snapshot.npz (rewind
                                  point, once taken), masks-STEP.npz (Early-Bird:
                                  the masks of the last evaluation), MANIFEST.json
      branches/final/             with --early_bird: the run's last mask trained for the
                                  full round (its ticket), laid out like a control
      branches/NAME/              a control (BranchDir): branch.json, summary.csv,
                                  theta0.npz (random reinit), tensorboard/, .lock,
                                  MANIFEST.json and one entry per round (round_NNN/)
                                  or target (sparsity_S/), laid out like round_NNN/;
                                  with --entry_index (entries trained side by side):
                                  .update.lock (turns at the branch's own files) and
                                  each entry's .lock (held while it trains)
      branches/instability_seedS/ the instability branch: one entry per (round, k),
                                  round_NNN_kKKKKKKK/ with copy_a/ and copy_b/ (each laid
                                  out like round_NNN/) and metrics.json (the path, the
                                  barrier); rewind_KKKKKKK.npz (θk trained in the branch
                                  when the run holds no such point); find_rewind.json

Each step skips when its outputs exist, so rerunning a command resumes it.
Files are written and read through `storage.py` (atomic, checksummed).
"""

import contextlib
import csv
import fcntl
import io
import os
import shutil
import time

from lottery_tf import environment, errors
from lottery_tf.lottery import storage
from lottery_tf.lottery.storage import is_recorded, read_arrays, read_json, write_arrays, write_json

DEFAULT_ROOT = "runs"
BRANCHES = "branches"


def round_entry_name(r):
    """The directory name of round r's entry (main line, or a branch keyed by round)."""
    return f"round_{r:03d}"


def sparsity_entry_name(sparsity):
    """The directory name of a branch entry keyed by a target sparsity."""
    return f"sparsity_{sparsity:.4f}"


class EntryDir:
    """One trained network of a run: a main-line round or a branch entry."""

    def __init__(self, path):
        self.path = path

    @property
    def name(self):
        return os.path.basename(self.path)

    @property
    def lock_path(self):
        """Its lock while it trains beside other entries of its branch (`BranchDir.training`)."""
        return os.path.join(self.path, ".lock")

    @property
    def mask_path(self):
        return os.path.join(self.path, "mask.npz")

    @property
    def weights_path(self):
        return os.path.join(self.path, "weights.npz")

    @property
    def metrics_path(self):
        return os.path.join(self.path, "metrics.json")

    @property
    def checkpoint_dir(self):
        return os.path.join(self.path, "checkpoints")

    def checkpoint_path(self, step):
        """The prefix of the step's checkpoint (tf.train.CheckpointManager's naming)."""
        return os.path.join(self.checkpoint_dir, f"ckpt-{step}")

    def checkpoint_state_path(self, step):
        return os.path.join(self.checkpoint_dir, f"state-{step}.json")

    def checkpoint_masks_path(self, step):
        """Early-Bird: the masks chosen at the last evaluation before checkpoint `step`."""
        return os.path.join(self.checkpoint_dir, f"masks-{step}.npz")

    @property
    def checkpoint_snapshot_path(self):
        return os.path.join(self.checkpoint_dir, "snapshot.npz")

    def complete(self):
        return is_recorded(self.metrics_path)

    def read_metrics(self):
        return read_json(self.metrics_path)

    def read_masks(self):
        return read_arrays(self.mask_path)

    def read_weights(self):
        return read_arrays(self.weights_path)

    def write_masks(self, masks):
        os.makedirs(self.path, exist_ok=True)
        write_arrays(self.mask_path, masks)

    def save(self, weights, metrics):
        """Writes the trained weights, then metrics.json (marking it complete).

        Mid-training checkpoints are dropped once the entry is complete.
        """
        os.makedirs(self.path, exist_ok=True)
        write_arrays(self.weights_path, weights)
        write_json(self.metrics_path, metrics)
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)

    def drop_checkpoints(self):
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)

    def part(self, name):
        """A network trained inside this entry (an instability entry's copy_a, copy_b)."""
        return EntryDir(os.path.join(self.path, name))


def _take_lock(directory, lock_path, shared=False):
    """An flock on `lock_path` (made if missing), or one line naming its holder.

    Returns the open file descriptor; closing it releases the lock.
    """
    os.makedirs(directory, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise errors.LotteryError(
            f"run directory {directory} is in use by {holder}; wait for it to finish "
            "or stop it first"
        ) from None
    holder = f"process {os.getpid()}"
    if shared:  # Its other holders write too: one fixed-length write, never a truncation.
        os.pwrite(fd, holder.ljust(32).encode(), 0)
    else:
        os.ftruncate(fd, 0)
        os.write(fd, holder.encode())
    return fd


class _LockedDir:
    """A directory with one writer at a time, a summary and TensorBoard scalars."""

    def __init__(self, path):
        self.path = path
        self._lock_fd = None
        self._shared = False

    @property
    def lock_path(self):
        return os.path.join(self.path, ".lock")

    @property
    def summary_path(self):
        return os.path.join(self.path, "summary.csv")

    @property
    def tensorboard_dir(self):
        return os.path.join(self.path, "tensorboard")

    def tensorboard_path(self, name):
        """A TensorBoard log directory: `rounds`, or one learning curve's entry name."""
        return os.path.join(self.tensorboard_dir, name)

    @property
    def theta0_path(self):
        return os.path.join(self.path, "theta0.npz")

    def lock(self, shared=False):
        """Takes this directory's writer lock, or refuses if another process has it.

        An flock: the kernel drops it when its process ends, however it ends,
        so a crashed run never leaves it stuck. `shared`: for processes that
        write different entries side by side (a job array, see BranchDir);
        they exclude a writer of the whole directory, and it them.
        """
        if self._lock_fd is None:
            self._lock_fd = _take_lock(self.path, self.lock_path, shared)
            self._shared = shared

    def unlock(self):
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

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
        if is_recorded(self.summary_path) and storage.read_text(self.summary_path) == text.getvalue():
            return
        storage.write_text(self.summary_path, text.getvalue())


class BranchDir(_LockedDir):
    """A control's directory, `RUN/branches/NAME/`.

    One process writes it (`lock()`), or several at once, each training
    other entries (`lock(shared=True)`, `lottery-tf branch --entry_index`):
    then each holds its entry's own lock while it trains it (`training`) and
    takes turns for the branch's own files (`updating`).
    """

    @property
    def update_lock_path(self):
        return os.path.join(self.path, ".update.lock")

    @contextlib.contextmanager
    def updating(self):
        """Holds the turn to write the branch's own files (branch.json,
        theta0.npz, summary.csv and their manifest) while others train beside."""
        if not self._shared:
            yield
            return
        fd = os.open(self.update_lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # Held for one write: waiting is short.
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def training(self, entry):
        """Holds `entry`'s lock while it trains beside others, or refuses if another has it."""
        if not self._shared:
            yield
            return
        fd = _take_lock(entry.path, entry.lock_path)
        try:
            yield
        finally:
            os.close(fd)

    @property
    def name(self):
        return os.path.basename(self.path)

    @property
    def info_path(self):
        return os.path.join(self.path, "branch.json")

    def read_info(self):
        return read_json(self.info_path)

    def write_info(self, info):
        write_json(self.info_path, info)

    def entry(self, name):
        return EntryDir(os.path.join(self.path, name))

    def rewind_point_path(self, iteration):
        """θk trained by the branch: the weights after `iteration` iterations of round 0."""
        return os.path.join(self.path, f"rewind_{iteration:07d}.npz")

    @property
    def find_rewind_path(self):
        return os.path.join(self.path, "find_rewind.json")

    def complete_entries(self):
        """The entries whose metrics are recorded, by directory name."""
        if not os.path.isdir(self.path):
            return []
        return [self.entry(name) for name in sorted(os.listdir(self.path))
                if os.path.isdir(os.path.join(self.path, name)) and self.entry(name).complete()]


class RunDir(_LockedDir):
    """Paths and reads/writes of one run directory."""

    @classmethod
    def for_config(cls, config):
        if config.output_dir:
            return cls(os.path.expanduser(config.output_dir))
        return cls(os.path.join(DEFAULT_ROOT, config.default_run_name()))

    @property
    def config_path(self):
        return os.path.join(self.path, "config.json")

    @property
    def rewind_path(self):
        return os.path.join(self.path, "rewind.npz")

    @property
    def environment_path(self):
        return os.path.join(self.path, "environment.json")

    @property
    def dataset_path(self):
        return os.path.join(self.path, "dataset.json")

    @property
    def changes_path(self):
        return os.path.join(self.path, "hyperparameter_changes.json")

    def is_run(self):
        return os.path.exists(self.config_path)

    # --- trials ---------------------------------------------------------------

    def trial(self, t):
        """Trial t of a multi-trial run: RUN/trial_t, a run directory of its own."""
        return RunDir(os.path.join(self.path, f"trial_{t}"))

    def trials(self):
        """The trial run directories under this one, by trial number."""
        if not os.path.isdir(self.path):
            return []
        found = [int(name[6:]) for name in os.listdir(self.path)
                 if name.startswith("trial_") and name[6:].isdigit()]
        return [self.trial(t) for t in sorted(found) if self.trial(t).is_run()]

    # --- rounds ---------------------------------------------------------------

    def round(self, r):
        return EntryDir(os.path.join(self.path, round_entry_name(r)))

    def round_dir(self, r):
        return self.round(r).path

    def mask_path(self, r):
        return self.round(r).mask_path

    def weights_path(self, r):
        return self.round(r).weights_path

    def metrics_path(self, r):
        return self.round(r).metrics_path

    def checkpoint_dir(self, r):
        return self.round(r).checkpoint_dir

    def round_complete(self, r):
        return self.round(r).complete()

    def complete_rounds(self):
        """Rounds whose metrics.json is recorded, in order."""
        if not os.path.isdir(self.path):
            return []
        found = []
        for name in os.listdir(self.path):
            if name.startswith("round_") and name[6:].isdigit() and self.round_complete(int(name[6:])):
                found.append(int(name[6:]))
        return sorted(found)

    def rounds_with_masks(self, first=1):
        """Consecutive rounds from `first` whose mask exists."""
        found = []
        r = first
        while is_recorded(self.mask_path(r)):
            found.append(r)
            r += 1
        return found

    def copy_state(self, destination):
        """Copies what a run reads back into `destination`: everything but the
        lock, TensorBoard logs, branches and temp files (a non-chief worker's
        private copy of the run, see runner.py)."""
        not_state = {os.path.basename(self.lock_path), os.path.basename(self.tensorboard_dir), BRANCHES}

        def skipped(directory, names):
            top = os.path.abspath(directory) == os.path.abspath(self.path)
            return [n for n in names if n.startswith(storage.TEMP_PREFIX) or (top and n in not_state)]

        if os.path.isdir(self.path):
            shutil.copytree(self.path, destination, ignore=skipped, dirs_exist_ok=True)

    def read_config(self):
        return read_json(self.config_path)

    def read_dataset_info(self):
        return read_json(self.dataset_path)

    def read_metrics(self, r):
        return self.round(r).read_metrics()

    def read_weights(self, r):
        return self.round(r).read_weights()

    def load_masks(self, r):
        path = self.mask_path(r)
        if not is_recorded(path):
            raise errors.LotteryError(
                f"run directory {self.path} is damaged: {path} is missing although "
                f"round {r - 1} is complete"
            )
        return read_arrays(path)

    read_masks = load_masks

    def save_round(self, r, weights, metrics, next_masks=None):
        """Writes round r's outputs; metrics.json last marks it complete.

        The next round's masks are written before it, so a complete round
        always has its successor's masks.
        """
        entry = self.round(r)
        os.makedirs(entry.path, exist_ok=True)
        write_arrays(entry.weights_path, weights)
        if next_masks is not None:
            self.round(r + 1).write_masks(next_masks)
        write_json(entry.metrics_path, metrics)
        entry.drop_checkpoints()

    # --- branches -------------------------------------------------------------

    @property
    def branches_dir(self):
        return os.path.join(self.path, BRANCHES)

    def branch(self, name):
        return BranchDir(os.path.join(self.branches_dir, name))

    def branches(self):
        """Branch directories that hold a branch.json, by name."""
        if not os.path.isdir(self.branches_dir):
            return []
        return [self.branch(name) for name in sorted(os.listdir(self.branches_dir))
                if os.path.exists(self.branch(name).info_path)]

    # --- creating and checking ------------------------------------------------

    def check(self, config):
        """Refuses, before anything is written, a path this run cannot use."""
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise errors.LotteryError(f"--output_dir {self.path} exists and is not a directory")
        parent = self.path
        while not os.path.exists(parent):
            parent = os.path.dirname(os.path.abspath(parent))
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
            raise errors.LotteryError(f"--output_dir {self.path} is not writable ({parent})")
        if is_recorded(self.config_path):
            self._check_same_hyperparameters(config)
        elif os.path.isdir(self.path) and not self._holds_only_an_unfinished_start():
            raise errors.LotteryError(
                f"--output_dir {self.path} is not empty and holds no lottery-tf run "
                "(no config.json); choose another directory"
            )

    def _holds_only_an_unfinished_start(self):
        """Whether the directory holds nothing but what a run killed in its first
        writes leaves: the lock, temp files, a manifest, unrecorded files."""
        for name in os.listdir(self.path):
            path = os.path.join(self.path, name)
            ours = (name in (".lock", storage.MANIFEST) or name.startswith(storage.TEMP_PREFIX)
                    or (os.path.isfile(path) and not is_recorded(path)))
            if not ours:
                return False
        return True

    def _check_same_hyperparameters(self, config):
        try:
            saved_config = type(config).from_dict(read_json(self.config_path))
        except storage.DamagedFileError:
            raise
        except (OSError, ValueError, TypeError) as e:
            raise errors.LotteryError(f"cannot read {self.config_path}: {e}") from None
        saved, wanted = saved_config.hyperparameters(), config.hyperparameters()
        differing = [k for k in list(wanted) + [k for k in saved if k not in wanted]
                     if saved.get(k) != wanted.get(k)]
        if not differing:
            return {}
        # A hyperparameter at its default may be left out of the identity (see
        # config.py): show its value, not its absence.
        before = {k: getattr(saved_config, k) for k in differing}
        after = {k: getattr(config, k) for k in differing}
        details = ", ".join(f"{k}={before[k]!r} (now {after[k]!r})" for k in differing)
        fixed = [k for k in differing if k in config.fixed_hyperparameters()]
        if fixed:
            raise errors.LotteryError(
                f"run directory {self.path} was made with other hyperparameters: {details}; "
                f"{', '.join(fixed)} cannot change in an existing run (its weights, masks and data "
                "depend on them, even with --allow_changed_hyperparameters): use another "
                "--output_dir"
            )
        if not config.allow_changed_hyperparameters:
            raise errors.LotteryError(
                f"run directory {self.path} was made with other hyperparameters: "
                f"{details}; use another --output_dir (or --allow_changed_hyperparameters "
                "to continue it with these, recorded in hyperparameter_changes.json)"
            )
        return {k: [before[k], after[k]] for k in differing}

    def recovery_advice(self, path):
        """What to do about a damaged or unreadable file of this run (one sentence)."""
        path = os.path.abspath(path)
        inside = os.path.relpath(path, os.path.abspath(self.path)).split(os.sep)
        name = inside[-1]
        if name == storage.MANIFEST:
            return (f"delete {path} and rerun the same command: the files beside it are then "
                    "taken as they are and recorded anew")
        if inside[0] == BRANCHES and len(inside) > 2:
            branch = self.branch(inside[1])
            if len(inside) > 3:
                return (f"delete {os.path.join(branch.path, inside[2])} and rerun the branch "
                        "command: that entry is trained again")
            return (f"delete {branch.path} and rerun the branch command: the control is "
                    "trained again (the main line is not touched)")
        if len(inside) > 1 and inside[0].startswith("round_"):
            r = int(inside[0][6:])
            if inside[1] == "checkpoints":
                return (f"delete {self.round(r).checkpoint_dir} and rerun the same command: "
                        f"round {r} restarts from its beginning")
            return (f"delete {self.round_dir(r)} and rerun the same command: round {r} is "
                    "trained again" + (f" (its masks are recomputed from round {r - 1})" if r else "")
                    + "; with --deterministic the result is bitwise the same")
        if name == "environment.json":
            return (f"delete {path} and rerun the same command: it is written again (for this "
                    "machine only; earlier entries are lost)")
        if name in ("dataset.json", "summary.csv", "hyperparameter_changes.json"):
            return f"delete {path} and rerun the same command: it is written again"
        if name == "theta0.npz":
            return (f"delete {path} and rerun the same command: θ0 is rebuilt from the run's "
                    "seed (the same weights)")
        if name == "rewind.npz":
            return (f"delete {path} and {self.round_dir(0)} and rerun the same command: "
                    "round 0 is trained again and the rewind point taken again")
        if name == "config.json":
            return (f"restore {path} from a copy, or start the run again with another "
                    "--output_dir: it records the run's hyperparameters and cannot be rebuilt")
        return f"delete {path} and rerun the same command"

    def verify_complete_rounds(self):
        """Checks every recorded file of the run and of its complete rounds.

        A rerun relies on them (θ0, the rewind point, masks, metrics) and the
        export and branches on the rest; damage is found here, not later.
        Raises `storage.DamagedFileError`.
        """
        storage.verify_directory(self.path)
        for r in self.complete_rounds():
            storage.verify_directory(self.round_dir(r))

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
        except OSError as e:
            raise errors.LotteryError(
                f"--output_dir {self.path} cannot be created ({e.strerror}); choose a directory "
                "you can write") from None
        try:
            self.lock()
            changes = self._check_same_hyperparameters(config) if is_recorded(self.config_path) else {}
            self._remove_stale_temp_files()
            if changes:
                first = 0
                while self.round_complete(first):
                    first += 1
                history = read_json(self.changes_path) if is_recorded(self.changes_path) else []
                history.append({"from_round": first, "changes": changes,
                                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
                write_json(self.changes_path, history)
                self.round(first).drop_checkpoints()
            write_json(self.config_path, config.to_dict())
            write_json(self.dataset_path, dataset_info)
            self._record_environment()
        except OSError as e:
            raise errors.LotteryError(f"--output_dir {self.path}: {e.strerror}") from None

    def _record_environment(self):
        # Appended when it differs from the last entry (a run resumed elsewhere): the rounds
        # from `from_round` on ran there.
        now = environment.describe()
        history = read_json(self.environment_path) if is_recorded(self.environment_path) else []
        if history and not environment.differences(history[-1]["environment"], now):
            return
        first = 0
        while self.round_complete(first):
            first += 1
        history.append({"from_round": first, "environment": now})
        write_json(self.environment_path, history)

    def _remove_stale_temp_files(self):
        # Left by a process killed mid-write; never read, so safe to drop.
        for root, dirs, files in os.walk(self.path):
            # Branch processes write under branches/ concurrently; not ours.
            dirs[:] = [d for d in dirs if not (root == self.path and d == BRANCHES)]
            for name in files:
                if name.startswith(storage.TEMP_PREFIX):
                    os.unlink(os.path.join(root, name))
