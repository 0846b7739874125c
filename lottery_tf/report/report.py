"""`lottery-tf report`: tables and figures from one or more run directories.

    lottery-tf report --runs=runs/lenet/trial_0,runs/lenet/trial_1 --report_dir=docs/results

`--runs` takes run directories (one per trial) or parents holding `trial_*`
run directories. Each run contributes its main IMP line and its branches
(random reinit, random pruning, one-shot); levels are matched across trials
by round (or one-shot target), and every figure is the mean over trials
with min/max bars. Writes, under `--report_dir`:

  results.csv                 one row per (series, level): mean/min/max
  results.md                  the same as a Markdown table
  accuracy_vs_remaining.png   test accuracy at early stop and at the end vs
                              % weights remaining (log axis), all series
  early_stop_vs_remaining.png early-stopping iteration vs % remaining
  layer_remaining.png         % remaining per layer vs round (IMP)
  curves.png                  test accuracy vs iteration, chosen rounds
"""

import csv
import glob
import io
import json
import os

from absl import flags

from lottery_tf import errors
from lottery_tf.cli import app as startup  # interim

flags.DEFINE_list("runs", [], "Run directories, or parents of trial_* run directories.")
flags.DEFINE_string("report_dir", "report", "Where tables and figures are written.")
flags.DEFINE_list("curve_rounds", [], "IMP rounds whose learning curves are plotted; "
                  "default: about five spread over the run.")
flags.DEFINE_string("title", "", "Figure title prefix (default: model / dataset).")
FLAGS = flags.FLAGS

SERIES = {
    "imp": "IMP (winning tickets)",
    "random_reinit": "random reinit",
    "random_pruning": "random pruning",
    "one_shot": "one-shot",
}
METRICS = ("remaining_pct", "early_stop_test_accuracy", "final_test_accuracy", "early_stop_iteration")


def stats(values):
    """(mean, min, max) of a non-empty sequence of numbers."""
    values = [float(v) for v in values]
    return sum(values) / len(values), min(values), max(values)


def find_runs(paths):
    """Run directories named in `paths`, expanding parents of trial_* dirs."""
    runs = []
    for path in paths:
        if os.path.exists(os.path.join(path, "config.json")):
            runs.append(path)
            continue
        trials = sorted(p for p in glob.glob(os.path.join(path, "trial_*"))
                        if os.path.exists(os.path.join(p, "config.json")))
        if not trials:
            raise errors.LotteryError(f"--runs {path} holds no lottery-tf run")
        runs.extend(trials)
    if not runs:
        raise errors.LotteryError("--runs names no run directory")
    return runs


def _read(path):
    with open(path) as f:
        return json.load(f)


def load_run(path):
    """{series: {level: metrics}} of one run (complete entries only)."""
    series = {"imp": {}}
    for metrics_path in glob.glob(os.path.join(path, "round_*", "metrics.json")):
        metrics = _read(metrics_path)
        series["imp"][metrics["round"]] = metrics
    for branch_json in glob.glob(os.path.join(path, "branches", "*", "branch.json")):
        kind = _read(branch_json)["kind"]
        for metrics_path in glob.glob(os.path.join(os.path.dirname(branch_json), "*", "metrics.json")):
            metrics = _read(metrics_path)
            level = metrics.get("target_sparsity", metrics.get("round"))
            series.setdefault(kind, {})[level] = metrics
    return series


def aggregate(runs):
    """Rows (series, level, n, and mean/min/max of each metric) over trials."""
    by_level = {}
    for run in runs:
        for kind, levels in run.items():
            for level, metrics in levels.items():
                by_level.setdefault((kind, level), []).append(metrics)
    rows = []
    for (kind, level), entries in sorted(by_level.items(), key=lambda kv: (list(SERIES).index(kv[0][0]), kv[0][1])):
        row = {"series": kind, "level": level, "trials": len(entries)}
        for metric in METRICS:
            row[metric], row[f"{metric}_min"], row[f"{metric}_max"] = stats(m[metric] for m in entries)
        rows.append(row)
    return rows


def write_tables(rows, report_dir):
    columns = list(rows[0])
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with open(os.path.join(report_dir, "results.csv"), "w") as f:
        f.write(text.getvalue())
    lines = [
        "| series | level | trials | % remaining | test acc @ early stop (min–max) | "
        "test acc @ end (min–max) | early-stop iteration (min–max) |",
        "| --- | --- | ---: | ---: | --- | --- | --- |",
    ]
    for row in rows:
        level = f"{row['level']:.4f}" if row["series"] == "one_shot" else f"round {row['level']}"
        lines.append(
            f"| {SERIES[row['series']]} | {level} | {row['trials']} | {row['remaining_pct']:.2f} | "
            f"{100 * row['early_stop_test_accuracy']:.2f} ({100 * row['early_stop_test_accuracy_min']:.2f}–"
            f"{100 * row['early_stop_test_accuracy_max']:.2f}) | "
            f"{100 * row['final_test_accuracy']:.2f} ({100 * row['final_test_accuracy_min']:.2f}–"
            f"{100 * row['final_test_accuracy_max']:.2f}) | "
            f"{row['early_stop_iteration']:.0f} ({row['early_stop_iteration_min']:.0f}–"
            f"{row['early_stop_iteration_max']:.0f}) |"
        )
    with open(os.path.join(report_dir, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def _errorbar(ax, rows, metric, label, scale=100.0, marker="o"):
    xs = [r["remaining_pct"] for r in rows]
    ys = [scale * r[metric] for r in rows]
    low = [scale * (r[metric] - r[f"{metric}_min"]) for r in rows]
    high = [scale * (r[f"{metric}_max"] - r[metric]) for r in rows]
    ax.errorbar(xs, ys, yerr=[low, high], label=label, marker=marker, markersize=4, capsize=3)


def _log_remaining_axis(ax):
    ax.set_xscale("log")
    ax.invert_xaxis()
    ticks = [100, 51.3, 21.1, 7.0, 3.6, 1.9, 1.0]
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.set_xlabel("% of weights remaining")
    ax.grid(True, which="both", alpha=0.3)


def plot(rows, runs, report_dir, title, curve_rounds):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {kind: [r for r in rows if r["series"] == kind] for kind in SERIES}
    series = {kind: sorted(rs, key=lambda r: -r["remaining_pct"]) for kind, rs in series.items() if rs}

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, metric, name in zip(axes, ("early_stop_test_accuracy", "final_test_accuracy"),
                                ("at early stop", "at end of training")):
        for kind, rs in series.items():
            _errorbar(ax, rs, metric, SERIES[kind])
        _log_remaining_axis(ax)
        ax.set_title(f"{title}: test accuracy {name}")
        ax.set_ylabel("test accuracy (%)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(report_dir, "accuracy_vs_remaining.png"), dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for kind, rs in series.items():
        _errorbar(ax, rs, "early_stop_iteration", SERIES[kind], scale=1.0)
    _log_remaining_axis(ax)
    ax.set_ylabel("early-stopping iteration (min val loss)")
    ax.set_title(f"{title}: early-stopping iteration")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(report_dir, "early_stop_vs_remaining.png"), dpi=110)
    plt.close(fig)

    imp = runs[0]["imp"]
    rounds = sorted(imp)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for layer in imp[rounds[0]]["remaining_pct_by_layer"]:
        ax.plot(rounds, [imp[r]["remaining_pct_by_layer"][layer] for r in rounds], marker="o",
                markersize=3, label=layer)
    ax.plot(rounds, [imp[r]["remaining_pct"] for r in rounds], "k--", label="all prunable")
    ax.set_yscale("log")
    ax.set_xlabel("round")
    ax.set_ylabel("% of weights remaining")
    ax.set_title(f"{title}: per-layer sparsity (IMP, first run)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(report_dir, "layer_remaining.png"), dpi=110)
    plt.close(fig)

    chosen = [r for r in curve_rounds if r in imp] or rounds[:: max(1, len(rounds) // 5)]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for r in chosen:
        curves = [run["imp"][r]["curve"] for run in runs if r in run["imp"]]
        iterations = [p["iteration"] for p in curves[0]]
        mean = [100 * sum(c[i]["test_accuracy"] for c in curves) / len(curves) for i in range(len(iterations))]
        ax.plot(iterations, mean, label=f"{imp[r]['remaining_pct']:.1f}% (round {r})")
    ax.set_xlabel("training iteration")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{title}: test accuracy during training (IMP, mean of runs)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    low = min(line.get_ydata().min() for line in ax.get_lines())
    ax.set_ylim(max(low, 90.0), None)
    fig.tight_layout()
    fig.savefig(os.path.join(report_dir, "curves.png"), dpi=110)
    plt.close(fig)


def make_report(paths, report_dir, curve_rounds=(), title=""):
    """Reads the runs in `paths`; writes tables and figures; returns the rows."""
    run_paths = find_runs(paths)
    runs = [load_run(p) for p in run_paths]
    if not any(run["imp"] for run in runs):
        raise errors.LotteryError("no completed round in " + ", ".join(run_paths))
    config = _read(os.path.join(run_paths[0], "config.json"))
    title = title or f"{config['model']} / {config['dataset']}"
    rows = aggregate(runs)
    os.makedirs(report_dir, exist_ok=True)
    write_tables(rows, report_dir)
    plot(rows, runs, report_dir, title, list(curve_rounds))
    return rows


def main(argv):
    if len(argv) > 1:
        startup.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    startup.quiet_logging()
    try:
        try:
            curve_rounds = [int(r) for r in FLAGS.curve_rounds]
        except ValueError:
            raise errors.LotteryError(f"--curve_rounds={','.join(FLAGS.curve_rounds)} is not a list of rounds") from None
        rows = make_report(FLAGS.runs, FLAGS.report_dir, curve_rounds, FLAGS.title)
        print(f"{len(rows)} rows -> {os.path.join(FLAGS.report_dir, 'results.md')} and figures")
    except errors.LotteryError as e:
        startup.fail(str(e))
