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
