"""magnitude_at_init: |w| at the start weights (θ0, or the rewind point), before
any training (Frankle et al. 2021, "Pruning Neural Networks at Initialization:
Why Are We Missing the Mark?", their magnitude-at-initialization baseline;
`large_init` in Zhou et al. 2019)."""

import numpy as np

from lottery_tf.pruning.criteria import CRITERIA
from lottery_tf.pruning.criteria.base import Criterion


@CRITERIA.register("magnitude_at_init")
class MagnitudeAtInit(Criterion):
    reads = ("init",)

    def scores(self, context):
        return {name: np.abs(kernel) for name, kernel in context.init.items()}
