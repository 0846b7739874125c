"""The export's layer IR: a network is a chain of `Layer`s, each one class.

Pure numpy, no TensorFlow on import. A layer type is one subclass of `Layer`
that owns everything about it:

* `output_shape(in_shape)` and `forward(x)` (the numpy reference, float64);
* `from_keras(layer)` and `keras_types()`: which Keras layer classes it
  stands for (the registry `convert.network_from_model` looks layers up in);
* the compaction hooks `compaction.compact` calls (`check`, `constants`,
  `reads`, `needed_without_gather`, `compacted`);
* `arrays()`, what the serving graph stores, and `tf_call(tensors)`, the
  TensorFlow function the serving graph runs.

`register` adds a class to the registry, so adding a layer type is one class
plus `@register`. The defaults here are those of a *channel-wise* layer
(output channel c depends on input channel c only: a pooling, an activation, a
per-channel scale), so such a layer overrides little. A layer may hold other
layers (`sublayers`: the branches of a residual `Add`); `walk` visits them all.
"""

import dataclasses
import math

import numpy as np

ACTIVATIONS = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
}

ACTIVATIONS_TF = {
    "linear": lambda tf, x: x,
    "relu": lambda tf, x: tf.nn.relu(x),
    "sigmoid": lambda tf, x: tf.sigmoid(x),
    "tanh": lambda tf, x: tf.tanh(x),
}


class UnsupportedNetwork(ValueError):
    """The network uses something compaction does not handle."""


class NotConvertible(ValueError):
    """A Keras layer an IR class cannot stand for; the message says why."""


def tf_module():
    import tensorflow as tf

    return tf


# --- the registry ---------------------------------------------------------------------

_REGISTRY = []


def register(cls):
    """Class decorator: `cls` converts the Keras classes of its `keras_types()`."""
    if cls not in _REGISTRY:
        _REGISTRY.append(cls)
    return cls


def registered():
    """The registered IR classes, in registration order."""
    return list(_REGISTRY)


# --- the layer base class -----------------------------------------------------------------


class Layer:
    """One layer of a `Network`. Subclasses are dataclasses with a `name` field.

    Channels are the last axis. In the compaction hooks, `in_const` /
    `out_const` hold one float per channel: its value where the channel is
    the same constant for every input, NaN where it varies; `needed_*` are
    boolean per channel.
    """

    # Text for the "supported:" list of a refused Keras layer; None: no Keras layer.
    keras_description = None
    # Keras subclasses of `keras_types()` that are not registered themselves:
    # convert them like their registered ancestor (True) or refuse them (False).
    accepts_keras_subclasses = True
    # Whether the network may end with it (the logits layer).
    can_be_output = False
    # Whether its Keras layer takes several inputs (an `Add`): its
    # `from_keras(layer, branches)` then gets the IR chain from the tensor
    # where the branches fork to each input, in the Keras layer's input order.
    merges = False

    # --- shape, numpy, Keras ----------------------------------------------------------

    def output_shape(self, in_shape):
        """The output shape (no batch axis) for input shape `in_shape`."""
        return tuple(in_shape)

    def forward(self, x):
        """numpy float64 forward pass of a batch."""
        raise NotImplementedError

    @classmethod
    def keras_types(cls):
        """Keras layer classes this class stands for (imported lazily)."""
        return ()

    @classmethod
    def from_keras(cls, layer):
        """The IR layer for Keras `layer`; raises `NotConvertible(why)`."""
        raise NotConvertible("unknown layer type")

    def absorb(self, following):
        """This layer with `following` (the next layer of the chain) folded in,
        computing exactly what the two compute in turn; None: not foldable."""
        return None

    def sublayers(self):
        """The layers this layer holds (a residual block's branches)."""
        return ()

    # --- compaction hooks ------------------------------------------------------------

    def check(self):
        """Raises `UnsupportedNetwork` for what compaction cannot handle."""

    def constants(self, in_const, in_shape):
        """(out_const, state): which output channels are constant, and any state
        (folded pre-activations) `compacted` needs. Channel-wise: unchanged."""
        return in_const.copy(), None

    def reads(self, out_needed, in_shape):
        """Which input channels the needed output channels read (bool)."""
        return out_needed

    def reads_given(self, out_needed, in_shape, state):
        """`reads`, given the state `constants` returned (a layer holding others
        needs it to know what its inner layers leave constant)."""
        return self.reads(out_needed, in_shape)

    def needed_without_gather(self, needed_in, needed_out, in_shape):
        """The output channels to keep when dead inputs are kept, not gathered.

        `needed_in` may then hold more channels than compaction found needed:
        a channel-wise layer passes them all on."""
        return needed_in

    def compacted(self, step):
        """(layers, report or None): this layer in the compact network.

        `step` is a `compaction.Step` (shapes, constants, kept channels).
        Channel-wise: `keep_channels` of the kept input channels. A layer
        holding others may return a list of reports."""
        return [self.keep_channels(step.keep_in)], None

    def keep_channels(self, keep):
        """This layer restricted to channels `keep` (channel-wise layers)."""
        return self

    # --- storage and serving ---------------------------------------------------------

    def arrays(self):
        """name -> array the serving graph stores ("kernel" is stored sparsely;
        integer arrays as indices)."""
        return {}

    def stored_kernel(self):
        """The kernel whose storage format is chosen per layer, or None."""
        return self.arrays().get("kernel")

    def tf_call(self, tensors):
        """x -> layer(x) in TensorFlow; `tensors` maps `arrays()`' names to getters."""
        raise NotImplementedError

    def tf_build(self, getters):
        """x -> layer(x); `getters` maps the name of each layer `walk` visits to
        its `tensors` (a layer holding others builds theirs too)."""
        return self.tf_call(getters[self.name])


# --- shapes and numpy windows ---------------------------------------------------------------


def window_output(size, window, stride, dilation, padding):
    """Output length and leading padding of a conv/pool window along one axis."""
    effective = (window - 1) * dilation + 1
    if padding == "same":
        out = math.ceil(size / stride)
        pad_total = max((out - 1) * stride + effective - size, 0)
        return out, pad_total // 2
    if padding == "valid":
        return max(math.ceil((size - effective + 1) / stride), 0), 0
    raise UnsupportedNetwork(f"padding {padding!r} is not supported")


def conv2d(x, kernel, strides=(1, 1), padding="valid", dilation=(1, 1)):
    """Channels-last convolution of x (batch, h, w, in), as TensorFlow computes it."""
    kh, kw = kernel.shape[:2]
    out_h, top = window_output(x.shape[1], kh, strides[0], dilation[0], padding)
    out_w, left = window_output(x.shape[2], kw, strides[1], dilation[1], padding)
    need_h = (out_h - 1) * strides[0] + (kh - 1) * dilation[0] + 1
    need_w = (out_w - 1) * strides[1] + (kw - 1) * dilation[1] + 1
    padded = np.zeros((x.shape[0], max(need_h, x.shape[1] + top), max(need_w, x.shape[2] + left),
                       x.shape[3]), dtype=np.result_type(x, kernel))
    padded[:, top:top + x.shape[1], left:left + x.shape[2]] = x
    out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[3]), dtype=padded.dtype)
    for dy in range(kh):
        for dx in range(kw):
            y0, x0 = dy * dilation[0], dx * dilation[1]
            patch = padded[:, y0:y0 + (out_h - 1) * strides[0] + 1:strides[0],
                           x0:x0 + (out_w - 1) * strides[1] + 1:strides[1]]
            out += patch @ kernel[dy, dx]
    return out


def max_pool(x, pool_size, strides, padding):
    out_h, top = window_output(x.shape[1], pool_size[0], strides[0], 1, padding)
    out_w, left = window_output(x.shape[2], pool_size[1], strides[1], 1, padding)
    padded = np.full((x.shape[0], x.shape[1] + pool_size[0] + top, x.shape[2] + pool_size[1] + left,
                      x.shape[3]), -np.inf, dtype=x.dtype)
    padded[:, top:top + x.shape[1], left:left + x.shape[2]] = x
    out = np.full((x.shape[0], out_h, out_w, x.shape[3]), -np.inf, dtype=x.dtype)
    for dy in range(pool_size[0]):
        for dx in range(pool_size[1]):
            out = np.maximum(out, padded[:, dy:dy + (out_h - 1) * strides[0] + 1:strides[0],
                                         dx:dx + (out_w - 1) * strides[1] + 1:strides[1]])
    return out


# --- the network -------------------------------------------------------------------------------


@dataclasses.dataclass
class Network:
    """A chain of layers applied to inputs of `input_shape` (no batch axis)."""

    input_shape: tuple
    layers: list


def _checked(layer):
    if not isinstance(layer, Layer):
        raise UnsupportedNetwork(f"layer type {type(layer).__name__} is not supported")
    return layer


def chain_shapes(layers, in_shape):
    """The tensor shape (no batch axis) before each layer of a chain and after the last."""
    found = [tuple(in_shape)]
    for layer in layers:
        found.append(tuple(_checked(layer).output_shape(found[-1])))
    return found


def shapes(network):
    """The tensor shape (no batch axis) before each layer and after the last."""
    return chain_shapes(network.layers, network.input_shape)


def forward_chain(layers, x):
    """Runs a chain of layers in numpy (float64)."""
    x = np.asarray(x, np.float64)
    for layer in layers:
        x = _checked(layer).forward(x)
    return x


def forward(network, x):
    """Runs the network in numpy (float64); returns the last layer's outputs."""
    return forward_chain(network.layers, x)


def walk(layers):
    """Every layer of a chain and, after each, the layers it holds (depth first)."""
    for layer in layers:
        yield layer
        yield from walk(layer.sublayers())


def fold(layers):
    """The chain with each layer folded into the one before where that is exact
    (`Layer.absorb`: a batch norm or activation into a convolution)."""
    folded = []
    for layer in layers:
        merged = folded[-1].absorb(layer) if folded else None
        if merged is None:
            folded.append(layer)
        else:
            folded[-1] = merged
    return folded


# --- what the compaction hooks receive and return ----------------------------------------------


@dataclasses.dataclass
class Step:
    """One layer's view of a compaction (see `compaction.compact`).

    in_const / out_const: per channel, its constant value or NaN; state: what
    the layer's `constants` returned with them; needed_in / needed_out: the
    channels the compact network keeps before / after the layer; live_in: the
    input channels a kept unit reads through a live weight (for reports).
    """

    in_shape: tuple
    in_const: np.ndarray
    out_const: np.ndarray
    state: object
    needed_in: np.ndarray
    needed_out: np.ndarray
    live_in: np.ndarray

    @property
    def keep_in(self):
        return np.flatnonzero(self.needed_in)

    @property
    def keep_out(self):
        return np.flatnonzero(self.needed_out)


@dataclasses.dataclass
class LayerReport:
    """What compaction did to one weighted layer."""

    name: str
    inputs: int            # input features / channels before
    inputs_live: int       # inputs a kept unit reads through a live weight
    inputs_kept: int       # inputs of the compact layer (dead ones kept as zero rows
                           # unless gather_inputs)
    units: int             # units / filters before
    units_kept: int
    units_constant: int    # removed, value folded into the next layer
    units_unread: int      # removed, nothing downstream reads them
    nonzeros: int          # live kernel weights before
    nonzeros_kept: int     # live kernel weights into kept units from kept inputs
    bias_map: bool = False  # conv bias became a per-position map

    def to_dict(self):
        return dataclasses.asdict(self)
