"""The price of a ticket (accuracy vs training spent) and Early-Bird mask distances.

`price_of_a_ticket.png`: test accuracy at early stop against the training
iterations spent from θ0 to reach each level (`cumulative_iterations`, see
`lottery.cost`), one series per method (plain IMP, Early-Bird tickets, reset
modes, one-shot, ...), each point labelled with its % of weights remaining.
Early-Bird *search* rounds are left out: they stop early, so their accuracy is
not a ticket's (their tickets are the `final` entries).

`mask_distance.png` (only when a run has Early-Bird rounds): per round, the
distance between the masks chosen at consecutive evaluations, with epsilon.
"""

import os

from lottery_tf.lottery import branches
from lottery_tf.report import figures


def plot(rows, runs, report_dir, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _price(plt, rows, report_dir, title)
    _mask_distances(plt, runs, report_dir, title)


def _price(plt, rows, report_dir, title):
    series = {}
    for row in rows:
        if not branches.is_search_series(row["series"]) and "cumulative_iterations" in row:
            series.setdefault(row["series"], []).append(row)
    if not series:
        return
    many = len(series) > 6
    fig, ax = plt.subplots(figsize=(7.5 + (4.5 if many else 0.0), 5.0))
    style = figures.styles(series, figures.palette(plt))
    for key, rs in series.items():
        rs = sorted(rs, key=lambda r: r["cumulative_iterations"])
        xs = [r["cumulative_iterations"] for r in rs]
        ys = [100 * r["early_stop_test_accuracy"] for r in rs]
        yerr = [[100 * (r["early_stop_test_accuracy"] - r["early_stop_test_accuracy_min"]) for r in rs],
                [100 * (r["early_stop_test_accuracy_max"] - r["early_stop_test_accuracy"]) for r in rs]]
        xerr = [[r["cumulative_iterations"] - r["cumulative_iterations_min"] for r in rs],
                [r["cumulative_iterations_max"] - r["cumulative_iterations"] for r in rs]]
        color, variant = style[key]
        ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, label=branches.series_label(key), marker="o",
                    markersize=4, capsize=3, color=color, linestyle="--" if variant else "-",
                    markerfacecolor="white" if variant else color)
        for x, y, r in zip(xs, ys, rs):
            ax.annotate(f"{r['remaining_pct']:.1f}%", (x, y), fontsize=6, color=color,
                        textcoords="offset points", xytext=(3, 3))
    ax.set_xscale("log")
    ax.set_xlabel("training iterations spent from θ0 (cumulative)")
    ax.set_ylabel("test accuracy at early stop (%)")
    ax.set_title(f"{title}: the price of a ticket (labels: % weights remaining)")
    ax.grid(True, which="both", alpha=0.3)
    if many:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    else:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(os.path.join(report_dir, "price_of_a_ticket.png"), dpi=110,
                **({"bbox_inches": "tight"} if many else {}))
    plt.close(fig)


def _mask_distances(plt, runs, report_dir, title):
    """One panel per Early-Bird main line (its first trial), one line per round."""
    panels = {}
    for run in runs:
        for key, levels in run.items():
            if branches.is_search_series(key) and key not in panels:
                panels[key] = levels
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for ax, (key, levels) in zip(axes[0], panels.items()):
        rule = None
        for r in sorted(levels):
            rule = levels[r].get("early_bird")
            if not rule or not rule["distances"]:
                continue
            norm = rule["normalization"]
            points = rule["distances"]
            line, = ax.plot([p["iteration"] for p in points], [p[norm] for p in points],
                            marker=".", markersize=3,
                            label=f"round {r} ({levels[r]['remaining_pct']:.1f}%)")
            if rule["stopped_at"] is not None:
                stop = [p for p in points if p["iteration"] == rule["stopped_at"]]
                ax.plot([rule["stopped_at"]], [stop[0][norm] if stop else 0.0], "x",
                        color=line.get_color(), markersize=8)
        if rule:
            ax.axhline(rule["epsilon"], color="k", linestyle="--", linewidth=1,
                       label=f"epsilon {rule['epsilon']:g} (window {rule['window']})")
            ax.set_ylabel(f"mask distance (normalised by {rule['normalization']})")
        ax.set_xlabel("training iteration")
        ax.set_ylim(bottom=0.0)
        ax.set_title(f"{title}: {branches.series_label(key)}\n(x: where the round stopped)",
                     fontsize="small")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(os.path.join(report_dir, "mask_distance.png"), dpi=110)
    plt.close(fig)
