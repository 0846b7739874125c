"""Model registry: the paper's networks, built from masked layers.

Every builder takes the dataset's input shape and class count, so any model
runs on any image dataset, and a seed: layer initializers are seeded one by
one from it, so the same seed always gives the same θ0, in any process.
Layer names are fixed because run directories key weights and masks by them.
A user's own model (`package.module:function`, see `own_models.py`) is
accepted wherever a registered name is.
"""

import tf_keras as keras

from lottery_tf import sources
from lottery_tf.nn.layers import MaskedConv2D, MaskedDense
from lottery_tf.registry import Registry


class _ModelRegistry(Registry):
    def get(self, name):
        if sources.is_own(name):
            return sources.resolve(name, "model")
        return super().get(name)


MODELS = _ModelRegistry("model")
register = MODELS.register
names = MODELS.names


def build(name, input_shape, num_classes, seed):
    """Builds model `name` (registered, or your own) for inputs of `input_shape`."""
    if sources.is_own(name):
        from lottery_tf.nn import own_models

        return own_models.build(name, tuple(input_shape), int(num_classes), seed)
    builder = MODELS.get(name)
    return builder(tuple(input_shape), int(num_classes), _Seeds(seed))


class _Seeds:
    """Hands out a distinct initializer seed per layer, derived from one seed."""

    def __init__(self, seed):
        self._next = int(seed) * 1000

    def glorot_normal(self):
        self._next += 1
        return keras.initializers.GlorotNormal(seed=self._next)


def _dense(units, group, name, seeds, activation="relu"):
    return MaskedDense(
        units,
        pruning_group=group,
        activation=activation,
        kernel_initializer=seeds.glorot_normal(),
        name=name,
    )


def _classifier_head(x, hidden, num_classes, seeds):
    for i, units in enumerate(hidden, start=1):
        x = _dense(units, "fc", f"fc{i}", seeds)(x)
    return _dense(num_classes, "output", "output", seeds, activation=None)(x)


@register("lenet_300_100")
def lenet_300_100(input_shape, num_classes, seeds):
    """LeNet-300-100: fc 300, fc 100, output (paper Figure 2)."""
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    logits = _classifier_head(x, (300, 100), num_classes, seeds)
    return keras.Model(inputs, logits, name="lenet_300_100")


def _conv_net(name, filters_per_block, input_shape, num_classes, seeds):
    """Conv-N: blocks of [3x3 conv, 3x3 conv, 2x2 max-pool], fc 256, 256."""
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    conv = 0
    for block, filters in enumerate(filters_per_block, start=1):
        for _ in range(2):
            conv += 1
            x = MaskedConv2D(
                filters,
                3,
                padding="same",
                activation="relu",
                pruning_group="conv",
                kernel_initializer=seeds.glorot_normal(),
                name=f"conv{conv}",
            )(x)
        x = keras.layers.MaxPool2D(2, name=f"pool{block}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    logits = _classifier_head(x, (256, 256), num_classes, seeds)
    return keras.Model(inputs, logits, name=name)


@register("conv2")
def conv2(input_shape, num_classes, seeds):
    return _conv_net("conv2", (64,), input_shape, num_classes, seeds)


@register("conv4")
def conv4(input_shape, num_classes, seeds):
    return _conv_net("conv4", (64, 128), input_shape, num_classes, seeds)


@register("conv6")
def conv6(input_shape, num_classes, seeds):
    return _conv_net("conv6", (64, 128, 256), input_shape, num_classes, seeds)


def _conv_bn_relu(x, filters, name, seeds, strides=1, relu=True):
    """3x3 (or strided) masked conv, batch norm (never pruned), ReLU."""
    x = MaskedConv2D(
        filters,
        3,
        strides=strides,
        padding="same",
        use_bias=False,
        pruning_group="conv",
        kernel_initializer=seeds.glorot_normal(),
        name=name,
    )(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


@register("vgg19")
def vgg19(input_shape, num_classes, seeds):
    """VGG-19 for CIFAR (paper Section 5, as in open_lth): 16 conv+BN layers.

    Blocks of 64x2, 128x2, 256x4, 512x4, 512x4 with 2x2 max-pooling between
    them, global average pooling, and one output layer.
    """
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    plan = [(64, 2), (128, 2), (256, 4), (512, 4), (512, 4)]
    conv = 0
    for block, (filters, count) in enumerate(plan, start=1):
        if block > 1:
            # Valid pooling (as open_lth): on 28x28 inputs 28 -> 14 -> 7 -> 3 -> 1.
            x = keras.layers.MaxPool2D(2, name=f"pool{block - 1}")(x)
        for _ in range(count):
            conv += 1
            x = _conv_bn_relu(x, filters, f"conv{conv}", seeds)
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    logits = _dense(num_classes, "output", "output", seeds, activation=None)(x)
    return keras.Model(inputs, logits, name="vgg19")


@register("resnet20")
def resnet20(input_shape, num_classes, seeds):
    """ResNet-20 for CIFAR (He et al. 2016; the paper's "ResNet-18").

    A 16-filter stem, three stages of three basic blocks (16, 32, 64 filters,
    stride 2 entering stages 2 and 3, 1x1 conv + BN shortcut there), global
    average pooling, one output layer. Every conv is masked; BN is not.
    """
    inputs = keras.Input(input_shape, name="image")
    x = _conv_bn_relu(inputs, 16, "stem", seeds)
    for stage, filters in enumerate((16, 32, 64), start=1):
        for block in range(1, 4):
            name = f"stage{stage}_block{block}"
            strides = 2 if stage > 1 and block == 1 else 1
            y = _conv_bn_relu(x, filters, f"{name}_conv1", seeds, strides=strides)
            y = _conv_bn_relu(y, filters, f"{name}_conv2", seeds, relu=False)
            if strides != 1 or x.shape[-1] != filters:
                x = MaskedConv2D(
                    filters, 1, strides=strides, use_bias=False, pruning_group="conv",
                    kernel_initializer=seeds.glorot_normal(), name=f"{name}_shortcut",
                )(x)
                x = keras.layers.BatchNormalization(name=f"{name}_shortcut_bn")(x)
            x = keras.layers.ReLU(name=f"{name}_relu")(keras.layers.Add(name=f"{name}_add")([x, y]))
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    logits = _dense(num_classes, "output", "output", seeds, activation=None)(x)
    return keras.Model(inputs, logits, name="resnet20")
