"""Report figures (matplotlib, Agg backend: no display needed)."""

import os

from lottery_tf.lottery import branches


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

    labels = branches.series()
    series = {kind: [r for r in rows if r["series"] == kind] for kind in labels}
    series = {kind: sorted(rs, key=lambda r: -r["remaining_pct"]) for kind, rs in series.items() if rs}

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, metric, name in zip(axes, ("early_stop_test_accuracy", "final_test_accuracy"),
                                ("at early stop", "at end of training")):
        for kind, rs in series.items():
            _errorbar(ax, rs, metric, labels[kind])
        _log_remaining_axis(ax)
        ax.set_title(f"{title}: test accuracy {name}")
        ax.set_ylabel("test accuracy (%)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(report_dir, "accuracy_vs_remaining.png"), dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for kind, rs in series.items():
        _errorbar(ax, rs, "early_stop_iteration", labels[kind], scale=1.0)
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


