"""Controls, as branches of an IMP run (open_lth's "branches").

A branch retrains chosen rounds of a run directory's main line with one
thing changed, and lives in `RUN/branches/NAME/` beside it:

  random_reinit   the round's mask, a fresh random init from the same
                  initializer (another seed): is the init part of the ticket?
  random_pruning  a random mask with the round's per-layer counts, from the
                  run's start weights (θ0, or the rewind point)
  one_shot        masks pruned in one step to a target sparsity from round 0's
                  trained weights, from the same start weights: one-shot vs
                  iterative at equal sparsity (paper Figure 4)

Branch entries train with the main line's data order for that round, never
write outside their branch directory, and are idempotent steps like the main
line's rounds: a rerun skips finished entries (and picks up main-line rounds
that finished since).
"""

import dataclasses
import os
import shutil

import numpy as np

from lottery_tf import errors
from lottery_tf.lottery import runner
from lottery_tf.lottery import tensorboard as summaries
from lottery_tf.config import Config
from lottery_tf.lottery.run_dir import RunDir, is_recorded, read_arrays, read_json, write_arrays, write_json

KINDS = ("random_reinit", "random_pruning", "one_shot")


def random_masks_like(masks, seed):
    """Uniformly random masks with exactly the per-layer counts of `masks`."""
    rng = np.random.default_rng(seed)
    result = {}
    for name, mask in masks.items():
        flat = np.zeros(mask.size, mask.dtype)
        flat[rng.choice(mask.size, int(np.count_nonzero(mask)), replace=False)] = 1
        result[name] = flat.reshape(mask.shape)
    return result


def reinit_seed(run_seed, branch_seed):
    """The initializer seed of a random-reinit branch: never a trial's seed."""
    return 1_000_003 * int(branch_seed) + int(run_seed)


def branch_name(kind, seed):
    return "one_shot" if kind == "one_shot" else f"{kind}_seed{seed}"


def _entry_dir(kind, key):
    return f"sparsity_{key:.4f}" if kind == "one_shot" else f"round_{key:03d}"


def run_branch(run_path, kind, rounds=None, seed=1, targets=(), progress=print,
               data_dir=None, verbose=None, dataset=None):
    """Runs (or resumes) branch `kind` of the run in `run_path`.

    Args:
      run_path: a run directory made by `runner.run`.
      kind: one of KINDS.
      rounds: main-line rounds to branch from (random_reinit, random_pruning);
        None for every round >= 1 whose mask exists now.
      seed: the branch seed (reinit init / random masks).
      targets: overall sparsities in (0, 1), for one_shot.
      progress: called with one line per entry.
      data_dir, verbose: override the run's saved options.
      dataset: a `data.Dataset` to use instead of loading the run's dataset.

    Returns:
      The metrics of each entry, in order.
    """
    main = RunDir(run_path)
    if not os.path.exists(main.config_path):
        raise errors.LotteryError(f"--run_dir {run_path} holds no lottery-tf run (no config.json)")
    if kind not in KINDS:
        raise errors.LotteryError(f"unknown branch {kind!r}; known: {', '.join(KINDS)}")
    config = Config.from_dict(read_json(main.config_path))
    overrides = {"data_dir": data_dir} if data_dir else {}
    if verbose is not None:
        overrides["verbose"] = verbose
    config = dataclasses.replace(config, **overrides)
    keys = _keys(main, kind, rounds, targets)

    branch = RunDir(os.path.join(main.path, "branches", branch_name(kind, seed)))
    os.makedirs(branch.path, exist_ok=True)
    branch.lock()
    try:
        with runner.writing_errors_explained(branch.path):
            return _run_entries(main, branch, config, kind, keys, seed, dataset, progress)
    finally:
        branch.unlock()


def _run_entries(main, branch, config, kind, keys, seed, dataset, progress):
    write_json(os.path.join(branch.path, "branch.json"), {
        "kind": kind, "seed": seed, "source_run": os.path.abspath(main.path),
        "reinit_seed": reinit_seed(config.seed, seed) if kind == "random_reinit" else None,
    })
    todo = [k for k in keys if not is_recorded(_metrics_path(branch, kind, k))]
    experiment = None
    if todo:
        model_seed = reinit_seed(config.seed, seed) if kind == "random_reinit" else None
        experiment = runner.setup(config, dataset, model_seed=model_seed)
    start = _start_weights(main, branch, config, kind, experiment)

    results = []
    for key in keys:
        path = _metrics_path(branch, kind, key)
        saved = is_recorded(path)
        if saved:
            metrics = read_json(path)
        else:
            metrics = _train_entry(experiment, main, branch, kind, key, seed, start)
            summaries.write_round(branch.path, metrics, step=_step(kind, key), name=_entry_dir(kind, key))
        results.append(metrics)
        label = f"{branch_name(kind, seed)} {_entry_dir(kind, key)}"
        progress(runner.format_round(metrics, None, label=label) + (" [saved]" if saved else ""))
    key_name = "target_sparsity" if kind == "one_shot" else "round"
    branch.write_summary([runner.summary_row(m, key=key_name) for m in results])
    return results


def _keys(main, kind, rounds, targets):
    if kind == "one_shot":
        if not targets:
            raise errors.LotteryError("--branch=one_shot needs --targets (sparsities in (0, 1))")
        bad = [t for t in targets if not 0.0 < t < 1.0]
        if bad:
            raise errors.LotteryError(f"--targets {bad[0]} is outside (0, 1)")
        if not main.round_complete(0):
            raise errors.LotteryError(f"one_shot needs round 0 of {main.path} to be complete")
        return sorted(set(float(t) for t in targets))
    if targets:
        raise errors.LotteryError(f"--targets is for --branch=one_shot, not {kind}")
    available = []
    r = 1
    while os.path.exists(main.mask_path(r)):
        available.append(r)
        r += 1
    if rounds is None:
        return available
    missing = [r for r in rounds if r not in available]
    if missing:
        raise errors.LotteryError(
            f"round {missing[0]} of {main.path} has no mask yet (rounds with masks: "
            f"{available[0] if available else '-'}..{available[-1] if available else '-'})"
        )
    return sorted(set(rounds))


def _metrics_path(branch, kind, key):
    return os.path.join(branch.path, _entry_dir(kind, key), "metrics.json")


def _step(kind, key):
    return int(round(key * 10000)) if kind == "one_shot" else key


def _start_weights(main, branch, config, kind, experiment):
    """Where the branch's networks start (None when nothing is left to train)."""
    if experiment is None:
        return None
    if kind == "random_reinit":
        start = experiment.current_weights()
        if not is_recorded(branch.theta0_path):
            write_arrays(branch.theta0_path, start)
        return read_arrays(branch.theta0_path)
    if config.rewind_iteration:
        return read_arrays(main.rewind_path)
    return read_arrays(main.theta0_path)


def _train_entry(experiment, main, branch, kind, key, seed, start):
    config = experiment.config
    if kind == "one_shot":
        trained = read_arrays(main.weights_path(0))
        dense = runner.dense_masks(experiment)
        kernels = {name: trained[f"{name}/kernel"] for name in dense}
        masks = experiment.pruner(one_shot_target=key)(kernels, dense)
        data_seed = runner.round_seed(config.seed, 1)
    else:
        masks = main.load_masks(key)
        if kind == "random_pruning":
            masks = random_masks_like(masks, [int(seed), int(key)])
        data_seed = runner.round_seed(config.seed, key)
    entry = os.path.join(branch.path, _entry_dir(kind, key))
    os.makedirs(entry, exist_ok=True)
    write_arrays(os.path.join(entry, "mask.npz"), masks)
    result = runner.train(experiment, masks, start, data_seed, checkpoint_dir=os.path.join(entry, "checkpoints"))
    key_name = "target_sparsity" if kind == "one_shot" else "round"
    metrics = {key_name: key, "branch": kind, **result.metrics}
    write_arrays(os.path.join(entry, "weights.npz"), result.weights)
    write_json(os.path.join(entry, "metrics.json"), metrics)
    shutil.rmtree(os.path.join(entry, "checkpoints"), ignore_errors=True)
    return metrics
