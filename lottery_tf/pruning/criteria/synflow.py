"""synflow: iterative synaptic flow, data-free (Tanaka et al. 2020, "Pruning
neural networks without any data by iteratively conserving synaptic flow").

Score |w ⊙ dR/dw| with R the sum of the outputs of the network whose every
weight is replaced by its absolute value (biases and batch-norm statistics
too), on one all-ones input of the model's input shape, at the start weights
under the current masks. Pruning re-scores after each of
--synflow_iterations steps on the exponential schedule (after step k of n a
layer keeps (1 - fraction)^(k/n) of what it had; `Pruner` does the steps).
As the authors' code (github.com/ganguli-lab/Synaptic-Flow,
Pruners/pruners.py `SynFlow.score`, prune.py `prune_loop`) it evaluates in
inference mode and in float32; it reads no data and no loss: the input's
shape comes from the model.
"""

import numpy as np
import tensorflow as tf

from lottery_tf.pruning.criteria import CRITERIA
from lottery_tf.pruning.criteria.base import Criterion
from lottery_tf.pruning.criteria.network import kernel_gradients, network_at

DEFAULT_ITERATIONS = 100


@CRITERIA.register("synflow")
class SynFlow(Criterion):
    reads = ("init", "start", "model")

    @property
    def steps(self):
        return self.config.synflow_iterations if self.config is not None else DEFAULT_ITERATIONS

    def scores(self, context):
        model = context.model
        ones = tf.ones([1] + list(model.inputs[0].shape[1:]), model.inputs[0].dtype)
        with network_at(context, transform=np.abs) as layers:
            kernels, grads = kernel_gradients(
                layers, lambda: tf.reduce_sum(model(ones, training=False)))
            return {name: np.abs((grads[name] * kernel).numpy()) for name, kernel in kernels.items()}
