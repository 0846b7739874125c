"""Report tables: metrics aggregated over trials, as CSV and Markdown."""

import csv
import io
import os

from lottery_tf.lottery import branches

COST = ("cumulative_iterations", "cumulative_wall_time_s")
METRICS = ("remaining_pct", "early_stop_test_accuracy", "final_test_accuracy", "early_stop_iteration") + COST


def stats(values):
    """(mean, min, max) of a non-empty sequence of numbers."""
    values = [float(v) for v in values]
    return sum(values) / len(values), min(values), max(values)


def aggregate(runs):
    """Rows (series, level, n, and mean/min/max of each metric) over trials."""
    by_level = {}
    for run in runs:
        for kind, levels in run.items():
            for level, metrics in levels.items():
                by_level.setdefault((kind, level), []).append(metrics)
    order = list(branches.series())
    rows = []
    for (kind, level), entries in sorted(by_level.items(), key=lambda kv: (
            order.index(kind_of(kv[0][0])), kv[0][0] != "imp", kv[0])):
        row = {"series": kind, "level": level, "trials": len(entries)}
        for metric in METRICS:
            if metric in COST and any(metric not in m for m in entries):
                continue  # Metrics handed in without their cost (see `lottery.cost`).
            row[metric], row[f"{metric}_min"], row[f"{metric}_max"] = stats(m[metric] for m in entries)
        rows.append(row)
    return rows


def write_tables(rows, report_dir):
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with open(os.path.join(report_dir, "results.csv"), "w") as f:
        f.write(text.getvalue())
    lines = [
        "| series | level | trials | % remaining | test acc @ early stop (min–max) | "
        "test acc @ end (min–max) | early-stop iteration (min–max) | iterations from θ0 |",
        "| --- | --- | ---: | ---: | --- | --- | --- | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {branches.series_label(row['series'])} | {level_label(row['series'], row['level'])} | {row['trials']} | {row['remaining_pct']:.2f} | "
            f"{100 * row['early_stop_test_accuracy']:.2f} ({100 * row['early_stop_test_accuracy_min']:.2f}–"
            f"{100 * row['early_stop_test_accuracy_max']:.2f}) | "
            f"{100 * row['final_test_accuracy']:.2f} ({100 * row['final_test_accuracy_min']:.2f}–"
            f"{100 * row['final_test_accuracy_max']:.2f}) | "
            f"{row['early_stop_iteration']:.0f} ({row['early_stop_iteration_min']:.0f}–"
            f"{row['early_stop_iteration_max']:.0f}) | {row.get('cumulative_iterations', float('nan')):.0f} |"
        )
    with open(os.path.join(report_dir, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")




def kind_of(series):
    """The main line ("imp") or branch kind of a series key ("kind" or "kind:detail")."""
    return series.partition(":")[0]


def level_label(series, level):
    """'round N' for entries keyed by round, else the level (e.g. a target sparsity)."""
    kind = kind_of(series)
    if kind == "imp" or branches.BRANCHES.get(kind).level_key == "round":
        return f"round {level}"
    return f"{level:.4f}"
