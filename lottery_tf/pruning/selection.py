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


def units_to_prune(fraction, weights):
    """How many units to prune, lowest-scoring first, when each unit holds several weights.

    The count is of weights: round-half-up(fraction * live weights), as
    `count_to_prune`. Units (blocks) are taken in pruning order while that
    brings the pruned weights closer to the count; a tie (the count halfway
    between two cumulative sums) takes the fewer units. So a count that is not
    a multiple of the block size misses by at most half a block.

    Args:
      fraction: the fraction of the live weights to remove.
      weights: live weights per unit, in the order they would be pruned.
    """
    k = count_to_prune(fraction, int(weights.sum()))
    reached = np.concatenate([[0], np.cumsum(weights)])
    return int(np.argmin(np.abs(reached - k)))  # the first (fewest) of equally close


def prune_lowest(scores, mask, fraction, weights=None):
    """Removes the lowest-scoring `fraction` of the weights alive in `mask`.

    Ties in score are broken by flat (C-order) index: the lower index is
    pruned first, so the result never depends on the sort implementation.
    Returns a new float mask of the same shape and dtype as `mask`.

    Args:
      scores, mask: arrays of one shape; each entry a weight, or a block of
        weights (`blocks.pool`).
      fraction: the fraction of the live weights to remove.
      weights: None (each entry one weight), or the live weights of each
        entry (`units_to_prune` says how many entries that is).
    """
    if scores.shape != mask.shape:
        raise ValueError(f"scores {scores.shape} and mask {mask.shape} differ")
    flat_mask = mask.reshape(-1)
    alive = np.flatnonzero(flat_mask)
    new_mask = flat_mask.copy()
    if weights is None:
        k = count_to_prune(fraction, alive.size)
        if k:
            alive_scores = scores.reshape(-1)[alive]
            new_mask[alive[np.argsort(alive_scores, kind="stable")[:k]]] = 0
    else:
        order = alive[np.argsort(scores.reshape(-1)[alive], kind="stable")]
        new_mask[order[:units_to_prune(fraction, weights.reshape(-1)[order])]] = 0
    return new_mask.reshape(mask.shape)


@SCOPES.register("layerwise")
def layerwise(scores, masks, fractions, weights=None):
    """Each layer loses `fractions[name]` of its surviving weights (paper).

    `weights`: None, or layer name -> live weights per entry, when the
    entries are blocks (`prune_lowest`).
    """
    return {
        name: prune_lowest(scores[name], masks[name], fractions[name],
                           None if weights is None else weights[name])
        for name in masks
    }


@SCOPES.register("global")
def global_(scores, masks, fractions, weights=None):
    """One score threshold across every layer with a nonzero fraction.

    The layers pruned together must share one fraction (the global rate);
    layers with fraction 0 are left alone. Survivors of all included layers
    are ranked together by score; ties go by layer order (as in `masks`)
    and then by flat index. `weights`: as for `layerwise`.
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
    # Stable sort over (layer order, flat index) order breaks ties as documented.
    order = np.argsort(ranked, kind="stable")
    if weights is None:
        k = count_to_prune(rates.pop(), ranked.size)
    else:
        live = np.concatenate([weights[name].reshape(-1)[idx] for name, idx in zip(included, alive)])
        k = units_to_prune(rates.pop(), live[order])
    chosen = order[:k]
    for i, name in enumerate(included):
        new_masks[name].reshape(-1)[position[chosen[owner[chosen] == i]]] = 0
    return new_masks


# The global scope ranks its layers together: one pool, one fraction.
global_.pooled = True


def iterated(select, score, masks, fractions, steps):
    """`select` in `steps` steps, re-scoring before each (SynFlow's schedule).

    Exponential schedule, as Tanaka et al.'s `prune_loop`: after step k of n,
    each layer (or each pool, for a pooled scope such as global) has lost
    round-half-up((1 - (1 - f)^(k/n)) * alive) of the `alive` weights it
    started with, so the last step ends at the count one step would remove,
    and no step removes more than the schedule has reached.

    Args:
      select: a registered scope.
      score: masks -> scores (the criterion, evaluated under those masks).
      masks, fractions: as for `select`.
      steps: the number of steps, >= 1.
    """
    start = masks
    pools = ([[name for name in masks if fractions[name] > 0]] if getattr(select, "pooled", False)
             else [[name] for name in masks])
    for step in range(1, steps + 1):
        now = {name: 0.0 for name in masks}
        for pool in filter(None, pools):
            before = sum(int(np.count_nonzero(start[name])) for name in pool)
            alive = sum(int(np.count_nonzero(masks[name])) for name in pool)
            f = fractions[pool[0]]
            reached = f if step == steps else 1.0 - (1.0 - f) ** (step / steps)
            todo = count_to_prune(reached, before) - (before - alive)
            for name in pool:
                now[name] = todo / alive if alive else 0.0
        masks = select(score(masks), masks, now)
    return masks
