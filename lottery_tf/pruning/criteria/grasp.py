"""grasp: gradient signal preservation (Wang et al. 2020, "Picking Winning Tickets
Before Training by Preserving Gradient Flow").

GraSP scores S = -w ⊙ Hg, with g the loss gradient and H the Hessian at the
start weights, and removes the weights with the *highest* S (authors' code,
github.com/alecwangcq/GraSP, pruner/GraSP.py: `-layer.weight.data *
layer.weight.grad`, then it keeps `score <= threshold` of the top-k). Selection
here removes the lowest scores, so the score is w ⊙ Hg = -S: the same weights
go (as Tanaka et al.'s GraSP, github.com/ganguli-lab/Synaptic-Flow,
Pruners/pruners.py: "Hg * theta (negate to remove top percent)").

One Hessian-vector product, Hg = d(stop_gradient(g) · g)/dw, on one training
batch, with the logits divided by the authors' temperature T = 200 (their
code's default, kept by Tanaka et al.). The normalization by |sum(S)| in both
codes is a positive factor and changes no ranking.
"""

import tensorflow as tf

from lottery_tf.pruning.criteria import CRITERIA
from lottery_tf.pruning.criteria.base import Criterion
from lottery_tf.pruning.criteria.network import network_at

TEMPERATURE = 200.0


@CRITERIA.register("grasp")
class Grasp(Criterion):
    reads = ("init", "start", "model", "batch", "loss")

    def scores(self, context):
        images, labels = context.batch()
        with network_at(context) as layers:
            kernels = [layer.kernel for layer in layers.values()]
            with tf.GradientTape() as outer:
                with tf.GradientTape() as inner:
                    logits = context.model(images, training=False) / TEMPERATURE
                    loss = context.loss(labels, logits)
                grads = inner.gradient(loss, kernels)
                z = tf.add_n([tf.reduce_sum(tf.stop_gradient(g) * g) for g in grads])
            hg = outer.gradient(z, kernels)
            return {name: (kernel * h).numpy() for name, kernel, h in zip(layers, kernels, hg)}
