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

A residual block (`layers.Residual`) compacts each branch as a chain with the
same functions (`plan_chain`, `needed_in_chain`, `compact_chain`): a channel
of the sum is removed only when it is constant on every branch (then it is
folded downstream like any constant) or read by nothing downstream; a branch
that is constant at a kept channel keeps computing it, or, where its compact
chain does not produce it (an identity shortcut of a constant channel), its
constant goes into the block's bias.
"""

import dataclasses

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
    channels = network.input_shape[-1]
    plan = plan_chain(network.layers, network.input_shape, np.full(channels, np.nan))
    # Logits are outputs: every one is kept.
    needed = needed_in_chain(network.layers, plan, np.ones(plan.shapes[-1][-1], bool))
    layers, reports, needed = compact_chain(
        network.layers, plan, needed, None if gather_inputs else np.ones(channels, bool))
    if not needed[0].all():
        layers.insert(0, Gather("input_gather", np.flatnonzero(needed[0])))
    return ir.Network(tuple(network.input_shape), layers), reports


@dataclasses.dataclass
class ChainPlan:
    """The forward pass of a compaction over a chain: per tensor its shape and
    which channels are constant (value, NaN where not); per layer its state."""

    shapes: list
    consts: list
    states: list


def plan_chain(layers, in_shape, in_const):
    """Forward: which channels of each tensor of the chain are constant."""
    shapes = ir.chain_shapes(layers, in_shape)
    consts, states = [np.asarray(in_const, np.float64)], []
    for layer, shape in zip(layers, shapes):
        out, state = layer.constants(consts[-1], shape)
        consts.append(out)
        states.append(state)
    return ChainPlan(shapes, consts, states)


def needed_in_chain(layers, plan, needed_out):
    """Backward: which channels of each tensor a kept unit downstream reads.

    `needed_out` (the chain's outputs to keep) is kept whether constant or not:
    the layer computing a constant output channel emits it from its bias."""
    needed = [None] * len(layers) + [np.asarray(needed_out, bool)]
    for i in range(len(layers) - 1, -1, -1):
        needed[i] = np.isnan(plan.consts[i]) & layers[i].reads_given(
            needed[i + 1], plan.shapes[i], plan.states[i])
    return needed


def compact_chain(layers, plan, needed, needed_in=None):
    """(compact layers, reports, channels kept before each tensor) of a chain.

    Args:
      layers, plan, needed: the chain, its `plan_chain` and `needed_in_chain`.
      needed_in: the channels the compact chain receives (dead ones included:
        kept as zero kernel rows, never gathered); None: exactly the needed
        ones (the caller gathers them).
    """
    live_inputs = [n.copy() for n in needed]  # before dead features are kept (reports)
    needed = list(needed)
    if needed_in is not None:
        needed[0] = np.asarray(needed_in, bool)
        for i, layer in enumerate(layers):
            needed[i + 1] = layer.needed_without_gather(needed[i], needed[i + 1], plan.shapes[i])
    # Kept outputs of the chain are computed, not folded: not "constant" in reports.
    out_consts = plan.consts[1:-1] + [np.where(needed[-1], np.nan, plan.consts[-1])]
    compact_layers, reports = [], []
    for i, layer in enumerate(layers):
        step = ir.Step(in_shape=plan.shapes[i], in_const=plan.consts[i], out_const=out_consts[i],
                       state=plan.states[i], needed_in=needed[i], needed_out=needed[i + 1],
                       live_in=live_inputs[i])
        new_layers, report = layer.compacted(step)
        compact_layers.extend(new_layers)
        if isinstance(report, list):
            reports.extend(report)
        elif report is not None:
            reports.append(report)
    return compact_layers, reports, needed
