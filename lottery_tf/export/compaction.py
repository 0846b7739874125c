"""Structured compaction of a pruned network, and sparse storage of its kernels.

Pure numpy, no TensorFlow: this module decides *what* a compact network is
(policy); `export.py` turns the result into a SavedModel or TFLite file
(mechanism). A network is a chain of layers (`Dense`, `Conv2D`, `MaxPool2D`,
`Flatten`) whose kernels are already zero where pruned.

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

Storage: each compact kernel is stored in whichever of three encodings is
smallest: `dense`, `bitmask` (nonzero values in C order plus one bit per
position: 4 bytes + 1/(8 x density) bytes per nonzero) or `delta` (nonzero
values in C order plus the uint16 step from one flat position to the next:
6 bytes per nonzero). Below 1/16 density `delta` wins.
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


@dataclasses.dataclass
class Dense:
    """`activation(x @ kernel + bias)`; kernel (in, out), zero where pruned."""

    name: str
    kernel: np.ndarray
    bias: np.ndarray
    activation: str = "linear"


@dataclasses.dataclass
class Conv2D:
    """A channels-last 2-D convolution; kernel (kh, kw, in, out).

    In a compact network `bias` is either a vector (out,) or, where folded
    constants reach the zero padding, a map (out_height, out_width, out).
    """

    name: str
    kernel: np.ndarray
    bias: np.ndarray
    activation: str = "linear"
    strides: tuple = (1, 1)
    padding: str = "valid"
    dilation: tuple = (1, 1)


@dataclasses.dataclass
class MaxPool2D:
    name: str
    pool_size: tuple = (2, 2)
    strides: tuple = (2, 2)
    padding: str = "valid"


@dataclasses.dataclass
class Flatten:
    """Channels-last flatten: feature index (row * width + col) * channels + c."""

    name: str


@dataclasses.dataclass
class Gather:
    """Keeps `indices` (ascending) of the last axis. Only in compact networks."""

    name: str
    indices: np.ndarray


@dataclasses.dataclass
class Network:
    """A chain of layers applied to inputs of `input_shape` (no batch axis)."""

    input_shape: tuple
    layers: list


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


class UnsupportedNetwork(ValueError):
    """The network uses something compaction does not handle."""


# --- shapes ------------------------------------------------------------------


def _window_output(size, window, stride, dilation, padding):
    """Output length and leading padding of a conv/pool window along one axis."""
    effective = (window - 1) * dilation + 1
    if padding == "same":
        out = math.ceil(size / stride)
        pad_total = max((out - 1) * stride + effective - size, 0)
        return out, pad_total // 2
    if padding == "valid":
        return max(math.ceil((size - effective + 1) / stride), 0), 0
    raise UnsupportedNetwork(f"padding {padding!r} is not supported")


def _output_shape(layer, shape):
    if isinstance(layer, Dense):
        if len(shape) != 1:
            raise UnsupportedNetwork(f"{layer.name}: Dense on a rank-{len(shape) + 1} input")
        return (layer.kernel.shape[1],)
    if isinstance(layer, Flatten):
        return (int(np.prod(shape)),)
    if isinstance(layer, Gather):
        return shape[:-1] + (len(layer.indices),)
    if len(shape) != 3:
        raise UnsupportedNetwork(f"{layer.name}: needs (height, width, channels) inputs")
    if isinstance(layer, Conv2D):
        kh, kw = layer.kernel.shape[:2]
        h, _ = _window_output(shape[0], kh, layer.strides[0], layer.dilation[0], layer.padding)
        w, _ = _window_output(shape[1], kw, layer.strides[1], layer.dilation[1], layer.padding)
        return (h, w, layer.kernel.shape[3])
    if isinstance(layer, MaxPool2D):
        h, _ = _window_output(shape[0], layer.pool_size[0], layer.strides[0], 1, layer.padding)
        w, _ = _window_output(shape[1], layer.pool_size[1], layer.strides[1], 1, layer.padding)
        return (h, w, shape[2])
    raise UnsupportedNetwork(f"layer type {type(layer).__name__} is not supported")


def shapes(network):
    """The tensor shape (no batch axis) before each layer and after the last."""
    found = [tuple(network.input_shape)]
    for layer in network.layers:
        found.append(_output_shape(layer, found[-1]))
    return found


# --- numpy reference operations --------------------------------------------------


def conv2d(x, kernel, strides=(1, 1), padding="valid", dilation=(1, 1)):
    """Channels-last convolution of x (batch, h, w, in), as TensorFlow computes it."""
    kh, kw = kernel.shape[:2]
    out_h, top = _window_output(x.shape[1], kh, strides[0], dilation[0], padding)
    out_w, left = _window_output(x.shape[2], kw, strides[1], dilation[1], padding)
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
    out_h, top = _window_output(x.shape[1], pool_size[0], strides[0], 1, padding)
    out_w, left = _window_output(x.shape[2], pool_size[1], strides[1], 1, padding)
    padded = np.full((x.shape[0], x.shape[1] + pool_size[0] + top, x.shape[2] + pool_size[1] + left,
                      x.shape[3]), -np.inf, dtype=x.dtype)
    padded[:, top:top + x.shape[1], left:left + x.shape[2]] = x
    out = np.full((x.shape[0], out_h, out_w, x.shape[3]), -np.inf, dtype=x.dtype)
    for dy in range(pool_size[0]):
        for dx in range(pool_size[1]):
            out = np.maximum(out, padded[:, dy:dy + (out_h - 1) * strides[0] + 1:strides[0],
                                         dx:dx + (out_w - 1) * strides[1] + 1:strides[1]])
    return out


def forward(network, x):
    """Runs the network in numpy (float64); returns the last layer's outputs."""
    x = np.asarray(x, np.float64)
    for layer in network.layers:
        if isinstance(layer, Dense):
            x = ACTIVATIONS[layer.activation](x @ layer.kernel + layer.bias)
        elif isinstance(layer, Conv2D):
            x = conv2d(x, layer.kernel.astype(np.float64), layer.strides, layer.padding,
                       layer.dilation)
            x = ACTIVATIONS[layer.activation](x + layer.bias)
        elif isinstance(layer, MaxPool2D):
            x = max_pool(x, layer.pool_size, layer.strides, layer.padding)
        elif isinstance(layer, Flatten):
            x = x.reshape(x.shape[0], -1)
        elif isinstance(layer, Gather):
            x = x[..., layer.indices]
        else:
            raise UnsupportedNetwork(f"layer type {type(layer).__name__} is not supported")
    return x


# --- structured compaction ----------------------------------------------------


def check_supported(network):
    """Raises `UnsupportedNetwork` for what `compact` cannot handle."""
    if not network.layers or not isinstance(network.layers[-1], Dense):
        raise UnsupportedNetwork("the last layer must be a Dense output layer")
    for layer in network.layers:
        if isinstance(layer, (Dense, Conv2D)):
            if layer.activation not in ACTIVATIONS:
                raise UnsupportedNetwork(
                    f"{layer.name}: activation {layer.activation!r} is not supported "
                    f"(supported: {', '.join(ACTIVATIONS)})")
        elif isinstance(layer, Gather):
            raise UnsupportedNetwork(f"{layer.name}: network is already compact")
    shapes(network)  # raises on shape problems


def _constant_contribution(layer, in_const, in_shape):
    """Conv output of the constant input channels alone: (out_h, out_w, out), float64."""
    const = ~np.isnan(in_const)
    out_shape = _output_shape(layer, in_shape)
    if not const.any():
        return np.zeros(out_shape)
    image = np.zeros((1,) + tuple(in_shape[:2]) + (int(const.sum()),))
    image[...] = in_const[const]
    kernel = layer.kernel[:, :, const, :].astype(np.float64)
    return conv2d(image, kernel, layer.strides, layer.padding, layer.dilation)[0]


def compact(network, gather_inputs=False):
    """The structurally compacted network and a `LayerReport` per weighted layer.

    Args:
      network: a `Network` whose kernels are zero where pruned.
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
    tensor_shapes = shapes(network)
    last = len(layers) - 1

    # Forward: which channels/features are constant, and their value (NaN: not constant).
    consts = [np.full(tensor_shapes[0][-1], np.nan)]
    pre_activation = {}  # layer index -> float64 bias + folded constants (vector or map)
    for i, layer in enumerate(layers):
        in_const = consts[-1]
        variable = np.isnan(in_const)
        if isinstance(layer, Dense):
            fold = np.where(variable, 0.0, in_const) @ layer.kernel.astype(np.float64)
            pre = layer.bias.astype(np.float64) + fold
            live = (layer.kernel[variable] != 0).any(axis=0)
            out = np.array(ACTIVATIONS[layer.activation](pre))  # a copy: pre is kept
            out[live] = np.nan
            if i == last:
                out[:] = np.nan  # logits are outputs: every one is kept
            pre_activation[i] = pre
        elif isinstance(layer, Conv2D):
            contribution = _constant_contribution(layer, in_const, tensor_shapes[i])
            pre = layer.bias.astype(np.float64) + contribution
            uniform = (pre == pre[:1, :1]).all(axis=(0, 1))
            live = (layer.kernel[:, :, variable, :] != 0).any(axis=(0, 1, 2))
            out = np.array(ACTIVATIONS[layer.activation](pre[0, 0]))
            out[live | ~uniform] = np.nan
            pre_activation[i] = pre
        elif isinstance(layer, MaxPool2D):
            out = in_const.copy()
        elif isinstance(layer, Flatten):
            out = np.tile(in_const, int(np.prod(tensor_shapes[i][:-1]))) if len(
                tensor_shapes[i]) == 3 else in_const.copy()
        consts.append(out)

    # Backward: which channels/features a kept unit downstream reads.
    needed = [None] * (len(layers) + 1)
    needed[-1] = np.ones(tensor_shapes[-1][-1], bool)
    for i in range(last, -1, -1):
        layer, out_needed = layers[i], needed[i + 1]
        variable = np.isnan(consts[i])
        if isinstance(layer, Dense):
            reads = (layer.kernel[:, out_needed] != 0).any(axis=1)
        elif isinstance(layer, Conv2D):
            reads = (layer.kernel[..., out_needed] != 0).any(axis=(0, 1, 3))
        elif isinstance(layer, MaxPool2D):
            reads = out_needed
        elif isinstance(layer, Flatten):
            if len(tensor_shapes[i]) == 3:
                reads = out_needed.reshape(-1, tensor_shapes[i][-1]).any(axis=0)
            else:
                reads = out_needed
        needed[i] = variable & reads

    live_inputs = [n.copy() for n in needed]  # before dead features are kept (reports)
    if not gather_inputs:
        needed[0] = np.ones_like(needed[0])
        for i, layer in enumerate(layers):
            if isinstance(layer, Flatten) and len(tensor_shapes[i]) == 3:
                needed[i + 1] = np.tile(needed[i], int(np.prod(tensor_shapes[i][:-1])))

    # Build the compact chain.
    compact_layers, reports = [], []
    if not needed[0].all():
        compact_layers.append(Gather("input_gather", np.flatnonzero(needed[0])))
    for i, layer in enumerate(layers):
        keep_in, keep_out = np.flatnonzero(needed[i]), np.flatnonzero(needed[i + 1])
        if isinstance(layer, (Dense, Conv2D)):
            kernel = layer.kernel[..., keep_in, :][..., keep_out].astype(np.float32)
            pre = pre_activation[i][..., keep_out]
            bias_map = False
            if isinstance(layer, Dense):
                bias = pre.astype(np.float32)
                compact_layers.append(Dense(layer.name, kernel, bias, layer.activation))
            else:
                bias_map = not (pre == pre[:1, :1]).all()
                bias = (pre if bias_map else pre[0, 0]).astype(np.float32)
                compact_layers.append(dataclasses.replace(layer, kernel=kernel, bias=bias))
            units = layer.kernel.shape[-1]
            constant = int((~np.isnan(consts[i + 1])).sum())
            reports.append(LayerReport(
                name=layer.name,
                inputs=layer.kernel.shape[-2],
                inputs_live=int(live_inputs[i].sum()),
                inputs_kept=len(keep_in),
                units=units,
                units_kept=len(keep_out),
                units_constant=constant,
                units_unread=units - len(keep_out) - constant,
                nonzeros=int(np.count_nonzero(layer.kernel)),
                nonzeros_kept=int(np.count_nonzero(kernel)),
                bias_map=bias_map,
            ))
        elif isinstance(layer, MaxPool2D):
            compact_layers.append(layer)
        elif isinstance(layer, Flatten):
            compact_layers.append(layer)
            if len(tensor_shapes[i]) == 3:
                # Features of the kept channels, in compact flatten order.
                channels = needed[i]
                grid = needed[i + 1].reshape(-1, tensor_shapes[i][-1])[:, channels]
                if not grid.all():
                    compact_layers.append(Gather(f"{layer.name}_gather", np.flatnonzero(grid)))
            # On a flat input Flatten is the identity: what it passes on is needed.
    return Network(tuple(network.input_shape), compact_layers), reports


# --- sparse storage --------------------------------------------------------------

STORAGE_FORMATS = ("dense", "bitmask", "delta")
_MAX_GAP = int(np.iinfo(np.uint16).max)


def _delta(kernel):
    """(values, gaps): nonzeros in C order and uint16 steps between their flat positions.

    positions = cumsum(gaps). A step longer than 65535 goes through zero-valued
    filler entries (harmless: they scatter 0 where the kernel is 0).
    """
    flat = np.asarray(kernel, np.float32).reshape(-1)
    positions = np.flatnonzero(flat)
    steps = np.diff(positions, prepend=0)
    repeats = np.maximum((steps + _MAX_GAP - 1) // _MAX_GAP, 1)  # entries per step
    if (repeats == 1).all():
        return flat[positions], steps.astype(np.uint16)
    # Split each long step into full 65535 steps (fillers) and the remainder.
    owner = np.repeat(np.arange(positions.size), repeats)
    first = np.concatenate([[0], np.cumsum(repeats)[:-1]])
    index_in_step = np.arange(owner.size) - first[owner]
    last = index_in_step == repeats[owner] - 1
    gaps = np.where(last, steps[owner] - _MAX_GAP * (repeats[owner] - 1), _MAX_GAP)
    values = np.where(last, flat[positions][owner], 0.0).astype(np.float32)
    return values, gaps.astype(np.uint16)


def storage_bytes(kernel, fmt):
    """Bytes `kernel` takes in storage format `fmt`."""
    if fmt == "dense":
        return 4 * kernel.size
    if fmt == "bitmask":
        return 4 * int(np.count_nonzero(kernel)) + (kernel.size + 7) // 8
    if fmt == "delta":
        return 6 * _delta(kernel)[0].size
    raise ValueError(f"unknown storage format {fmt!r}")


def choose_storage(kernel):
    """The smallest format for `kernel` (ties: the earlier in STORAGE_FORMATS)."""
    return min(STORAGE_FORMATS, key=lambda f: (storage_bytes(kernel, f), STORAGE_FORMATS.index(f)))


def encode(kernel, fmt):
    """`kernel` as a dict of arrays in format `fmt`; `decode` inverts it.

    dense: {"kernel"}; bitmask: {"values" (float32, C order), "bits" (uint8,
    np.packbits of kernel != 0)}; delta: {"values", "gaps" (uint16)}.
    """
    kernel = np.asarray(kernel, np.float32)
    if fmt == "dense":
        return {"kernel": kernel}
    if fmt == "bitmask":
        flat = kernel.reshape(-1)
        present = flat != 0
        return {"values": flat[present], "bits": np.packbits(present)}
    if fmt == "delta":
        values, gaps = _delta(kernel)
        return {"values": values, "gaps": gaps}
    raise ValueError(f"unknown storage format {fmt!r}")


def decode(arrays, fmt, shape):
    """The dense kernel of `shape` from `encode`'s arrays (numpy reference)."""
    if fmt == "dense":
        return arrays["kernel"].reshape(shape)
    size = int(np.prod(shape))
    flat = np.zeros(size, np.float32)
    if fmt == "bitmask":
        flat[np.unpackbits(arrays["bits"], count=size).astype(bool)] = arrays["values"]
    elif fmt == "delta":
        flat[np.cumsum(arrays["gaps"].astype(np.int64))] = arrays["values"]
    else:
        raise ValueError(f"unknown storage format {fmt!r}")
    return flat.reshape(shape)
