"""The network at its start weights, for criteria that differentiate it.

At-initialization criteria (SNIP, GraSP, SynFlow) score the network the
round starts from — θ0, or the rewind point — under the round's masks, not
the trained one the model may hold. `network_at` puts those weights in the
model for the length of a `with` block and restores every weight (masks
included) exactly afterwards, so the caller's model is left as it was.

These criteria evaluate the network in inference mode (`training=False`:
batch norm uses its moving statistics), as Tanaka et al.'s reference code
does for every pruner (github.com/ganguli-lab/Synaptic-Flow, prune.py:
`model.eval()`).
"""

import contextlib

import numpy as np
import tensorflow as tf


def _key(variable):
    return variable.name.split(":")[0]


def _masked_layers(model, names):
    """name -> layer, for the model's layers (nested ones too) named in `names`."""
    found = {layer.name: layer for layer in model.submodules
             if getattr(layer, "name", None) in names and hasattr(layer, "mask")}
    missing = sorted(set(names) - set(found))
    if missing:
        raise ValueError(f"the model has no masked layer {missing[0]!r}")
    return {name: found[name] for name in names}


@contextlib.contextmanager
def network_at(context, transform=None):
    """The context's model at its start weights under its masks; yields name -> layer.

    Kernels become `context.init[name] * mask`; every other weight comes from
    `context.start` when given, else stays as the model holds it. With
    `transform` (e.g. `np.abs`), every weight value passes through it first.
    """
    model = context.model
    layers = _masked_layers(model, context.masks)
    masks = {id(layer.mask) for layer in layers.values()}
    saved = [(v, v.numpy()) for v in model.weights]
    transform = transform or (lambda value: value)
    try:
        for variable, value in saved:
            if id(variable) not in masks:
                start = context.start.get(_key(variable), value) if context.start else value
                variable.assign(np.asarray(transform(start), value.dtype))
        for name, layer in layers.items():
            mask = np.asarray(context.masks[name], layer.mask.dtype.as_numpy_dtype)
            layer.mask.assign(mask)
            layer.kernel.assign(np.asarray(transform(context.init[name]), mask.dtype) * mask)
        yield layers
    finally:
        for variable, value in saved:
            variable.assign(value)


def kernel_gradients(layers, value_fn):
    """(kernels, d value / d kernel) of every masked layer, both name -> tensor."""
    kernels = {name: layer.kernel for name, layer in layers.items()}
    with tf.GradientTape() as tape:
        value = value_fn()
    grads = tape.gradient(value, list(kernels.values()))
    return kernels, dict(zip(kernels, grads))
