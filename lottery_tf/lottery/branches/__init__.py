"""Controls, as branches of an IMP run (open_lth's "branches").

Each control is one file here, a `base.Branch` subclass registered in
`BRANCHES` under its `--branch` name; reports take their series from it.

  random_reinit   the round's mask, a fresh random init (another seed)
  random_pruning  a random mask with the round's per-layer counts
  one_shot        one-step pruning to target sparsities from round 0
  at_init         pruned at θ0 by an at-init criterion to each round's sparsity,
                  with the shuffle / reinit / invert ablations
  tfmot_gradual   the dense θ0 network trained with tfmot's gradual magnitude
                  pruning to each round's per-layer sparsities
  instability     two copies of a round's network from θk, other data orders:
                  the error barrier on the line between them (linear mode
                  connectivity, Frankle et al. 2020)
  final           an Early-Bird run's ticket: its last mask trained for the
                  full round (the run's own last step, see runner.py)
"""

import dataclasses

from lottery_tf import errors
from lottery_tf.config import Config
from lottery_tf.lottery import runner
from lottery_tf.lottery.run_dir import RunDir
from lottery_tf.registry import Registry


class _BranchRegistry(Registry):
    def register(self, name):
        add = super().register(name)

        def add_class(cls):
            cls.kind = name
            return add(cls)

        return add_class


BRANCHES = _BranchRegistry("branch")


def run_branch(run_path, kind, rounds=None, seed=1, targets=(), progress=print,
               data_dir=None, verbose=None, dataset=None, model=None, data=None, options=None,
               entry_index=None):
    """Runs (or resumes) branch `kind` of the run in `run_path`.

    Args:
      run_path: a run directory made by `runner.run`.
      kind: a registered branch name.
      rounds: main-line rounds to branch from; None for every round >= 1
        whose mask exists now.
      seed: the branch seed.
      targets: overall sparsities in (0, 1), for branches keyed by target.
      progress: called with one line per entry.
      data_dir, verbose: override the run's saved options.
      dataset: a `data.Dataset` to use instead of loading the run's dataset.
      model, data: the objects a run made with `lottery_tf.run(config,
        model=..., data=...)` was handed, in another process.
      options: option name -> value, for branches with options (at_init:
        criterion, ablation, scope).
      entry_index: None for every entry; i for only the i-th of the branch's
        entries (0-based, in order), beside other processes training others
        in the same directory (a job array; see docs/SCALING.md).

    Returns:
      The metrics of each entry, in order.
    """
    main = RunDir(run_path)
    if not main.is_run():
        raise errors.LotteryError(f"--run_dir {run_path} holds no lottery-tf run (no config.json)")
    branch_class = BRANCHES.get(kind)
    with runner.damage_explained(main):
        config = runner.with_own(Config.from_dict(main.read_config()), model, data, recorded=True)
        overrides = {"data_dir": data_dir} if data_dir else {}
        if verbose is not None:
            overrides["verbose"] = verbose
        branch = branch_class(main, dataclasses.replace(config, **overrides), seed, rounds, targets,
                              options)
        keys = branch.keys()  # Refuses a bad request before anything is written.
        if entry_index is not None and not 0 <= entry_index < len(keys):
            names = [branch.entry_name(k) for k in keys]
            listed = ", ".join(names) if len(names) <= 4 else f"{names[0]} ... {names[-1]}"
            raise errors.LotteryError(
                f"--entry_index={entry_index} is outside [0, {len(keys)}): branch {kind} of "
                f"{run_path} has {len(keys)} entries ({listed})")
        branch_dir = main.branch(branch.name())
        branch_dir.lock(shared=entry_index is not None)
        try:
            with runner.writing_errors_explained(branch_dir.path):
                return branch.run(branch_dir, dataset, progress, entry_index)
        finally:
            branch_dir.unlock()


def series():
    """Report series: "imp" (the main line), then each branch kind -> label."""
    return {"imp": "IMP (winning tickets)",
            **{name: BRANCHES.get(name).label for name in BRANCHES.in_registration_order()}}


def series_label(key):
    """The label of series `key` ("kind" or "kind:detail", see `Branch.series`)."""
    kind, _, detail = key.partition(":")
    label = series()[kind]
    return f"{label}: {detail}" if detail else label


SEARCH = "early-bird search"


def pruning_detail(run_config):
    """How a run's masks were chosen, beyond the paper's: "", "movement", "1x4 blocks",
    "movement, 1x4 blocks" (its series in reports differ by it)."""
    criterion = run_config.get("criterion", "magnitude")
    block = run_config.get("block", "none")
    return ", ".join(([criterion] if criterion != "magnitude" else [])
                     + ([f"{block} blocks"] if block != "none" else []))


def main_line_series(run_config):
    """The main line's series: "imp", or "imp:DETAILS" naming what differs from the
    paper's method: the criterion when not magnitude and the --block (`pruning_detail`),
    the reset mode when it keeps the trained weights (lr_rewind, finetune), and
    Early-Bird search rounds with their distance when not the default (as `final`'s
    series: runs that differ only by it must not merge into one series)."""
    details = [pruning_detail(run_config)] if pruning_detail(run_config) else []
    if run_config.get("reset", "theta0") in ("lr_rewind", "finetune"):
        details.append(run_config["reset"])
    if run_config.get("early_bird"):
        distance = run_config.get("early_bird_distance", "pruned")
        details.append(f"{SEARCH} {run_config['early_bird']}"
                       + (f" by {distance}" if distance != "pruned" else ""))
    return "imp:" + ", ".join(details) if details else "imp"


def is_search_series(key):
    """Whether series `key` is made of Early-Bird search rounds (stopped early: no tickets)."""
    return SEARCH in key


# Built-in branches register themselves on import, in their report order.
from lottery_tf.lottery.branches import random_reinit  # noqa: E402,F401,I001
from lottery_tf.lottery.branches import random_pruning  # noqa: E402,F401
from lottery_tf.lottery.branches import one_shot  # noqa: E402,F401
from lottery_tf.lottery.branches import at_init  # noqa: E402,F401
from lottery_tf.lottery.branches import tfmot_gradual  # noqa: E402,F401
from lottery_tf.lottery.branches import instability  # noqa: E402,F401
from lottery_tf.lottery.branches import final  # noqa: E402,F401
