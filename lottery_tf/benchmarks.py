"""Benchmarks, measured side by side in one process: `python -m lottery_tf.benchmarks`.

Variants are timed in interleaved repeats (A, B, C, A, B, C, ...) so that a
noisy machine slows all of them alike; each figure is the median over the
repeats with min and max, and ratios are taken between medians.

Parts:
  train_step: ms per training step of LeNet-300-100 (batch 60, Adam) through
    `model.fit`, for plain tf_keras layers with `model.fit` defaults (no XLA,
    one step per execution), plain layers on lottery-tf's default path (XLA,
    50 steps per execution), and masked layers on the default path (what a
    lottery-tf round runs).
"""

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

flags.DEFINE_list("parts", ["train_step"], "Benchmarks to run: train_step.")
flags.DEFINE_integer("repeats", 5, "Timed repeats of each variant.")
flags.DEFINE_integer("steps", 3000, "Training steps per timed repeat.")
flags.DEFINE_string("data_dir", "", "TFDS data dir with MNIST; empty for TFDS's default.")
FLAGS = flags.FLAGS


def _lenet(masked, seed=0):
    import tf_keras as keras

    from lottery_tf import models

    if masked:
        return models.build("lenet_300_100", (28, 28, 1), 10, seed)
    init = keras.initializers.GlorotNormal
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Flatten(),
        keras.layers.Dense(300, "relu", kernel_initializer=init(seed + 1)),
        keras.layers.Dense(100, "relu", kernel_initializer=init(seed + 2)),
        keras.layers.Dense(10, kernel_initializer=init(seed + 3)),
    ])


def _compiled(masked, jit_compile, steps_per_execution):
    from lottery_tf import training

    model = _lenet(masked)
    training.compile_model(model, training.make_optimizer("adam", 1.2e-3), jit_compile, steps_per_execution)
    return model


def train_step(repeats, steps, data_dir):
    """Returns rows (variant, median, min, max ms/step) and the ratios."""
    from lottery_tf import data

    dataset = data.load("mnist", data_dir=data_dir or None)
    variants = {
        "plain layers, model.fit defaults (no XLA, 1 step/execution)": _compiled(False, False, 1),
        "plain layers, XLA + 50 steps/execution": _compiled(False, True, 50),
        "masked layers, XLA + 50 steps/execution (lottery-tf default)": _compiled(True, True, 50),
    }
    train = dataset.train(60, seed=0)
    for model in variants.values():  # compile and warm caches, untimed
        model.fit(train, epochs=1, steps_per_epoch=500, verbose=0)
    times = {name: [] for name in variants}
    for _ in range(repeats):
        for name, model in variants.items():
            start = time.perf_counter()
            model.fit(train, epochs=1, steps_per_epoch=steps, verbose=0)
            times[name].append(1000.0 * (time.perf_counter() - start) / steps)
    rows = [(name, statistics.median(t), min(t), max(t)) for name, t in times.items()]
    medians = [row[1] for row in rows]
    ratios = {
        "plain model.fit / lottery-tf default (speed-up)": medians[0] / medians[2],
        "masked / plain, same XLA path (masking overhead)": medians[2] / medians[1],
    }
    return rows, ratios


def main(argv):
    del argv
    for part in FLAGS.parts:
        if part != "train_step":
            raise app.UsageError(f"unknown benchmark part {part!r}; known: train_step")
    rows, ratios = train_step(FLAGS.repeats, FLAGS.steps, FLAGS.data_dir)
    print(f"\nLeNet-300-100 on MNIST, batch 60, Adam; {FLAGS.repeats} repeats x {FLAGS.steps} steps")
    print("| variant | ms/step median | min | max |")
    print("| --- | ---: | ---: | ---: |")
    for name, median, low, high in rows:
        print(f"| {name} | {median:.3f} | {low:.3f} | {high:.3f} |")
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")


if __name__ == "__main__":
    app.run(main)
