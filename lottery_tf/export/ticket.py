"""One round of a run, as the export needs it: read through `RunDir`, best-round choice.

Every path and every read goes through `lottery_tf.lottery.run_dir.RunDir`
(reads check the directory's manifest: a damaged file is refused by name).
"""

import dataclasses
import os

from lottery_tf import errors
from lottery_tf.lottery.run_dir import RunDir
from lottery_tf.lottery.storage import is_recorded


@dataclasses.dataclass
class Ticket:
    """One round of a run: what the export needs, read from the run directory."""

    run_dir: str
    round: int
    selection: str
    config: dict
    dataset: dict
    masks: dict
    weights: dict
    metrics: dict


def best_round(metrics_by_round, tolerance_points):
    """The sparsest round whose early-stop validation accuracy is at most
    `tolerance_points` (percentage points) below round 0's.

    Validation accuracy, not test accuracy, so that choosing the ticket does
    not peek at the test set. Equal sparsity: the higher validation accuracy,
    then the earlier round.
    """
    if 0 not in metrics_by_round:
        raise errors.LotteryError("--round=best compares with round 0, which is not complete")
    floor = metrics_by_round[0]["early_stop_val_accuracy"] - tolerance_points / 100.0
    candidates = [
        (m["remaining_pct"], -m["early_stop_val_accuracy"], r)
        for r, m in metrics_by_round.items()
        if m["early_stop_val_accuracy"] >= floor - 1e-12  # False for NaN
    ]
    if not candidates:
        raise errors.LotteryError(
            "--round=best: round 0 has no usable validation accuracy; give --round=N")
    return min(candidates)[2]


def _read(read, path, what):
    """`read()`, with an unreadable file as a one-line error naming `path`."""
    try:
        return read()
    except (OSError, ValueError) as e:
        raise errors.LotteryError(f"cannot read {what} {path}: {e}") from None


def _read_metrics(run, r):
    entry = run.round(r)
    return _read(entry.read_metrics, entry.metrics_path, "round metrics")


def _select_round(run, round_spec, tolerance_points):
    """(round, how it was selected) for `round_spec` ('best', 'last' or a number)."""
    complete = run.complete_rounds()
    spec = str(round_spec).strip().lower()
    if spec in ("best", "last"):
        if not complete:
            raise errors.LotteryError(f"run {run.path} has no complete round to export")
        if spec == "last":
            return complete[-1], "last complete round"
        metrics = {c: _read_metrics(run, c) for c in complete}
        return best_round(metrics, tolerance_points), (
            f"best: sparsest complete round with early-stop validation accuracy "
            f"within {tolerance_points:g} points of round 0's")
    try:
        r = int(spec)
    except ValueError:
        raise errors.LotteryError(
            f"--round={round_spec} is neither a round number, 'best' nor 'last'") from None
    if r < 0:
        raise errors.LotteryError(f"--round={r} must not be negative")
    if r not in complete:
        known = ", ".join(map(str, complete)) if complete else "none"
        raise errors.LotteryError(
            f"round {r} of {run.path} does not exist or is not complete "
            f"(complete rounds: {known})")
    return r, f"--round={r}"


def load_ticket(run_dir, round_spec, tolerance_points=0.5):
    """Reads round `round_spec` ('best', 'last' or a number) of `run_dir`."""
    if not run_dir:
        raise errors.LotteryError("--run (the run directory) is required")
    if not os.path.isdir(run_dir):
        raise errors.LotteryError(f"--run {run_dir} does not exist or is not a directory")
    run = RunDir(run_dir)
    if not run.is_run():
        raise errors.LotteryError(
            f"--run {run_dir} is not a lottery-tf run directory (no config.json)")
    config = _read(run.read_config, run.config_path, "run configuration")
    if not os.path.exists(run.dataset_path):
        raise errors.LotteryError(
            f"{run.dataset_path} is missing (runs made before lottery-tf recorded dataset facts "
            "cannot be exported; rerun the training command once to write it)")
    dataset = _read(run.read_dataset_info, run.dataset_path, "dataset facts")
    r, selection = _select_round(run, round_spec, tolerance_points)
    entry = run.round(r)
    if not is_recorded(entry.mask_path):
        raise errors.LotteryError(
            f"round {r} of {run_dir} has no masks ({entry.mask_path} is missing)")
    if not is_recorded(entry.weights_path):
        raise errors.LotteryError(
            f"round {r} of {run_dir} has no trained weights ({entry.weights_path} is missing)")
    return Ticket(
        run_dir=run_dir,
        round=r,
        selection=selection,
        config=config,
        dataset=dataset,
        masks=_read(entry.read_masks, entry.mask_path, "masks"),
        weights=_read(entry.read_weights, entry.weights_path, "weights"),
        metrics=_read_metrics(run, r),
    )
