"""large_init_large_final: keep the weights large both at init and after training.

Zhou et al. 2019 ("Deconstructing Lottery Tickets") keep, in each layer, the
weights whose |w_init| and |w_final| are both above one common percentile,
searched so that the layer loses its count (`large_init_large_final` in
github.com/uber-research/deconstructing-lottery-tickets, get_weight_init.py:
`bsearch_quadrant_threshold`). Keeping "both ranks above p" is keeping the
highest min(rank of |w_init|, rank of |w_final|), so the score here is that
minimum of the two percentile ranks among the layer's surviving weights:
selection then removes exactly the count, where the authors' binary search on
p may land a few weights off. Ranks are layer-relative, so under the global
scope every layer loses about the same fraction. Ties in magnitude rank by
flat index. "init" is where the round started: θ0, or the rewind point.
"""

import numpy as np

from lottery_tf.pruning.criteria import CRITERIA
from lottery_tf.pruning.criteria.base import Criterion


def percentile_ranks(values, alive):
    """Rank / count of each alive entry of `values` (ascending, ties by flat index); 0 elsewhere."""
    flat = values.reshape(-1)
    idx = np.flatnonzero(alive.reshape(-1))
    ranks = np.zeros(flat.size, np.float64)
    order = idx[np.argsort(flat[idx], kind="stable")]
    ranks[order] = (np.arange(idx.size) + 1.0) / max(idx.size, 1)
    return ranks.reshape(values.shape)


@CRITERIA.register("large_init_large_final")
class LargeInitLargeFinal(Criterion):
    reads = ("trained", "init")

    def scores(self, context):
        return {
            name: np.minimum(percentile_ranks(np.abs(context.init[name]), context.masks[name]),
                             percentile_ranks(np.abs(kernel), context.masks[name]))
            for name, kernel in context.trained.items()
        }
