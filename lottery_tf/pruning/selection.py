"""Selection: scores and current masks in, new masks out (the mechanism).

How much each layer loses in a round (the schedule: IMP rates per group,
one-shot targets) is decided in `schedule.py` and handed in as `fractions`:
the fraction of each layer's *surviving* weights to remove. What the scores
are is the criterion's business (`criteria/`). Selections are pure numpy
functions of their inputs, so the same inputs give the same masks in any
process, which is what makes resuming exact.
"""

import numpy as np

from lottery_tf.registry import Registry

SCOPES = Registry("pruning scope")


def count_to_prune(fraction, alive):
    """round-half-up(fraction * alive): immune to 0.2 * 235200 = 47040.000000004."""
    return int(np.floor(fraction * alive + 0.5))


def prune_lowest(scores, mask, fraction):
    """Removes the lowest-scoring `fraction` of the weights alive in `mask`.

    Ties in score are broken by flat (C-order) index: the lower index is
    pruned first, so the result never depends on the sort implementation.
    Returns a new float mask of the same shape and dtype as `mask`.
    """
    if scores.shape != mask.shape:
        raise ValueError(f"scores {scores.shape} and mask {mask.shape} differ")
    flat_mask = mask.reshape(-1)
    alive = np.flatnonzero(flat_mask)
    k = count_to_prune(fraction, alive.size)
    new_mask = flat_mask.copy()
    if k:
        alive_scores = scores.reshape(-1)[alive]
        new_mask[alive[np.argsort(alive_scores, kind="stable")[:k]]] = 0
    return new_mask.reshape(mask.shape)


@SCOPES.register("layerwise")
def layerwise(scores, masks, fractions):
    """Each layer loses `fractions[name]` of its surviving weights (paper)."""
    return {
        name: prune_lowest(scores[name], masks[name], fractions[name])
        for name in masks
    }


@SCOPES.register("global")
def global_(scores, masks, fractions):
    """One score threshold across every layer with a nonzero fraction.

    The layers pruned together must share one fraction (the global rate);
    layers with fraction 0 are left alone. Survivors of all included layers
    are ranked together by score; ties go by layer order (as in `masks`)
    and then by flat index.
    """
    included = [name for name in masks if fractions[name] > 0]
    rates = {fractions[name] for name in included}
    if len(rates) > 1:
        raise ValueError(f"global pruning needs one rate, got {sorted(rates)}")
    new_masks = {name: mask.copy() for name, mask in masks.items()}
    if not included:
        return new_masks
    alive = [np.flatnonzero(masks[name].reshape(-1)) for name in included]
    ranked = np.concatenate(
        [scores[name].reshape(-1)[idx] for name, idx in zip(included, alive)]
    )
    owner = np.concatenate([np.full(idx.size, i) for i, idx in enumerate(alive)])
    position = np.concatenate(alive)
    k = count_to_prune(rates.pop(), ranked.size)
    # Stable sort over (layer order, flat index) order breaks ties as documented.
    chosen = np.argsort(ranked, kind="stable")[:k]
    for i, name in enumerate(included):
        new_masks[name].reshape(-1)[position[chosen[owner[chosen] == i]]] = 0
    return new_masks


# The global scope ranks its layers together: one pool, one fraction.
global_.pooled = True


def iterated(select, score, masks, fractions, steps):
    """`select` in `steps` steps, re-scoring before each (SynFlow's schedule).

    Exponential schedule: steps 1..n-1 each remove 1 - (1 - f)^(1/n) of the
    survivors, so after step k about (1 - f)^(k/n) remain; the last step
    removes exactly what is left to reach the count one step would remove
    (per layer, or per pool for a pooled scope such as global), so iterated
    and one-step pruning end at the same counts.

    Args:
      select: a registered scope.
      score: masks -> scores (the criterion, evaluated under those masks).
      masks, fractions: as for `select`.
      steps: the number of steps, >= 1.
    """
    start = masks
    rate = {name: 1.0 - (1.0 - f) ** (1.0 / steps) for name, f in fractions.items()}
    for step in range(1, steps + 1):
        if step < steps:
            now = rate
        else:
            now = _rest(start, masks, fractions, getattr(select, "pooled", False))
        masks = select(score(masks), masks, now)
    return masks


def _rest(start, masks, fractions, pooled):
    """Fractions that take `masks` to the counts one step from `start` would leave."""
    def alive(names, of):
        return sum(int(np.count_nonzero(of[name])) for name in names)

    pools = [[name for name in masks if fractions[name] > 0]] if pooled else [[name] for name in masks]
    rest = {name: 0.0 for name in masks}
    for pool in pools:
        if not pool:
            continue
        before, now = alive(pool, start), alive(pool, masks)
        want = before - count_to_prune(fractions[pool[0]], before)
        # Guarded: rounding in earlier steps could (in tiny layers) overshoot.
        fraction = max(0.0, (now - want) / now) if now else 0.0
        for name in pool:
            rest[name] = fraction
    return rest
