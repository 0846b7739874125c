"""Where XLA compiles: the training step and the evaluation, per device and model family.

XLA is not a free speed-up. On the 2-core CPU of docs/BENCHMARKS.md it fuses
LeNet's small element-wise work (Adam, the gradient's mask) and speeds its
training step up, but a convolutional network's training step is slower with
it (ResNet-20's, narrowly, is faster with it on Eigen's kernels, and 2x slower
with it once TensorFlow's convolutions run on oneDNN, which XLA does not use;
lottery-tf's commands turn oneDNN on, see `lottery_tf.onednn`); forward passes
(the evaluation) are as fast or faster with it, and XLA compiles them even
under op determinism (only max-pooling *gradients* lack a deterministic XLA
kernel). The defaults below are those measurements; `--jit_compile` /
`--nojit_compile` overrides them. On a GPU, XLA is TensorFlow's recommended
path and is left on (not measured here).
"""

import tensorflow as tf
import tf_keras as keras

from lottery_tf import onednn

# (device, model family) -> compile the training step with XLA.
TRAINING = {
    ("cpu", "dense"): True,      # LeNet-300-100: XLA 2.2x faster
    ("cpu", "conv"): False,      # Conv-2: 1.3x slower (fastest runs); VGG-19: 2.4x slower
    ("cpu", "residual"): True,   # ResNet-20: 1.05-1.14x faster
    ("cpu_onednn", "dense"): True,      # XLA compiles LeNet whole: oneDNN does not enter
    ("cpu_onednn", "conv"): False,      # VGG-19: 1965 ms without XLA; refused with it (deterministic)
    ("cpu_onednn", "residual"): False,  # ResNet-20: 515 ms without XLA, 1020 ms with it
    ("gpu", "dense"): True,
    ("gpu", "conv"): True,
    ("gpu", "residual"): True,
}
# (device, model family) -> compile the evaluation (forward passes) with XLA.
EVALUATION = {
    ("cpu", "dense"): True,      # LeNet: as fast either way; XLA keeps lottery-tf 0.1's figures bitwise
    ("cpu", "conv"): True,       # Conv-2 on Eigen: 7.8 s with XLA, 10.4 s without
    ("cpu", "residual"): True,   # as conv (not measured apart)
    ("cpu_onednn", "dense"): True,      # XLA compiles LeNet whole: oneDNN does not enter
    ("cpu_onednn", "conv"): False,      # Conv-2 on oneDNN: 5.5 s without XLA, 7.0 s with it
    ("cpu_onednn", "residual"): False,  # as conv (not measured apart; its training step is 1.9x faster without)
    ("gpu", "dense"): True,
    ("gpu", "conv"): True,
    ("gpu", "residual"): True,
}


def device_type():
    """'gpu' when TensorFlow sees a GPU; else 'cpu_onednn' (CPU kernels on oneDNN) or 'cpu'."""
    if tf.config.list_logical_devices("GPU"):
        return "gpu"
    return "cpu_onednn" if onednn.enabled() else "cpu"


def model_family(model):
    """'residual' (convolutions and residual additions), 'conv' (convolutions) or 'dense'."""
    layers = list(model.submodules)
    if not any(isinstance(layer, keras.layers.Conv2D) for layer in layers):
        return "dense"
    return "residual" if any(isinstance(layer, keras.layers.Add) for layer in layers) else "conv"


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


def for_evaluation(requested, model, strategy):
    """Whether to compile `model`'s evaluation with XLA.

    Args:
      requested: True or False to choose, None for the measured default.
    """
    wanted = EVALUATION[(device_type(), model_family(model))] if requested is None else requested
    return bool(wanted) and supported(strategy)
