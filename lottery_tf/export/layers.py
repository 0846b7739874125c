"""The layer types the export handles, one `ir.Layer` class each.

`Flatten`, `Dense`, `Conv2D`, `MaxPool2D`, `BatchNorm`, `Activation` (also
Keras `ReLU`), `Dropout`, `GlobalAveragePool` and `Residual` (a Keras `Add` of
branches from one tensor) convert the Keras layers of those names (and
lottery-tf's masked Dense/Conv2D, kernel times mask). A batch norm or
activation right after a Dense/Conv2D is folded into it (`ir.fold`); a batch
norm elsewhere stays a per-channel affine layer. `Gather` and `Select` (keep /
reorder channels of the last axis) only appear in compact networks.
Registration order is the order of the "supported:" list a refused Keras layer
is told.
"""

import dataclasses

import numpy as np

from lottery_tf.export import ir
from lottery_tf.export.ir import ACTIVATIONS, ACTIVATIONS_TF, UnsupportedNetwork


def _keras():
    import tf_keras as keras

    return keras


def _needs_image(layer, shape):
    if len(shape) != 3:
        raise UnsupportedNetwork(f"{layer.name}: needs (height, width, channels) inputs")


@ir.register
@dataclasses.dataclass
class Flatten(ir.Layer):
    """Channels-last flatten: feature index (row * width + col) * channels + c."""

    name: str

    keras_description = "Flatten"

    def output_shape(self, in_shape):
        return (int(np.prod(in_shape)),)

    def forward(self, x):
        return x.reshape(x.shape[0], -1)

    @classmethod
    def keras_types(cls):
        return (_keras().layers.Flatten,)

    @classmethod
    def from_keras(cls, layer):
        return cls(layer.name)

    @staticmethod
    def _positions(in_shape):
        return int(np.prod(in_shape[:-1]))

    def constants(self, in_const, in_shape):
        return np.tile(in_const, self._positions(in_shape)), None

    def reads(self, out_needed, in_shape):
        return out_needed.reshape(-1, in_shape[-1]).any(axis=0)

    def needed_without_gather(self, needed_in, needed_out, in_shape):
        # Every feature of a kept channel (on a flat input Flatten is the identity).
        return np.tile(needed_in, self._positions(in_shape))

    def compacted(self, step):
        # Features of the kept channels, in compact flatten order.
        grid = step.needed_out.reshape(-1, step.in_shape[-1])[:, step.needed_in]
        if grid.all():
            return [self], None
        return [self, Gather(f"{self.name}_gather", np.flatnonzero(grid))], None

    def tf_call(self, tensors):
        tf = ir.tf_module()
        return lambda x: tf.reshape(x, [-1, int(np.prod(x.shape[1:]))])


class _Weighted(ir.Layer):
    """A kernel (..., in, out), zero where pruned, a bias and an activation."""

    accepts_keras_subclasses = False

    @classmethod
    def from_keras(cls, layer):
        activation = _keras().activations.serialize(layer.activation)
        if activation not in ACTIVATIONS:
            raise ir.NotConvertible(f"activation {activation!r}")
        kernel = layer.kernel.numpy()
        if getattr(layer, "mask", None) is not None:  # lottery-tf's masked layers
            kernel = kernel * layer.mask.numpy()
        units = kernel.shape[-1]
        bias = layer.bias.numpy() if layer.use_bias else np.zeros(units, np.float32)
        return cls._from_keras_weights(layer, kernel, bias, activation)

    @classmethod
    def _from_keras_weights(cls, layer, kernel, bias, activation):
        raise NotImplementedError

    def check(self):
        if self.activation not in ACTIVATIONS:
            raise UnsupportedNetwork(
                f"{self.name}: activation {self.activation!r} is not supported "
                f"(supported: {', '.join(ACTIVATIONS)})")

    def _activate(self, pre):
        return ACTIVATIONS[self.activation](pre)

    def absorb(self, following):
        if isinstance(following, Dropout):
            return self  # the identity at inference
        # Only after a linear activation is the layer affine in its kernel and bias.
        if self.activation != "linear":
            return None
        if isinstance(following, Activation):
            return dataclasses.replace(self, activation=following.activation)
        if isinstance(following, BatchNorm):
            # Inference batch norm is x * scale + shift per channel: scale the
            # kernel's output columns, and the bias.
            return dataclasses.replace(
                self, kernel=(self.kernel * following.scale).astype(np.float32),
                bias=(self.bias * following.scale + following.shift).astype(np.float32))
        return None

    def needed_without_gather(self, needed_in, needed_out, in_shape):
        return needed_out  # dead units are always removed

    def _compact_bias(self, pre):
        """(bias, is a per-position map) of the kept units' pre-activations."""
        return pre.astype(np.float32), False

    def compacted(self, step):
        keep_in, keep_out = step.keep_in, step.keep_out
        kernel = self.kernel[..., keep_in, :][..., keep_out].astype(np.float32)
        bias, bias_map = self._compact_bias(step.state[..., keep_out])
        units = self.kernel.shape[-1]
        constant = int((~np.isnan(step.out_const)).sum())
        report = ir.LayerReport(
            name=self.name,
            inputs=self.kernel.shape[-2],
            inputs_live=int(step.live_in.sum()),
            inputs_kept=len(keep_in),
            units=units,
            units_kept=len(keep_out),
            units_constant=constant,
            units_unread=units - len(keep_out) - constant,
            nonzeros=int(np.count_nonzero(self.kernel)),
            nonzeros_kept=int(np.count_nonzero(kernel)),
            bias_map=bias_map,
        )
        return [dataclasses.replace(self, kernel=kernel, bias=bias)], report

    def arrays(self):
        return {"kernel": self.kernel, "bias": self.bias}


@ir.register
@dataclasses.dataclass
class Dense(_Weighted):
    """`activation(x @ kernel + bias)`; kernel (in, out), zero where pruned."""

    name: str
    kernel: np.ndarray
    bias: np.ndarray
    activation: str = "linear"

    keras_description = "(Masked)Dense"
    can_be_output = True

    def output_shape(self, in_shape):
        if len(in_shape) != 1:
            raise UnsupportedNetwork(f"{self.name}: Dense on a rank-{len(in_shape) + 1} input")
        return (self.kernel.shape[1],)

    def forward(self, x):
        return self._activate(x @ self.kernel + self.bias)

    @classmethod
    def keras_types(cls):
        from lottery_tf.nn.layers import MaskedDense

        return (_keras().layers.Dense, MaskedDense)

    @classmethod
    def _from_keras_weights(cls, layer, kernel, bias, activation):
        return cls(layer.name, kernel, bias, activation)

    def constants(self, in_const, in_shape):
        variable = np.isnan(in_const)
        fold = np.where(variable, 0.0, in_const) @ self.kernel.astype(np.float64)
        pre = self.bias.astype(np.float64) + fold
        live = (self.kernel[variable] != 0).any(axis=0)
        out = np.array(self._activate(pre))  # a copy: pre is kept
        out[live] = np.nan
        return out, pre

    def reads(self, out_needed, in_shape):
        return (self.kernel[:, out_needed] != 0).any(axis=1)

    def tf_call(self, tensors):
        tf = ir.tf_module()
        activation = ACTIVATIONS_TF[self.activation]
        return lambda x: activation(tf, tf.nn.bias_add(
            tf.matmul(x, tensors["kernel"]()), tensors["bias"]()))


@ir.register
@dataclasses.dataclass
class Conv2D(_Weighted):
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

    keras_description = "(Masked)Conv2D"

    def output_shape(self, in_shape):
        _needs_image(self, in_shape)
        kh, kw = self.kernel.shape[:2]
        h, _ = ir.window_output(in_shape[0], kh, self.strides[0], self.dilation[0], self.padding)
        w, _ = ir.window_output(in_shape[1], kw, self.strides[1], self.dilation[1], self.padding)
        return (h, w, self.kernel.shape[3])

    def _conv(self, x, kernel):
        return ir.conv2d(x, kernel.astype(np.float64), self.strides, self.padding, self.dilation)

    def forward(self, x):
        return self._activate(self._conv(x, self.kernel) + self.bias)

    @classmethod
    def keras_types(cls):
        from lottery_tf.nn.layers import MaskedConv2D

        return (_keras().layers.Conv2D, MaskedConv2D)

    @classmethod
    def _from_keras_weights(cls, layer, kernel, bias, activation):
        if layer.groups != 1:
            raise ir.NotConvertible("groups > 1")
        return cls(layer.name, kernel, bias, activation, tuple(layer.strides), layer.padding,
                   tuple(layer.dilation_rate))

    def _constant_contribution(self, in_const, in_shape):
        """Conv output of the constant input channels alone: (out_h, out_w, out), float64.

        Through `same` padding a constant channel contributes less at the
        borders (its taps fall into the zero padding there)."""
        const = ~np.isnan(in_const)
        if not const.any():
            return np.zeros(self.output_shape(in_shape))
        image = np.zeros((1,) + tuple(in_shape[:2]) + (int(const.sum()),))
        image[...] = in_const[const]
        return self._conv(image, self.kernel[:, :, const, :])[0]

    def constants(self, in_const, in_shape):
        variable = np.isnan(in_const)
        pre = self.bias.astype(np.float64) + self._constant_contribution(in_const, in_shape)
        uniform = (pre == pre[:1, :1]).all(axis=(0, 1))
        live = (self.kernel[:, :, variable, :] != 0).any(axis=(0, 1, 2))
        out = np.array(self._activate(pre[0, 0]))
        out[live | ~uniform] = np.nan  # a non-uniform constant is kept, never approximated
        return out, pre

    def reads(self, out_needed, in_shape):
        return (self.kernel[..., out_needed] != 0).any(axis=(0, 1, 3))

    def _compact_bias(self, pre):
        bias_map = not (pre == pre[:1, :1]).all()
        return (pre if bias_map else pre[0, 0]).astype(np.float32), bias_map

    def tf_call(self, tensors):
        tf = ir.tf_module()
        activation = ACTIVATIONS_TF[self.activation]
        bias_map = self.bias.ndim == 3

        def call(x):
            y = tf.nn.conv2d(x, tensors["kernel"](), strides=list(self.strides),
                             padding=self.padding.upper(), dilations=list(self.dilation))
            y = y + tensors["bias"]() if bias_map else tf.nn.bias_add(y, tensors["bias"]())
            return activation(tf, y)
        return call


@ir.register
@dataclasses.dataclass
class MaxPool2D(ir.Layer):
    name: str
    pool_size: tuple = (2, 2)
    strides: tuple = (2, 2)
    padding: str = "valid"

    keras_description = "MaxPool2D"

    def output_shape(self, in_shape):
        _needs_image(self, in_shape)
        h, _ = ir.window_output(in_shape[0], self.pool_size[0], self.strides[0], 1, self.padding)
        w, _ = ir.window_output(in_shape[1], self.pool_size[1], self.strides[1], 1, self.padding)
        return (h, w, in_shape[2])

    def forward(self, x):
        return ir.max_pool(x, self.pool_size, self.strides, self.padding)

    @classmethod
    def keras_types(cls):
        return (_keras().layers.MaxPool2D,)

    @classmethod
    def from_keras(cls, layer):
        return cls(layer.name, tuple(layer.pool_size), tuple(layer.strides), layer.padding)

    def tf_call(self, tensors):
        tf = ir.tf_module()
        return lambda x: tf.nn.max_pool2d(x, list(self.pool_size), list(self.strides),
                                          self.padding.upper())


def _keras_axis_is_last(layer):
    axis = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    rank = len(layer.input_shape)
    return [a % rank for a in axis] == [rank - 1]


@ir.register
@dataclasses.dataclass
class BatchNorm(ir.Layer):
    """Inference batch norm, `x * scale + shift` per channel (float64), where
    scale = gamma / sqrt(moving variance + epsilon) and
    shift = beta - moving mean * scale. Folded into a Dense/Conv2D right before
    it (`_Weighted.absorb`); elsewhere it stays this per-channel affine layer."""

    name: str
    scale: np.ndarray
    shift: np.ndarray

    keras_description = "BatchNormalization"

    def forward(self, x):
        return x * self.scale + self.shift

    @classmethod
    def keras_types(cls):
        return (_keras().layers.BatchNormalization,)

    @classmethod
    def from_keras(cls, layer):
        if not _keras_axis_is_last(layer):
            raise ir.NotConvertible(f"axis={layer.axis} (only the channels axis, -1)")
        if getattr(layer, "renorm", False) or getattr(layer, "virtual_batch_size", None):
            raise ir.NotConvertible("renorm / virtual_batch_size")
        mean = layer.moving_mean.numpy().astype(np.float64)
        variance = layer.moving_variance.numpy().astype(np.float64)
        gamma = layer.gamma.numpy().astype(np.float64) if layer.scale else 1.0
        beta = layer.beta.numpy().astype(np.float64) if layer.center else 0.0
        scale = gamma / np.sqrt(variance + layer.epsilon)
        return cls(layer.name, scale * np.ones_like(mean), beta - mean * scale)

    def constants(self, in_const, in_shape):
        return in_const * self.scale + self.shift, None

    def keep_channels(self, keep):
        return BatchNorm(self.name, self.scale[keep], self.shift[keep])

    def arrays(self):
        return {"scale": self.scale.astype(np.float32), "shift": self.shift.astype(np.float32)}

    def tf_call(self, tensors):
        return lambda x: x * tensors["scale"]() + tensors["shift"]()


@ir.register
@dataclasses.dataclass
class Activation(ir.Layer):
    """An activation function as a layer (Keras `Activation`, default `ReLU`);
    folded into a linear Dense/Conv2D right before it."""

    name: str
    activation: str

    keras_description = "ReLU, Activation"

    def forward(self, x):
        return ACTIVATIONS[self.activation](x)

    @classmethod
    def keras_types(cls):
        return (_keras().layers.ReLU, _keras().layers.Activation)

    @classmethod
    def from_keras(cls, layer):
        if isinstance(layer, _keras().layers.ReLU):
            if (layer.max_value is not None or float(layer.negative_slope) != 0.0
                    or float(layer.threshold) != 0.0):
                raise ir.NotConvertible("only ReLU() without max_value, negative_slope, threshold")
            return cls(layer.name, "relu")
        activation = _keras().activations.serialize(layer.activation)
        if activation not in ACTIVATIONS:
            raise ir.NotConvertible(f"activation {activation!r}")
        return cls(layer.name, activation)

    def check(self):
        if self.activation not in ACTIVATIONS:
            raise UnsupportedNetwork(f"{self.name}: activation {self.activation!r} is not supported")

    def constants(self, in_const, in_shape):
        out = in_const.copy()
        constant = ~np.isnan(in_const)
        out[constant] = ACTIVATIONS[self.activation](in_const[constant])
        return out, None

    def tf_call(self, tensors):
        activation = ACTIVATIONS_TF[self.activation]
        tf = ir.tf_module()
        return lambda x: activation(tf, x)


@ir.register
@dataclasses.dataclass
class Dropout(ir.Layer):
    """Dropout: the identity at inference; the compact network drops it."""

    name: str

    keras_description = "Dropout"

    def forward(self, x):
        return x

    @classmethod
    def keras_types(cls):
        return (_keras().layers.Dropout,)

    @classmethod
    def from_keras(cls, layer):
        return cls(layer.name)

    def compacted(self, step):
        return [], None

    def tf_call(self, tensors):
        return lambda x: x


@ir.register
@dataclasses.dataclass
class GlobalAveragePool(ir.Layer):
    """Mean over height and width per channel (Keras `GlobalAveragePooling2D`)."""

    name: str
    keepdims: bool = False

    keras_description = "GlobalAveragePooling2D"

    def output_shape(self, in_shape):
        _needs_image(self, in_shape)
        return (1, 1, in_shape[2]) if self.keepdims else (in_shape[2],)

    def forward(self, x):
        return x.mean(axis=(1, 2), keepdims=self.keepdims)

    @classmethod
    def keras_types(cls):
        return (_keras().layers.GlobalAveragePooling2D,)

    @classmethod
    def from_keras(cls, layer):
        return cls(layer.name, bool(layer.keepdims))

    def tf_call(self, tensors):
        tf = ir.tf_module()
        return lambda x: tf.reduce_mean(x, axis=[1, 2], keepdims=self.keepdims)


@ir.register
@dataclasses.dataclass
class Residual(ir.Layer):
    """The sum of branches applied to one tensor (a Keras `Add` of them), plus
    `bias` in a compact network. Each branch is a chain of layers; an empty
    chain is the identity (a shortcut).

    Compaction (see `compaction`): a channel of the sum is constant when it is
    constant on every branch, and then folded downstream; it is removed from
    every branch when constant or read by nothing downstream, and kept on every
    branch otherwise (a branch constant there computes it from its bias, or,
    where its compact chain does not produce it, adds it through `bias`).
    """

    name: str
    branches: list
    bias: np.ndarray = None

    keras_description = "Add"
    merges = True

    def sublayers(self):
        return [layer for branch in self.branches for layer in branch]

    def output_shape(self, in_shape):
        ends = {ir.chain_shapes(branch, in_shape)[-1] for branch in self.branches}
        if len(ends) != 1:
            raise UnsupportedNetwork(f"{self.name}: branches end in shapes {sorted(ends)}")
        return ends.pop()

    def forward(self, x):
        out = sum(ir.forward_chain(branch, x) for branch in self.branches)
        return out if self.bias is None else out + self.bias

    @classmethod
    def keras_types(cls):
        return (_keras().layers.Add,)

    @classmethod
    def from_keras(cls, layer, branches=None):
        if branches is None:
            raise ir.NotConvertible("an Add needs branches from one tensor")
        return cls(layer.name, [list(branch) for branch in branches])

    def check(self):
        for layer in self.sublayers():
            layer.check()

    def constants(self, in_const, in_shape):
        from lottery_tf.export import compaction

        plans = [compaction.plan_chain(branch, in_shape, in_const) for branch in self.branches]
        out = sum(plan.consts[-1] for plan in plans)  # NaN where any branch varies
        return (out if self.bias is None else out + self.bias), plans

    def _branch_needs(self, plans, out_needed):
        from lottery_tf.export import compaction

        return [compaction.needed_in_chain(branch, plan, out_needed)
                for branch, plan in zip(self.branches, plans)]

    def reads_given(self, out_needed, in_shape, state):
        return np.logical_or.reduce([needed[0] for needed in self._branch_needs(state, out_needed)])

    def reads(self, out_needed, in_shape):
        _, plans = self.constants(np.full(in_shape[-1], np.nan), in_shape)
        return self.reads_given(out_needed, in_shape, plans)

    def needed_without_gather(self, needed_in, needed_out, in_shape):
        return needed_out  # every branch produces exactly the kept channels

    def compacted(self, step):
        from lottery_tf.export import compaction

        keep_out = step.keep_out
        bias = np.zeros(len(keep_out)) if self.bias is None else self.bias[keep_out]
        branches, reports = [], []
        for k, (branch, plan, needed) in enumerate(zip(
                self.branches, step.state, self._branch_needs(step.state, step.needed_out))):
            layers, branch_reports, needed = compaction.compact_chain(
                branch, plan, needed, step.needed_in)
            produced = np.flatnonzero(needed[-1])
            if not np.array_equal(produced, keep_out):
                position = {int(c): i for i, c in enumerate(produced)}
                indices = np.array([position.get(int(c), -1) for c in keep_out], np.int64)
                missing = keep_out[indices < 0]
                if np.isnan(plan.consts[-1][missing]).any():
                    raise UnsupportedNetwork(f"{self.name}: branch {k} drops a varying channel")
                bias[indices < 0] += plan.consts[-1][missing]
                layers.append(Select(f"{self.name}_branch{k}_select", indices))
            branches.append(layers)
            reports.extend(branch_reports)
        bias = bias.astype(np.float32) if bias.any() else None
        return [Residual(self.name, branches, bias)], reports

    def arrays(self):
        return {} if self.bias is None else {"bias": self.bias}

    def tf_build(self, getters):
        calls = [[layer.tf_build(getters) for layer in branch] for branch in self.branches]
        bias = getters[self.name].get("bias")

        def call(x):
            out = None
            for branch in calls:
                y = x
                for layer_call in branch:
                    y = layer_call(y)
                out = y if out is None else out + y  # Keras' Add sums in input order
            return out if bias is None else out + bias()
        return call


@dataclasses.dataclass
class Select(ir.Layer):
    """Channels `indices` of the last axis, in that order; -1 gives zeros.
    Only in compact residual branches (a shortcut that lacks a kept channel)."""

    name: str
    indices: np.ndarray

    def output_shape(self, in_shape):
        return tuple(in_shape[:-1]) + (len(self.indices),)

    def forward(self, x):
        padded = np.concatenate([x, np.zeros(x.shape[:-1] + (1,))], axis=-1)
        return padded[..., self.indices]  # index -1: the zero channel

    def check(self):
        raise UnsupportedNetwork(f"{self.name}: network is already compact")

    def arrays(self):
        return {"indices": self.indices.astype(np.int32)}

    def tf_call(self, tensors):
        tf = ir.tf_module()
        if (self.indices >= 0).all():
            return lambda x: tf.gather(x, tensors["indices"](), axis=-1)
        channels = int(self.indices.max()) + 1

        def call(x):
            zero = tf.zeros_like(x[..., :1])
            padded = tf.concat([x[..., :channels], zero], axis=-1)
            return tf.gather(padded, tf.where(tensors["indices"]() < 0, channels,
                                              tensors["indices"]()), axis=-1)
        return call


@dataclasses.dataclass
class Gather(ir.Layer):
    """Keeps `indices` (ascending) of the last axis. Only in compact networks."""

    name: str
    indices: np.ndarray

    def output_shape(self, in_shape):
        return tuple(in_shape[:-1]) + (len(self.indices),)

    def forward(self, x):
        return x[..., self.indices]

    def check(self):
        raise UnsupportedNetwork(f"{self.name}: network is already compact")

    def arrays(self):
        return {"indices": self.indices.astype(np.int32)}

    def tf_call(self, tensors):
        tf = ir.tf_module()
        return lambda x: tf.gather(x, tensors["indices"](), axis=-1)
