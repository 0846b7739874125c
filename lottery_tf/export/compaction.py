"""Structured compaction of a pruned network.

Pure numpy, no TensorFlow: this module decides *what* a compact network is
(policy); `serving.py` and `tflite.py` turn the result into a SavedModel or a
TFLite file (mechanism). A network is an `ir.Network`, a chain of `ir.Layer`s
whose kernels are already zero where pruned; this module only iterates over
it and calls the layers' compaction hooks (see `ir.Layer`).

Structured compaction removes, exactly (same outputs up to float rounding):

* input features / channels whose weights are all pruned, with a `Gather` of
  the others, if asked (`gather_inputs=True`); by default they are found and
  reported but kept as all-zero kernel rows, which measured faster here;
* units (dense units, conv filters) with no live incoming weight from a
  non-constant input: such a unit emits `activation(bias + constant inputs)`
  everywhere, which is folded into the next layer's bias. Through a conv with
  `same` padding a constant channel contributes less at the borders (its
  taps fall into the zero padding there), so the folded term is a per-position
  bias map whenever it is not uniform; a unit that only sees such a
  non-uniform constant is kept, never approximated;
* units with no live outgoing weight to a kept unit (nothing downstream reads
  them).

The output layer keeps all its units (logits), constant or not.
"""

import numpy as np

from lottery_tf.export import ir
from lottery_tf.export.layers import Gather
from lottery_tf.export.ir import LayerReport, UnsupportedNetwork  # noqa: F401  (API)


def check_supported(network):
    """Raises `UnsupportedNetwork` for what `compact` cannot handle."""
    if not network.layers or not getattr(network.layers[-1], "can_be_output", False):
        raise UnsupportedNetwork("the last layer must be a Dense output layer")
    for layer in network.layers:
        if isinstance(layer, ir.Layer):
            layer.check()
    ir.shapes(network)  # raises on shape problems


def compact(network, gather_inputs=False):
    """The structurally compacted network and a `LayerReport` per weighted layer.

    Args:
      network: an `ir.Network` whose kernels are zero where pruned.
      gather_inputs: drop dead features of the network input (and of a
        flattened conv output) with a `Gather` in front of the layer reading
        them. Off by default: measured on a 2-core CPU, `tf.gather` along the
        feature axis of a (256, 784) batch costs more than the rows it saves
        in the next matmul (see docs/EXPORT.md), so dead inputs stay as all-zero
        kernel rows, which sparse storage keeps for free. Dead units and
        channels are always removed (that needs no gather).

    Raises:
      UnsupportedNetwork: a layer, activation or shape compaction cannot handle.
    """
    check_supported(network)
    layers = network.layers
    tensor_shapes = ir.shapes(network)
    last = len(layers) - 1

    # Forward: which channels are constant, and their value (NaN: not constant).
    consts, states = [np.full(tensor_shapes[0][-1], np.nan)], []
    for i, layer in enumerate(layers):
        out, state = layer.constants(consts[-1], tensor_shapes[i])
        if i == last:
            out = np.full_like(out, np.nan)  # logits are outputs: every one is kept
        consts.append(out)
        states.append(state)

    # Backward: which channels a kept unit downstream reads.
    needed = [None] * (len(layers) + 1)
    needed[-1] = np.ones(tensor_shapes[-1][-1], bool)
    for i in range(last, -1, -1):
        needed[i] = np.isnan(consts[i]) & layers[i].reads(needed[i + 1], tensor_shapes[i])

    live_inputs = [n.copy() for n in needed]  # before dead features are kept (reports)
    if not gather_inputs:
        needed[0] = np.ones_like(needed[0])
        for i, layer in enumerate(layers):
            needed[i + 1] = layer.needed_without_gather(needed[i], needed[i + 1],
                                                        tensor_shapes[i])

    # Build the compact chain.
    compact_layers, reports = [], []
    if not needed[0].all():
        compact_layers.append(Gather("input_gather", np.flatnonzero(needed[0])))
    for i, layer in enumerate(layers):
        step = ir.Step(in_shape=tensor_shapes[i], in_const=consts[i], out_const=consts[i + 1],
                       state=states[i], needed_in=needed[i], needed_out=needed[i + 1],
                       live_in=live_inputs[i])
        new_layers, report = layer.compacted(step)
        compact_layers.extend(new_layers)
        if report is not None:
            reports.append(report)
    return ir.Network(tuple(network.input_shape), compact_layers), reports
