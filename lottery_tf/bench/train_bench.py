"""Benchmarks, measured side by side in one process: `python -m lottery_tf.bench.train_bench`.

Variants are timed in interleaved repeats (A, B, A, B, ...) so that a noisy
machine slows all of them alike; each figure is the median over the repeats
with min and max, and ratios are taken between medians. Parts (`--parts`):

  train_step   LeNet-300-100 (real MNIST through the TFDS pipeline, batch 60,
               Adam): plain layers with `model.fit` defaults (no XLA, one step
               per execution) vs lottery-tf's default path (XLA, 50 steps per
               execution). Target: >= 2.0x.
  masking      masked vs plain layers on the same (default) path, LeNet-300-100
               and Conv-2, in-memory data. Target: <= 1.05.
  pipeline     the TFDS input pipeline vs the same images as in-memory tensors,
               LeNet-300-100, default path. Target: >= 0.95x the steps/s.
  rounds       the quickstart configuration (shortened to --bench_round_iterations
               per round, 11 rounds): between-round work (pruning, restore,
               saving; evaluation aside) as a share of a round's wall time
               (target <= 5 %), and resident memory after round 10 vs round 1
               (target <= 1.05).
  round        one pruned LeNet-300-100 round of --round_iterations (evaluation
               every 500) on lottery-tf's default path, next to the PyTorch
               eager loop doing the same work (targets: <= 0.5 of its time,
               evaluation <= 10 % of the round).
  evaluation   an evaluation pass over validation + test vs a bare compiled
               forward pass over the same images, LeNet-300-100 and Conv-2
               (target <= 1.5), and `model.evaluate` as lottery-tf 0.1 did it.
  steps        a training step of LeNet-300-100, Conv-2, ResNet-20 and VGG-19
               (paper batch sizes, random data), XLA off and on, next to the
               same network's PyTorch eager step: where XLA helps, per family.

The PyTorch columns need an interpreter with PyTorch (`--torch_python`, or
this one if it imports torch); PyTorch is never a dependency of lottery-tf.
"""

import os
import statistics
import tempfile
import time

from absl import flags

from lottery_tf import errors
from lottery_tf.bench import versus
from lottery_tf.cli import app

PARTS = ("train_step", "masking", "pipeline", "rounds", "round", "evaluation", "steps")


def _plain(name, seed=0):
    """The registry's model with plain tf_keras layers in place of masked ones."""
    import tf_keras as keras

    init = keras.initializers.GlorotNormal
    layers = [keras.Input((28, 28, 1))]
    if name == "conv2":
        for i in range(2):
            layers.append(keras.layers.Conv2D(64, 3, padding="same", activation="relu",
                                              kernel_initializer=init(seed + i)))
        layers.append(keras.layers.MaxPool2D(2))
        hidden = (256, 256)
    else:
        hidden = (300, 100)
    layers.append(keras.layers.Flatten())
    for i, units in enumerate(hidden):
        layers.append(keras.layers.Dense(units, "relu", kernel_initializer=init(seed + 10 + i)))
    layers.append(keras.layers.Dense(10, kernel_initializer=init(seed + 20)))
    return keras.Sequential(layers)


def _compiled(name, masked, jit_compile=True, steps_per_execution=50):
    from lottery_tf.nn import models
    from lottery_tf.train import fit as training
    from lottery_tf.train import optimizers

    import tensorflow as tf

    from lottery_tf.bench.versus import determinism_on
    from lottery_tf.train import xla

    model = models.build(name, (28, 28, 1), 10, 0) if masked else _plain(name)
    # Under op determinism XLA has no max-pooling gradient: such models run without it.
    jit_compile = jit_compile and xla.supported(tf.distribute.get_strategy(), model, determinism_on())
    training.compile_model(model, optimizers.make_optimizer("adam", 1.2e-3), jit_compile, steps_per_execution)
    return model


def _in_memory(dataset, batch_size=60):
    """The training images as one tensor, batched like `Dataset.train`."""
    import numpy as np
    import tensorflow as tf

    images, labels = [], []
    for x, y in dataset.train(1000, seed=0).take(dataset.num_train // 1000):
        images.append(x.numpy())
        labels.append(y.numpy())
    ds = tf.data.Dataset.from_tensor_slices((np.concatenate(images), np.concatenate(labels)))
    return ds.shuffle(len(ds), seed=0).repeat().batch(batch_size, drop_remainder=True).prefetch(
        tf.data.AUTOTUNE)


def time_variants(variants, repeats, steps):
    """{name: (model, data)} -> {name: [ms/step per repeat]}, interleaved."""
    for model, data in variants.values():  # compile and warm caches, untimed
        model.fit(data, epochs=1, steps_per_epoch=min(steps, 300), verbose=0)
    times = {name: [] for name in variants}
    for _ in range(repeats):
        for name, (model, data) in variants.items():
            start = time.perf_counter()
            model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
            times[name].append(1000.0 * (time.perf_counter() - start) / steps)
    return times


def _row(name, values, unit="ms/step"):
    return (name, statistics.median(values), min(values), max(values), unit)


def train_step(dataset, repeats, steps):
    data = dataset.train(60, seed=0)
    times = time_variants({
        "LeNet plain layers, model.fit defaults (no XLA, 1 step/execution)":
            (_compiled("lenet_300_100", False, False, 1), data),
        "LeNet masked layers, lottery-tf default (XLA, 50 steps/execution)":
            (_compiled("lenet_300_100", True), data),
    }, repeats, steps)
    rows = [_row(n, t) for n, t in times.items()]
    return rows, {"default path speed-up over plain model.fit (target >= 2.5)": rows[0][1] / rows[1][1]}


def masking(dataset, repeats, steps):
    data = _in_memory(dataset)
    rows, ratios = [], {}
    for name, n_steps in (("lenet_300_100", steps), ("conv2", max(50, steps // 10))):
        times = time_variants({
            f"{name} plain layers (default path)": (_compiled(name, False, name == "lenet_300_100"), data),
            f"{name} masked layers (default path)": (_compiled(name, True, name == "lenet_300_100"), data),
        }, repeats, n_steps)
        pair = [_row(n, t) for n, t in times.items()]
        rows += pair
        ratios[f"{name}: masked / plain step time (target <= 1.05)"] = pair[1][1] / pair[0][1]
    return rows, ratios


def pipeline(dataset, repeats, steps):
    model = _compiled("lenet_300_100", True)
    times = time_variants({
        "LeNet default path, in-memory tensors": (model, _in_memory(dataset)),
        "LeNet default path, TFDS pipeline (Dataset.train)": (model, dataset.train(60, seed=0)),
    }, repeats, steps)
    rows = [_row(n, t) for n, t in times.items()]
    return rows, {"TFDS pipeline steps/s / in-memory steps/s (target >= 0.95)": rows[0][1] / rows[1][1]}


def _rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def rounds(dataset, iterations):
    """Between-round overhead and memory growth over 11 quickstart-like rounds."""
    from lottery_tf.lottery import runner
    from lottery_tf.config import Config

    stamps, rss = [], []

    def progress(line):
        stamps.append(time.perf_counter())
        rss.append(_rss_mib())

    with tempfile.TemporaryDirectory() as tmp:
        config = Config(iterations=iterations, eval_every=500 if iterations % 500 == 0 else iterations,
                        rounds=11, verbose=0, output_dir=os.path.join(tmp, "run"))
        start = time.perf_counter()
        results = runner.run(config, progress=progress, dataset=dataset)
    totals = [b - a for a, b in zip([start] + stamps[:-1], stamps)]
    # Round 0 includes model build and XLA compilation: leave it out.
    shares = [100.0 * (total - m["wall_time_s"]) / total for total, m in zip(totals[1:], results[1:])]
    rows = [_row("between-round work, % of round wall time (rounds 1-10)", shares, "%"),
            ("resident memory after round 1 / after round 10", rss[1], rss[10], rss[10], "MiB")]
    return rows, {"between-round share, median % (target <= 5)": statistics.median(shares),
                  "RSS after round 10 / after round 1 (target <= 1.05)": rss[10] / rss[1]}


class TrainBenchmarkCommand(app.Command):
    name = "train_benchmark"
    summary = "Training-speed benchmarks, variants side by side in one process."

    def program(self):
        return "python -m lottery_tf.bench.train_bench"

    def define_flags(self, fv):
        flags.DEFINE_list("parts", list(PARTS), f"Benchmarks to run: {', '.join(PARTS)}.",
                          flag_values=fv)
        flags.DEFINE_integer("repeats", 5, "Timed repeats of each variant.", flag_values=fv)
        flags.DEFINE_integer("steps", 2000, "Training steps per timed repeat.", flag_values=fv)
        flags.DEFINE_integer("bench_round_iterations", 1000,
                             "Iterations per round in the rounds part.", flag_values=fv)
        flags.DEFINE_string("bench_data_dir", "",
                            "TFDS data dir with MNIST; empty for TFDS's default.", flag_values=fv)
        flags.DEFINE_integer("round_iterations", 10000, "Iterations of the round part's round.",
                             flag_values=fv)
        flags.DEFINE_string("torch_python", "",
                            "Python interpreter with PyTorch for the reference columns; empty: this "
                            "one if it imports torch, else none.", flag_values=fv)
        flags.DEFINE_list("step_models", [m for m, _, _ in versus.STEP_MODELS],
                          "Models of the steps part.", flag_values=fv)
        flags.DEFINE_boolean("bench_deterministic", True,
                             "Enable op determinism, as lottery-tf's default --deterministic does "
                             "(XLA is then refused for max-pooling models).", flag_values=fv)

    def run(self, fv):
        benchmark(fv)


def benchmark(fv):
    unknown = [p for p in fv.parts if p not in PARTS]
    if unknown:
        raise errors.LotteryError(f"unknown benchmark part {unknown[0]!r}; known: {', '.join(PARTS)}")
    import tensorflow as tf

    from lottery_tf.train import data

    if fv.bench_deterministic:
        tf.config.experimental.enable_op_determinism()
    python = versus.torch_python(fv.torch_python) if {"round", "steps"} & set(fv.parts) else None
    dataset = data.load("mnist", data_dir=fv.bench_data_dir or None)
    all_rows, all_ratios = [], {}
    for part in fv.parts:
        if part == "rounds":
            rows, ratios = rounds(dataset, fv.bench_round_iterations)
        elif part == "round":
            rows, ratios = versus.round_part(dataset, fv.repeats, fv.round_iterations, python)
        elif part == "evaluation":
            rows, ratios = versus.evaluation_part(dataset, fv.repeats)
        elif part == "steps":
            rows, ratios = versus.steps_part(fv.repeats, python, fv.step_models)
        else:
            rows, ratios = globals()[part](dataset, fv.repeats, fv.steps)
        all_rows += rows
        all_ratios.update(ratios)
    print(f"\n{fv.repeats} repeats (train_step, masking, pipeline: {fv.steps} steps each, Conv-2 "
          "steps / 10); median (min-max)")
    print("| measurement | median | min | max | unit |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, median, low, high, unit in all_rows:
        print(f"| {name} | {median:.3f} | {low:.3f} | {high:.3f} | {unit} |")
    for name, value in all_ratios.items():
        print(f"{name}: {value:.3f}")


if __name__ == "__main__":
    app.main(TrainBenchmarkCommand())
