"""`lottery-tf report`: tables and figures from one or more run directories.

    lottery-tf report --runs=runs/lenet/trial_0,runs/lenet/trial_1 --report_dir=docs/results

`--runs` takes run directories (one per trial) or parents holding `trial_*`
run directories. Each run contributes its main IMP line and its branches
(every registered branch kind is a series; a run pruned with another
criterion than magnitude is the series "imp:CRITERION", an at_init branch
"at_init:CRITERION, SCOPE[, ABLATION]"); levels are matched across trials
by round (or one-shot target), and every figure is the mean over trials
with min/max bars. Every file is read through the run directory, so a
damaged one is named and never used. Writes, under `--report_dir`:

  results.csv                 one row per (series, level): mean/min/max
  results.md                  the same as a Markdown table
  accuracy_vs_remaining.png   test accuracy at early stop and at the end vs
                              % weights remaining (log axis), all series
  early_stop_vs_remaining.png early-stopping iteration vs % remaining
  layer_remaining.png         % remaining per layer vs round (IMP)
  layer_sparsity_by_method.png % remaining per layer that each series has
                              at its level nearest --layers_at_remaining
  curves.png                  test accuracy vs iteration, chosen rounds
  instability.csv, .md        with instability branches: error barrier per
                              (round, start iteration k), mean/min/max
  instability_paths.png       test error along the linear paths (report/instability.py)
  price_of_a_ticket.png       test accuracy at early stop vs training iterations
                              spent from θ0 to reach each level (report/price.py)
  mask_distance.png           Early-Bird runs: each round's mask distance vs
                              iteration (report/price.py)
"""

import os

from lottery_tf import errors
from lottery_tf.lottery import branches
from lottery_tf.lottery import cost
from lottery_tf.lottery.branches import BRANCHES
from lottery_tf.lottery.run_dir import RunDir
from lottery_tf.report import instability
from lottery_tf.report import price
from lottery_tf.report.figures import plot
from lottery_tf.report.tables import METRICS, aggregate, stats, write_tables  # noqa: F401


def find_runs(paths):
    """Run directories named in `paths`, expanding parents of trial_* dirs."""
    if not paths:
        raise errors.LotteryError("--runs is required: run directories, or parents of their "
                                  "trial_* directories (e.g. --runs=runs/quickstart)")
    runs = []
    for path in paths:
        if RunDir(path).is_run():
            runs.append(path)
            continue
        trials = [trial.path for trial in RunDir(path).trials()]
        if not trials:
            raise errors.LotteryError(f"--runs {path} holds no lottery-tf run")
        runs.extend(trials)
    if not runs:
        raise errors.LotteryError("--runs names no run directory")
    return runs


def load_run(path):
    """{series: {level: metrics}} of one run (complete entries only); the main line first.

    Every entry carries its cost fields (`lottery.cost`), computed for metrics
    written before they were recorded.
    """
    run = RunDir(path)
    config = run.read_config()
    main = cost.main_line({r: run.read_metrics(r) for r in run.complete_rounds()})
    series = {branches.main_line_series(config): main}
    for branch in run.branches():
        info = branch.read_info()
        if info["kind"] not in BRANCHES.names():
            continue  # A branch kind this installation does not know: not a series here.
        branch_class = BRANCHES.get(info["kind"])
        if not branch_class.in_accuracy_series:
            continue  # Reported on its own (e.g. report/instability.py).
        key = branch_class.series(info, config)
        for entry in branch.complete_entries():
            metrics = entry.read_metrics()
            parent = branch_class.parent_round(metrics[branch_class.level_key])
            metrics = cost.filled(metrics, main.get(parent) if parent is not None else None)
            series.setdefault(key, {})[metrics[branch_class.level_key]] = metrics
    return series


def main_line(run):
    """The main line's {level: metrics} of a `load_run` result."""
    return next(iter(run.values()))


def make_report(paths, report_dir, curve_rounds=(), title="", layers_at_remaining=7.0):
    """Reads the runs in `paths`; writes tables and figures; returns the rows."""
    run_paths = find_runs(paths)
    runs = [load_run(p) for p in run_paths]
    if not any(main_line(run) for run in runs):
        raise errors.LotteryError("no completed round in " + ", ".join(run_paths))
    config = RunDir(run_paths[0]).read_config()
    title = title or f"{config['model']} / {config['dataset']}"
    rows = aggregate(runs)
    try:
        os.makedirs(report_dir, exist_ok=True)
        write_tables(rows, report_dir)
        plot(rows, runs, report_dir, title, list(curve_rounds), layers_at_remaining)
        instability.write(run_paths, report_dir, title)
        price.plot(rows, runs, report_dir, title)
    except OSError as e:
        raise errors.LotteryError(
            f"--report_dir {report_dir} cannot be written ({e.strerror or e}); choose a directory "
            "you can write") from None
    return rows
