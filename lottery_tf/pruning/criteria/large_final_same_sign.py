"""large_final_same_sign: |w_final| where the weight kept its initial sign, else
0 (Zhou et al. 2019, "Deconstructing Lottery Tickets": max(0, w_i w_f / |w_i|);
`large_final_same_sign` in github.com/uber-research/
deconstructing-lottery-tickets, get_weight_init.py, which zeroes |w_f| where
sign(w_i) != sign(w_f)).

Weights that changed sign all score 0 and go first, lowest flat index first
(the authors break those ties at random). "init" is where the round started:
θ0, or the rewind point.
"""

import numpy as np

from lottery_tf.pruning.criteria import CRITERIA
from lottery_tf.pruning.criteria.base import Criterion


@CRITERIA.register("large_final_same_sign")
class LargeFinalSameSign(Criterion):
    reads = ("trained", "init")

    def scores(self, context):
        return {
            name: np.where(np.sign(kernel) == np.sign(context.init[name]), np.abs(kernel), 0.0)
            .astype(kernel.dtype)
            for name, kernel in context.trained.items()
        }
