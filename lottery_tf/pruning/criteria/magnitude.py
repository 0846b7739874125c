"""Magnitude: |w| after training (Frankle & Carbin 2019; the default)."""

import numpy as np

from lottery_tf.pruning.criteria import CRITERIA
from lottery_tf.pruning.criteria.base import Criterion


@CRITERIA.register("magnitude")
class Magnitude(Criterion):
    reads = ("trained",)

    def scores(self, context):
        return {name: np.abs(kernel) for name, kernel in context.trained.items()}
