"""snip: connection sensitivity |dL/dw * w| at the start weights (Lee et al. 2019,
"SNIP: Single-shot Network Pruning based on Connection Sensitivity").

The loss is the training loss on one training batch (`context.batch`), at
the round's start weights (θ0, or the rewind point) under its masks. SNIP
normalizes the sensitivities by their sum, which changes no ranking, so the
scores here are the raw |g * w| (as Tanaka et al.'s implementation before its
normalization, github.com/ganguli-lab/Synaptic-Flow, Pruners/pruners.py).
"""

import numpy as np

from lottery_tf.pruning.criteria import CRITERIA
from lottery_tf.pruning.criteria.base import Criterion
from lottery_tf.pruning.criteria.network import kernel_gradients, network_at


@CRITERIA.register("snip")
class Snip(Criterion):
    reads = ("init", "start", "model", "batch", "loss")

    def scores(self, context):
        images, labels = context.batch()
        with network_at(context) as layers:
            kernels, grads = kernel_gradients(
                layers, lambda: context.loss(labels, context.model(images, training=False)))
            return {name: np.abs((grads[name] * kernel).numpy()) for name, kernel in kernels.items()}
