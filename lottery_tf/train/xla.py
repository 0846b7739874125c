"""Where XLA compiles: the training step and the evaluation, per device and model family.

XLA is not a free speed-up. On the 2-core CPU of docs/BENCHMARKS.md it fuses
LeNet's small element-wise work (masking, Adam) and speeds its step up, but
its CPU convolutions and matrix products are slower than TensorFlow's own
kernels, so convolutional networks train slower with it and evaluation (a
forward pass, nothing to fuse) is faster without it. The defaults below are
those measurements; `--jit_compile` / `--nojit_compile` overrides them. On a
GPU, XLA is TensorFlow's recommended path and is left on (not measured here).
"""

import tensorflow as tf
import tf_keras as keras

# (device, model family) -> compile the training step with XLA.
TRAINING = {
    ("cpu", "dense"): True,
    ("cpu", "conv"): False,
    ("gpu", "dense"): True,
    ("gpu", "conv"): True,
}
# device -> compile the evaluation with XLA (when the training step may be).
EVALUATION = {"cpu": False, "gpu": True}


def device_type():
    """'gpu' when TensorFlow sees a GPU, else 'cpu'."""
    return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"


def model_family(model):
    """'conv' for a model with any convolution, else 'dense'."""
    convolutional = any(isinstance(layer, keras.layers.Conv2D) for layer in model.submodules)
    return "conv" if convolutional else "dense"


def supported(strategy, model=None, deterministic=False):
    """Whether Keras's `jit_compile` can run `model` under `strategy`.

    XLA compiles the whole step into one cluster, which cannot reach variables
    mirrored on other devices ("Trying to access resource ... located in
    device CPU:1 from device CPU:0"); TPUs compile with XLA anyway. And with
    op determinism on, XLA refuses max-pooling gradients ("MaxPool gradient
    ops do not yet have a deterministic XLA implementation").
    """
    if strategy.num_replicas_in_sync != 1:
        return False
    if deterministic and model is not None:
        return not any(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.submodules)
    return True


def for_training(requested, model, strategy, deterministic):
    """Whether to compile `model`'s training step with XLA.

    Args:
      requested: True or False to choose, None for the measured default.
    """
    wanted = TRAINING[(device_type(), model_family(model))] if requested is None else requested
    return bool(wanted) and supported(strategy, model, deterministic)


def for_evaluation(requested, training_jit):
    """Whether to compile the evaluation with XLA, given the training step's choice."""
    wanted = EVALUATION[device_type()] if requested is None else requested
    return bool(wanted) and training_jit
