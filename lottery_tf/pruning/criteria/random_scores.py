"""random: uniformly random scores (the random-pruning baseline of Frankle et
al. 2021 and Tanaka et al. 2020), seeded.

Under the layerwise scope each layer loses its count at random; under the
global scope every layer loses about the same fraction. The draw depends on
the seed (`context.seed`, else the run's --seed) and on how many weights are
alive, so successive IMP rounds draw afresh and a rerun draws the same.
"""

import numpy as np

from lottery_tf.pruning.criteria import CRITERIA
from lottery_tf.pruning.criteria.base import Criterion


@CRITERIA.register("random")
class RandomScores(Criterion):
    reads = ("seed",)

    def scores(self, context):
        seed = context.seed if context.seed is not None else getattr(self.config, "seed", 0)
        alive = sum(int(np.count_nonzero(mask)) for mask in context.masks.values())
        rng = np.random.default_rng([int(s) for s in np.atleast_1d(seed)] + [alive])
        return {name: rng.random(mask.shape) for name, mask in context.masks.items()}
