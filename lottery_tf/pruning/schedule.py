"""Pruning schedules: which fraction of each layer's survivors a round removes.

Policy only; the strategies in `pruning.py` do the removing.
"""

from lottery_tf import errors


def iterative_fractions(groups, rates):
    """IMP: every layer loses its group's rate of its survivors each round.

    Args:
      groups: layer name -> pruning group.
      rates: pruning group -> rate in [0, 1).
    """
    return {name: rates[group] for name, group in groups.items()}


def one_shot_fractions(groups, sizes, rates, target_sparsity):
    """One step to `target_sparsity` overall, with the IMP layer profile.

    Finds the (fractional) number of IMP rounds n after which the prunable
    weights' overall sparsity is the target, and prunes each layer as n IMP
    rounds would have: 1 - (1 - rate)^n. One-shot and iterative tickets of the
    same overall sparsity then share the same per-layer sparsities, which is
    the comparison the paper makes.
    """
    total = sum(sizes.values())

    def remaining(n):
        return sum(
            sizes[name] * (1.0 - rates[group]) ** n for name, group in groups.items()
        ) / total

    floor = sum(sizes[n] for n, g in groups.items() if rates[g] == 0) / total
    if 1.0 - target_sparsity <= floor:
        raise errors.LotteryError(
            f"--one_shot_sparsity={target_sparsity} is unreachable: layers with "
            f"rate 0 keep {floor:.1%} of the prunable weights"
        )
    lo, hi = 0.0, 1.0
    while remaining(hi) > 1.0 - target_sparsity:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if remaining(mid) > 1.0 - target_sparsity:
            lo = mid
        else:
            hi = mid
    n = 0.5 * (lo + hi)
    return {name: 1.0 - (1.0 - rates[group]) ** n for name, group in groups.items()}


def global_fractions(groups, rate, exclude):
    """Global pruning: `rate` of all survivors outside `exclude` each round.

    Args:
      groups: layer name -> pruning group.
      rate: the global rate.
      exclude: layer names or group names left unpruned.
    """
    return {
        name: 0.0 if (name in exclude or group in exclude) else rate
        for name, group in groups.items()
    }


def one_shot_global_fractions(groups, sizes, exclude, target_sparsity):
    """Global one-shot: the included layers lose enough to reach the target."""
    included = sum(
        sizes[name] for name, group in groups.items()
        if name not in exclude and group not in exclude
    )
    fraction = target_sparsity * sum(sizes.values()) / included if included else 1.0
    if fraction >= 1.0:
        raise errors.LotteryError(
            f"--one_shot_sparsity={target_sparsity} is unreachable: layers excluded "
            f"from global pruning keep {1 - included / sum(sizes.values()):.1%} of the weights"
        )
    return global_fractions(groups, fraction, exclude)


def fractions_for(config, groups, sizes, one_shot_target=None):
    """The fractions a round removes under `config`'s scope and schedule.

    Args:
      config: a `Config` (pruning scope, rates, exclusions).
      groups, sizes: layer name -> pruning group / kernel size.
      one_shot_target: overall sparsity to reach in one step, or None for
        one IMP round.
    """
    exclude = config.excluded_from_global()
    if config.pruning_scope == "global":
        if one_shot_target is None:
            return global_fractions(groups, config.global_rate, exclude)
        return one_shot_global_fractions(groups, sizes, exclude, one_shot_target)
    if one_shot_target is None:
        return iterative_fractions(groups, config.rates())
    return one_shot_fractions(groups, sizes, config.rates(), one_shot_target)
