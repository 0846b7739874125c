"""How far apart two masks are, and Early-Bird's stopping rule (You et al. 2020).

Two masks chosen by one pruning step from the same masks (the round's) remove
the same number k of weights (per layer, or in total for a pooled scope), so
they differ in 2 x (weights one prunes and the other keeps) positions. The
Hamming distance is that count, normalised:

  pruned  by 2k: the fraction of the pruned set that changed, in [0, 1]
          whatever the sparsity (the default: a round at 3.6 % remaining,
          which removes 0.7 % of the weights, is judged like round 0)
  all     by every prunable weight (Early-Bird's convention, from dense):
          at most 2k / N, which shrinks round after round, so one epsilon
          stops late rounds at once whether or not their masks settled
"""

import numpy as np

NORMALIZATIONS = ("pruned", "all")


def hamming(a, b):
    """Positions where masks `a` and `b` (layer name -> array) differ, over all layers."""
    return int(sum(np.count_nonzero((a[name] != 0) != (b[name] != 0)) for name in a))


def distances(a, b, before):
    """{normalization: distance} between masks `a` and `b` pruned from `before`.

    Args:
      a, b: masks chosen by one pruning step from `before` (layer name -> array).
      before: the masks they were pruned from.
    """
    differing = hamming(a, b)
    total = sum(m.size for m in before.values())
    pruned = sum(int(np.count_nonzero(before[n])) - int(np.count_nonzero(a[n])) for n in before)
    return {"pruned": differing / (2 * pruned) if pruned else 0.0, "all": differing / total}


def should_stop(history, epsilon, window):
    """Whether the last `window` distances (oldest first) are all <= `epsilon`."""
    return len(history) >= window and all(d <= epsilon for d in history[-window:])
