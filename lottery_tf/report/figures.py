"""Report figures (matplotlib, Agg backend: no display needed)."""

import os

from lottery_tf.lottery import branches


def _errorbar(ax, rows, metric, label, style, scale=100.0):
    xs = [r["remaining_pct"] for r in rows]
    ys = [scale * r[metric] for r in rows]
    low = [scale * (r[metric] - r[f"{metric}_min"]) for r in rows]
    high = [scale * (r[f"{metric}_max"] - r[metric]) for r in rows]
    color, variant = style
    ax.errorbar(xs, ys, yerr=[low, high], label=label, marker="o", markersize=4, capsize=3, color=color,
                linestyle="--" if variant else "-", markerfacecolor="white" if variant else color)


def styles(keys, palette):
    """{series key: (color, is_variant)}.

    A series whose key is another's plus ", DETAIL" (an at-init criterion's
    shuffle, reinit or invert ablation: "at_init:snip, global, shuffle") is a
    variant of it: drawn in its color, dashed with open markers, so each
    criterion reads as one color whatever its ablations. The other series
    take the palette's colors in order.
    """
    keys = list(keys)

    def base(key):
        parent = next((other for other in keys if key.startswith(other + ", ")), None)
        return key if parent is None else base(parent)

    bases = [key for key in keys if base(key) == key]
    color = {key: palette(i, len(bases)) for i, key in enumerate(bases)}
    return {key: (color[base(key)], base(key) != key) for key in keys}


def palette(plt):
    """The i-th of n colors: matplotlib's cycle for up to 10, else tab20's (the cycle repeats after 10)."""
    return lambda i, n: f"C{i}" if n <= 10 else plt.cm.tab20(i % 20)


def _log_remaining_axis(ax):
    ax.set_xscale("log")
    ax.invert_xaxis()
    ticks = [100, 51.3, 21.1, 7.0, 3.6, 1.9, 1.0]
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.set_xlabel("% of weights remaining")
    ax.grid(True, which="both", alpha=0.3)


def _legend(ax, count, outside=True):
    """The legend: inside for a few series; beside the axes for many (it would hide points)."""
    if count <= 6:
        ax.legend()
    elif outside:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))


def _fit(count):
    """savefig arguments that keep a legend beside the axes in the picture."""
    return {"bbox_inches": "tight"} if count > 6 else {}


def plot(rows, runs, report_dir, title, curve_rounds, layers_at_remaining=7.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {row["series"]: branches.series_label(row["series"]) for row in rows}
    series = {kind: [r for r in rows if r["series"] == kind] for kind in labels}
    series = {kind: sorted(rs, key=lambda r: -r["remaining_pct"]) for kind, rs in series.items() if rs}
    style = styles(series, palette(plt))

    extra = 4.5 if len(series) > 6 else 0.0  # room for a legend beside the axes
    fig, axes = plt.subplots(1, 2, figsize=(12 + extra, 4.5), sharey=True)
    for ax, metric, name in zip(axes, ("early_stop_test_accuracy", "final_test_accuracy"),
                                ("at early stop", "at end of training")):
        for kind, rs in series.items():
            _errorbar(ax, rs, metric, labels[kind], style[kind])
        _log_remaining_axis(ax)
        ax.set_title(f"{title}: test accuracy {name}")
        ax.set_ylabel("test accuracy (%)")
        _legend(ax, len(series), outside=ax is axes[-1])
    fig.tight_layout()
    fig.savefig(os.path.join(report_dir, "accuracy_vs_remaining.png"), dpi=110, **_fit(len(series)))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5 + extra, 4.5))
    for kind, rs in series.items():
        _errorbar(ax, rs, "early_stop_iteration", labels[kind], style[kind], scale=1.0)
    _log_remaining_axis(ax)
    ax.set_ylabel("early-stopping iteration (min val loss)")
    ax.set_title(f"{title}: early-stopping iteration")
    _legend(ax, len(series))
    fig.tight_layout()
    fig.savefig(os.path.join(report_dir, "early_stop_vs_remaining.png"), dpi=110, **_fit(len(series)))
    plt.close(fig)

    _layers_by_method(plt, series, labels, style, runs, report_dir, title, layers_at_remaining)

    imp = next(iter(runs[0].values()))
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
    # The first run's main line and its trials (not other main lines: reset modes, Early-Bird search).
    same_line = [run[next(iter(runs[0]))] for run in runs if next(iter(run)) == next(iter(runs[0]))]
    for r in chosen:
        iterations, mean = mean_curve([main[r]["curve"] for main in same_line if r in main])
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


def mean_curve(curves):
    """(iterations, mean test accuracy in %) over the iterations that every curve has.

    Trials' curves differ in length when training stops early (an Early-Bird
    search round ends when its mask settles, at a different iteration in each
    trial); past the shortest one a mean would no longer be over all the runs.
    """
    by_iteration = [{p["iteration"]: p["test_accuracy"] for p in curve} for curve in curves]
    common = sorted(set.intersection(*(set(c) for c in by_iteration)))
    return common, [100 * sum(c[i] for c in by_iteration) / len(by_iteration) for i in common]


def _layers_by_method(plt, series, labels, style, runs, report_dir, title, at_remaining):
    """Bars of % remaining per layer, one group per layer, one bar per series.

    Each series shows its level whose mean overall % remaining is nearest
    `at_remaining`, averaged over the trials that have it: where IMP, the
    at-init criteria and the tfmot arm put the weights they keep.
    """
    chosen = {}
    for key, rows in series.items():
        row = min(rows, key=lambda r: abs(r["remaining_pct"] - at_remaining))
        by_layer = [run[key][row["level"]]["remaining_pct_by_layer"] for run in runs
                    if row["level"] in run.get(key, {})]
        chosen[key] = (row["remaining_pct"], {
            layer: sum(b[layer] for b in by_layer) / len(by_layer) for layer in by_layer[0]})
    layers = list(next(iter(chosen.values()))[1])
    width = 0.8 / len(chosen)
    fig, ax = plt.subplots(figsize=(max(7.5, 0.9 * len(layers) * (1 + 0.15 * len(chosen))), 5.0))
    for i, (key, (overall, by_layer)) in enumerate(chosen.items()):
        xs = [j - 0.4 + width * (i + 0.5) for j in range(len(layers))]
        color, variant = style[key]
        ax.bar(xs, [by_layer.get(layer, 0.0) for layer in layers], width,
               label=f"{labels[key]} ({overall:.2f}%)", color="white" if variant else color,
               edgecolor=color, hatch="///" if variant else None)
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels(layers)
    ax.set_yscale("log")
    ax.set_ylabel("% of the layer's weights remaining")
    ax.set_title(f"{title}: per-layer sparsity near {at_remaining:g}% remaining (overall % in legend)")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2)
    fig.savefig(os.path.join(report_dir, "layer_sparsity_by_method.png"), dpi=110, bbox_inches="tight")
    plt.close(fig)
