"""A user's own models and data, as tests hand them over by import path
(`--model=own_fixtures:residual_cnn`): tests/ is on sys.path under pytest."""

import numpy as np
import tensorflow as tf
import tf_keras as keras

import lottery_tf

SHAPE = (8, 8, 1)


def residual_cnn(input_shape, num_classes):
    """A functional CNN with batch norm, dropout and a residual block."""
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    y = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="block_conv")(x)
    x = keras.layers.Add(name="block_add")([x, y])
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(0.25, name="dropout")(x)
    x = keras.layers.Dense(16, activation="relu", name="hidden")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(x), name="residual")


def plain_cnn(input_shape, num_classes, seed):
    """A plain chain: conv, pool, flatten, dense (seeded initializers)."""
    init = keras.initializers.GlorotUniform(seed=seed)
    return keras.Sequential([
        keras.Input(input_shape, name="image"),
        keras.layers.Conv2D(4, 3, activation="relu", kernel_initializer=init, name="conv"),
        keras.layers.MaxPool2D(2, name="pool"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(num_classes, kernel_initializer=init, name="logits"),
    ], name="plain")


def _examples(count, seed):
    rng = np.random.default_rng(seed)
    images = rng.random((count,) + SHAPE, dtype=np.float32)
    labels = (images[:, :4].mean(axis=(1, 2, 3)) > images[:, 4:].mean(axis=(1, 2, 3))).astype(np.int64)
    return tf.data.Dataset.from_tensor_slices((images, labels))


def blobs(validation_size):
    """Two classes of random 8x8 images: is the top half brighter?"""
    del validation_size  # a validation set of its own
    return lottery_tf.Data(train=_examples(160, 0), validation=_examples(40, 1),
                           test=_examples(40, 2), num_classes=2)


class HalfLoss:
    """A loss of its own: half the cross-entropy (a Keras loss is any (labels, logits) callable)."""

    def __call__(self, labels, logits):
        return 0.5 * tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))


def blobs_half_loss():
    return lottery_tf.Data(train=_examples(160, 0), validation=_examples(40, 1),
                           test=_examples(40, 2), num_classes=2, loss=HalfLoss())
