"""The price of a ticket: what each entry's training spent, and what it cost from θ0.

Every entry (a main-line round or a branch entry) records in its metrics:

  train_iterations        iterations its own training ran (`iterations`, or
                          fewer when an Early-Bird round stopped early)
  cumulative_iterations   training iterations spent from θ0 to this result
  wall_time_s             the seconds its own training took (as before)

and readers (the report) add `cumulative_wall_time_s`, the same sum over wall
times. It is not recorded: wall times differ from run to run, and a run's
metrics are otherwise identical for the same seed, resumed or not.

Cumulative cost: IMP round r is the sum over rounds 0..r (rounds 0..r-1
chose its mask; round r trains it). A branch entry is the cumulative cost of
the main-line round it builds on (`Branch.parent_round`: round k-1 for an
entry that trains round k's mask, round 0 for one-shot masks, none for masks
made without training, e.g. at θ0) plus its own training. Pruning, evaluation
and I/O outside `model.fit` are not counted; wall time is the time one process
measured, so a round resumed from a checkpoint counts its last part only.

Metrics written before these fields existed are completed when read (`filled`):
such an entry trained its full `iterations`.
"""

FIELDS = ("train_iterations", "cumulative_iterations")  # recorded in metrics.json


def own(metrics):
    """(iterations, seconds) the entry's own training spent."""
    iterations = metrics.get("train_iterations", metrics.get("iterations", 0))
    return int(iterations), float(metrics.get("wall_time_s", 0.0))


def fields(metrics, parent=None):
    """The recorded cost fields of an entry with `metrics`, built on `parent`'s (None: θ0).

    Args:
      metrics: the entry's metrics (iterations, and train_iterations when it
        trained fewer than `iterations`).
      parent: the metrics (with cost fields) of what it builds on, or None.
    """
    iterations, _ = own(metrics)
    return {"train_iterations": iterations,
            "cumulative_iterations": (parent["cumulative_iterations"] if parent else 0) + iterations}


def filled(metrics, parent=None):
    """A copy of `metrics` with its cost fields (computed if it predates them) and
    `cumulative_wall_time_s`; `parent` as for `fields`, itself `filled`."""
    recorded = {} if all(key in metrics for key in FIELDS) else fields(metrics, parent)
    seconds = (parent["cumulative_wall_time_s"] if parent else 0.0) + own(metrics)[1]
    return {**metrics, **recorded, "cumulative_wall_time_s": seconds}


def main_line(rounds):
    """{round: metrics} of a main line, each `filled` (consecutive sums)."""
    result, previous = {}, None
    for r in sorted(rounds):
        previous = result[r] = filled(rounds[r], previous)
    return result
