"""magnitude_increase: |w_final| - |w_init| (Zhou et al. 2019, "Deconstructing
Lottery Tickets", Figure 1; `magnitude_increase` in the authors' code,
github.com/uber-research/deconstructing-lottery-tickets, get_weight_init.py).

"init" is where the round started: θ0, or the rewind point.
"""

import numpy as np

from lottery_tf.pruning.criteria import CRITERIA
from lottery_tf.pruning.criteria.base import Criterion


@CRITERIA.register("magnitude_increase")
class MagnitudeIncrease(Criterion):
    reads = ("trained", "init")

    def scores(self, context):
        return {name: np.abs(kernel) - np.abs(context.init[name])
                for name, kernel in context.trained.items()}
