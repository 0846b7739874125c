"""What a branch is: retrain chosen entries of a run with one thing changed.

A branch lives in `RUN/branches/NAME/` beside the main line (a `BranchDir`),
never writes outside it, and is made of idempotent entries like the main
line's rounds: a rerun skips finished entries (and picks up main-line rounds
that finished since). Entries train with the main line's data order for
their round.

A control is one file: a `Branch` subclass registered with
`@BRANCHES.register("name")` (see `branches/__init__.py`) that overrides what
differs — usually `masks` (which masks an entry trains) and/or
`start_weights` and `model_seed` (where it starts) — and sets `label` (its
series in `lottery-tf report`).
"""

import os

from lottery_tf import errors
from lottery_tf.lottery import cost, run_dir, runner, tensorboard
from lottery_tf.lottery.storage import read_arrays


class Branch:
    """A control of the run in `main` (a `RunDir`), as in open_lth's branches.

    Args:
      main: the run's `RunDir`.
      config: the run's `Config` (options possibly overridden).
      seed: the branch seed (e.g. of a random init or random masks).
      rounds: main-line rounds to branch from; None for every round >= 1
        whose mask exists now.
      targets: overall sparsities, for branches keyed by target.
      options: option name -> value, for branches with options (`options`).
    """

    kind = ""             # its registry name, set by the registry
    label = ""            # its series name in reports
    level_key = "round"   # the metrics key that names an entry's level
    takes_targets = False
    in_accuracy_series = True  # reported as accuracy vs sparsity (False: a report of its own)
    options = {}          # option name -> the `lottery-tf branch` flag that sets it

    def __init__(self, main, config, seed=1, rounds=None, targets=(), options=None):
        self.main = main
        self.config = config
        self.seed = seed
        self.rounds = rounds
        self.targets = tuple(targets)
        self.chosen = dict(options or {})
        unknown = sorted(set(self.chosen) - set(self.options))
        if unknown:
            flag = _option_flag(unknown[0])
            takers = ", ".join(f"--branch={k}" for k in _option_kinds(unknown[0]))
            raise errors.LotteryError(f"{flag} is for {takers or 'no branch'}, not --branch={self.kind}")

    # --- What a subclass may override -------------------------------------------------

    def name(self):
        """The branch directory's name under RUN/branches/."""
        return f"{self.kind}_seed{self.seed}"

    def keys(self):
        """The entries to train, in order (rounds, by default)."""
        if self.targets:
            takers = ", ".join(f"--branch={k}" for k in _target_kinds())
            raise errors.LotteryError(f"--targets is for {takers}, not {self.kind}")
        available = self.main.rounds_with_masks(first=1)
        if self.rounds is None:
            if not available:
                raise errors.LotteryError(
                    f"run {self.main.path} has no pruned round to branch from yet (its round 0 is "
                    "not complete): let the training finish round 0, then rerun this command")
            return available
        missing = [r for r in self.rounds if r not in available]
        if missing:
            raise errors.LotteryError(
                f"round {missing[0]} of {self.main.path} has no mask yet (rounds with masks: "
                f"{available[0] if available else '-'}..{available[-1] if available else '-'})"
            )
        return sorted(set(self.rounds))

    def entry_name(self, key):
        return run_dir.round_entry_name(key)

    def step(self, key):
        """The entry's step in the branch's TensorBoard scalars."""
        return key

    def info(self):
        """What branch.json records."""
        return {"kind": self.kind, "seed": self.seed, "source_run": os.path.abspath(self.main.path)}

    @classmethod
    def series(cls, info, run_config):
        """Its series in reports: "kind", or "kind:detail" when entries differ by more.

        By default the run's criterion, when not magnitude, and its --block
        (the masks come from them). `info` is what branch.json records;
        `run_config` the run's config.
        """
        from lottery_tf.lottery.branches import pruning_detail

        del info
        detail = pruning_detail(run_config)
        return f"{cls.kind}:{detail}" if detail else cls.kind

    def model_seed(self):
        """The initializer seed of the branch's model; None for the run's."""
        return None

    def start_weights(self, experiment, branch_dir):
        """Where every entry starts: the run's rewind point if it has one, else θ0."""
        del experiment, branch_dir
        if self.config.rewind_iteration:
            return read_arrays(self.main.rewind_path)
        return read_arrays(self.main.theta0_path)

    def masks(self, experiment, key):
        """The masks entry `key` trains with: the main line's round, by default."""
        del experiment
        return self.main.load_masks(key)

    def data_seed(self, key):
        return runner.round_seed(self.config.seed, key)

    @classmethod
    def parent_round(cls, key):
        """The main-line round whose cumulative cost entry `key` builds on, or None.

        By default round key - 1, whose pruning chose round key's mask; a
        branch whose masks need no training (at θ0, random) returns None.
        """
        return key - 1 if key >= 1 else None

    def with_cost(self, key, metrics):
        """`metrics` with the entry's cost fields (see `cost`)."""
        parent = self.parent_round(key)
        rounds = {r: self.main.read_metrics(r) for r in self.main.complete_rounds()}
        before = cost.main_line(rounds).get(parent) if parent is not None else None
        return {**metrics, **cost.fields(metrics, before)}

    # --- The loop ---------------------------------------------------------------------

    def run(self, branch_dir, dataset=None, progress=print, entry_index=None, experiment=None):
        """Trains (or resumes) every entry, or only the `entry_index`-th of
        `keys()` (in a job array, beside processes training others); returns
        their metrics in order. `experiment`: one already set up for this
        branch's config and model seed, to train in (else one is set up)."""
        every = self.keys()
        keys = every if entry_index is None else [every[entry_index]]
        with branch_dir.updating():
            branch_dir.write_info(self.info())
        todo = [k for k in keys if not branch_dir.entry(self.entry_name(k)).complete()]
        start = None
        if todo:
            if experiment is None:
                experiment = runner.setup(self.config, dataset, model_seed=self.model_seed())
            with branch_dir.updating():
                start = self.start_weights(experiment, branch_dir)
        results = []
        for key in keys:
            entry = branch_dir.entry(self.entry_name(key))
            saved = entry.complete()
            if saved:
                metrics = entry.read_metrics()
            else:
                try:
                    with branch_dir.training(entry):
                        metrics = self.train_entry(experiment, entry, key, start)
                except errors.Interrupted as e:
                    raise errors.Interrupted(f"{branch_dir.name} {entry.name}, {e.where}") from None
                self.log(branch_dir, entry, key, metrics)
            results.append(metrics)
            label = f"{branch_dir.name} {entry.name}"
            progress(self.describe(metrics, label) + (" [saved]" if saved else ""))
        with branch_dir.updating():  # Every complete entry, whoever trained it and for which rounds.
            done = branch_dir.complete_entries()
            branch_dir.write_summary([self.summary_row(e.read_metrics()) for e in done])
        return results

    def log(self, branch_dir, entry, key, metrics):
        """Writes a completed entry's TensorBoard scalars."""
        tensorboard.write_round(branch_dir, metrics, step=self.step(key), name=entry.name)

    def describe(self, metrics, label):
        """The progress line of a completed entry."""
        return runner.format_round(metrics, None, label=label)

    def summary_row(self, metrics):
        """An entry's row in the branch's summary.csv."""
        return runner.summary_row(metrics, key=self.level_key)

    def train_entry(self, experiment, entry, key, start):
        """Trains entry `key` from `start` and saves it; returns its metrics."""
        masks = self.masks(experiment, key)
        entry.write_masks(masks)
        result = runner.train(experiment, masks, start, self.data_seed(key), entry=entry)
        metrics = self.with_cost(key, {self.level_key: key, "branch": self.kind, **result.metrics})
        entry.save(result.weights, metrics)
        return metrics


def _target_kinds():
    from lottery_tf.lottery.branches import BRANCHES

    return [name for name in BRANCHES.names() if BRANCHES.get(name).takes_targets]


def _option_kinds(option):
    from lottery_tf.lottery.branches import BRANCHES

    return [name for name in BRANCHES.names() if option in BRANCHES.get(name).options]


def _option_flag(option):
    from lottery_tf.lottery.branches import BRANCHES

    for name in BRANCHES.names():
        if option in BRANCHES.get(name).options:
            return BRANCHES.get(name).options[option]
    return option
