"""The instability branch's report: error barriers per (round, k) and the paths.

Every instability branch of every run (trials, and branch seeds within a
run) is one sample of its (round, start iteration k); the table gives their
mean, min and max, the figure the mean path with its min–max band.
"""

import csv
import io
import os

import numpy as np

from lottery_tf.lottery.branches import BRANCHES
from lottery_tf.lottery.run_dir import RunDir

KIND = "instability"


def load(run_paths):
    """{(round, k): [entry metrics, one per run and branch seed]}, in (round, k) order."""
    found = {}
    for path in run_paths:
        for branch in RunDir(path).branches():
            if branch.read_info()["kind"] != KIND or KIND not in BRANCHES.names():
                continue
            for entry in branch.complete_entries():
                metrics = entry.read_metrics()
                found.setdefault((metrics["round"], metrics["start_iteration"]), []).append(metrics)
    return dict(sorted(found.items()))


def rows(entries):
    """One row per (round, k): samples, % remaining, barrier and end errors (mean, min, max)."""
    table = []
    for (r, k), samples in entries.items():
        barriers = [m["barrier_pct"] for m in samples]
        ends = [e for m in samples for e in (m["test_error_pct"][0], m["test_error_pct"][-1])]
        table.append({
            "round": r, "start_iteration": k, "samples": len(samples),
            "remaining_pct": float(np.mean([m["remaining_pct"] for m in samples])),
            "barrier_pct": float(np.mean(barriers)),
            "barrier_pct_min": float(min(barriers)), "barrier_pct_max": float(max(barriers)),
            "end_test_error_pct": float(np.mean(ends)),
            "max_test_error_pct": float(np.mean([max(m["test_error_pct"]) for m in samples])),
        })
    return table


def write(run_paths, report_dir, title):
    """Writes instability.csv, instability.md and instability_paths.png; returns the rows.

    Writes nothing when no run has an instability branch.
    """
    entries = load(run_paths)
    if not entries:
        return []
    table = rows(entries)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(table[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    with open(os.path.join(report_dir, "instability.csv"), "w") as f:
        f.write(text.getvalue())
    lines = ["| round | % remaining | k | samples | error barrier, points (min–max) | "
             "test error at the ends, % | max test error on the path, % |",
             "| ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
    for row in table:
        lines.append(
            f"| {row['round']} | {row['remaining_pct']:.2f} | {row['start_iteration']} | {row['samples']} | "
            f"{row['barrier_pct']:.2f} ({row['barrier_pct_min']:.2f}–{row['barrier_pct_max']:.2f}) | "
            f"{row['end_test_error_pct']:.2f} | {row['max_test_error_pct']:.2f} |")
    with open(os.path.join(report_dir, "instability.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    _plot_paths(entries, table, report_dir, title)
    return table


def _plot_paths(entries, table, report_dir, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, (row, samples) in enumerate(zip(table, entries.values())):
        alphas = [p["alpha"] for p in samples[0]["path"]]
        errors = np.array([m["test_error_pct"] for m in samples])
        color = plt.cm.tab20(i % 20) if len(table) > 10 else f"C{i}"
        ax.plot(alphas, errors.mean(axis=0), marker="o", markersize=2.5, color=color,
                label=f"round {row['round']} ({row['remaining_pct']:.1f}%), k={row['start_iteration']}: "
                      f"barrier {row['barrier_pct']:.2f}")
        if len(samples) > 1:
            ax.fill_between(alphas, errors.min(axis=0), errors.max(axis=0), color=color, alpha=0.2)
    ax.set_xlabel("interpolation α (0: copy a, 1: copy b)")
    ax.set_ylabel("test error (%)")
    ax.set_title(f"{title}: instability (linear paths between two copies)")
    ax.grid(True, alpha=0.3)
    many = len(table) > 6
    ax.legend(fontsize="small", **({"loc": "upper left", "bbox_to_anchor": (1.02, 1.0)} if many else {}))
    fig.tight_layout()
    fig.savefig(os.path.join(report_dir, "instability_paths.png"), dpi=110,
                **({"bbox_inches": "tight"} if many else {}))
    plt.close(fig)
