"""Side-by-side parts of `train_bench`: a whole IMP round, evaluation, and training steps
per model family with and without XLA, each next to a PyTorch eager reference
(`torch_reference.py`, run by `--torch_python` when given or importable).
"""

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from lottery_tf import errors

REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_reference.py")
# (model, input shape HWC, batch size): the paper's batch sizes.
STEP_MODELS = (
    ("lenet_300_100", (28, 28, 1), 60),
    ("conv2", (28, 28, 1), 60),
    ("resnet20", (32, 32, 3), 128),
    ("vgg19", (32, 32, 3), 64),
)


def torch_python(requested):
    """The interpreter that runs the PyTorch reference, or None (with the reason printed)."""
    if requested:
        check = subprocess.run([requested, "-c", "import torch"], capture_output=True)
        if check.returncode:
            raise errors.LotteryError(f"--torch_python={requested} cannot import torch: pass an "
                                      "interpreter of a venv with PyTorch installed")
        return requested
    if importlib.util.find_spec("torch") is not None:
        return sys.executable
    print("PyTorch is not importable here: the PyTorch columns are skipped (pass --torch_python="
          "PATH to a venv's python with PyTorch; it is never a dependency of lottery-tf)")
    return None


def _reference(python, *args):
    out = subprocess.run([python, REFERENCE, *map(str, args)], capture_output=True, text=True)
    if out.returncode:
        raise errors.LotteryError(f"the PyTorch reference failed: {out.stderr.strip().splitlines()[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _stats(values):
    return statistics.median(values), min(values), max(values)


def _row(name, values, unit, scale=1.0):
    median, low, high = _stats([v * scale for v in values])
    return (name, median, low, high, unit)


def _round_masks(experiment, seed=0):
    """Random masks at round-1 density (fc 80 %, output 90 %), as the reference's."""
    rng = np.random.default_rng(seed)
    return {layer.name: (rng.random(layer.mask.shape) < (0.9 if layer.pruning_group == "output" else 0.8))
            .astype(np.float32) for layer in experiment.layers}


def _arrays(dataset):
    """uint8 images and labels of the three sets, for the reference (same data)."""
    def collect(batches):
        images, labels = [], []
        for x, y in batches:
            images.append(np.rint(x.numpy() * 255.0).astype(np.uint8))
            labels.append(y.numpy())
        return np.concatenate(images), np.concatenate(labels)

    train = collect(dataset.train(1000, seed=0).take(dataset.num_train // 1000))
    arrays = {}
    for name, value in (("train", train), ("validation", collect(dataset.validation)),
                        ("test", collect(dataset.test))):
        arrays[f"{name}_images"], arrays[f"{name}_labels"] = value
    return arrays


def round_part(dataset, repeats, iterations, python):
    """One pruned LeNet round (eval every 500): lottery-tf's default path vs the PyTorch loop."""
    from lottery_tf.config import Config
    from lottery_tf.lottery import runner

    with tempfile.TemporaryDirectory() as tmp:
        config = Config(iterations=iterations, eval_every=500, verbose=0, output_dir=os.path.join(tmp, "run"))
        experiment = runner.setup(config, dataset=dataset)
        evaluate, spent = experiment.evaluate, []

        def timed():
            began = time.perf_counter()
            figures = evaluate()
            spent.append(time.perf_counter() - began)
            return figures

        experiment.evaluate = timed
        masks, start = _round_masks(experiment), experiment.current_weights()
        runner.train(experiment, masks, start, seed=0)  # traces and compiles, untimed
        path = os.path.join(tmp, "mnist.npz")
        if python:
            np.savez(path, **_arrays(dataset))
        ours, ours_eval, theirs, theirs_eval = [], [], [], []
        for _ in range(repeats):
            del spent[:]
            result = runner.train(experiment, masks, start, seed=0)
            ours.append(result.metrics["wall_time_s"])
            ours_eval.append(sum(spent))
            if python:
                reference = _reference(python, "round", path, iterations, 500)
                theirs.append(reference["round_s"])
                theirs_eval.append(reference["evaluation_s"])
    rows = [_row(f"LeNet round ({iterations} it., eval every 500), lottery-tf default path", ours, "s"),
            _row("  of which evaluation (lottery-tf)", ours_eval, "s")]
    ratios = {"evaluation share of the lottery-tf round, % (target <= 10)":
              100.0 * statistics.median(ours_eval) / statistics.median(ours)}
    if python:
        rows += [_row("LeNet round, PyTorch eager loop (torch_reference.py)", theirs, "s"),
                 _row("  of which evaluation (PyTorch)", theirs_eval, "s")]
        ratios["LeNet round: lottery-tf / PyTorch (target <= 0.5)"] = (
            statistics.median(ours) / statistics.median(theirs))
    return rows, ratios


def evaluation_part(dataset, repeats):
    """An evaluation pass (validation + test) vs a bare compiled forward pass over the same images."""
    import tensorflow as tf

    from lottery_tf.bench import train_bench
    from lottery_tf.train import xla
    from lottery_tf.train.evaluate import Evaluator

    chunks = [x for x, _ in dataset.validation] + [x for x, _ in dataset.test]
    images = tf.concat(chunks, 0)
    sets = {"val": dataset.validation, "test": dataset.test}
    rows, ratios = [], {}
    for name in ("lenet_300_100", "conv2"):
        model = train_bench._compiled(name, True, jit_compile=False)
        default = xla.EVALUATION[(xla.device_type(), xla.model_family(model))]
        variants = {}
        for jit in (default, not default):
            variants[f"{name}: lottery-tf evaluation, XLA {'on' if jit else 'off'}"
                     + (" (default)" if jit == default else "")] = Evaluator(model, sets, jit_compile=jit)
            forward = tf.function(lambda xs, m=model: [tf.reduce_sum(m(x, training=False)) for x in xs],
                                  jit_compile=jit)
            variants[f"{name}: bare forward pass, the same batches, XLA {'on' if jit else 'off'}"] = (
                lambda f=forward: [y.numpy() for y in f(chunks)])
            if name == "lenet_300_100":  # a conv net's activations for 15,000 images fill the memory
                whole = tf.function(lambda x, m=model: tf.reduce_sum(m(x, training=False)), jit_compile=jit)
                variants[f"{name}: bare forward pass, one batch, XLA {'on' if jit else 'off'}"] = (
                    lambda f=whole: f(images).numpy())
        variants[f"{name}: model.evaluate on both sets (lottery-tf <= 0.1)"] = lambda m=model: [
            m.evaluate(s, verbose=0) for s in sets.values()]
        times = _interleaved(variants, repeats if name == "lenet_300_100" else max(2, repeats // 2))
        pair = [_row(n, t, "ms", 1000.0) for n, t in times.items()]
        rows += pair
        fastest_forward = min(r[1] for r in pair if "bare forward" in r[0])
        ratios[f"{name}: evaluation / fastest bare forward pass (target <= 1.5)"] = pair[0][1] / fastest_forward
    return rows, ratios


def _interleaved(variants, repeats):
    for call in variants.values():
        call()  # trace, compile, read the data: untimed
    times = {name: [] for name in variants}
    for _ in range(repeats):
        for name, call in variants.items():
            began = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - began)
    return times


def steps_part(repeats, python, models=None):
    """Training step per model family: XLA off / on, and the PyTorch eager step."""
    import tensorflow as tf

    from lottery_tf.nn import models as registry
    from lottery_tf.train import fit as training
    from lottery_tf.train import optimizers, xla

    rows, ratios = [], {}
    for name, shape, batch in STEP_MODELS:
        if models and name not in models:
            continue
        steps = 200 if name == "lenet_300_100" else (20 if name == "conv2" else 4)
        rng = np.random.default_rng(0)
        x = rng.random((batch,) + shape).astype(np.float32)
        y = rng.integers(0, 10, batch)
        data = tf.data.Dataset.from_tensors((x, y)).repeat()
        optimizer = "adam" if name in ("lenet_300_100", "conv2") else "sgd"
        variants = {}
        for jit in (False, True):
            model = registry.build(name, shape, 10, 0)
            if not xla.supported(tf.distribute.get_strategy(), model, determinism_on()) and jit:
                rows.append((f"{name}: XLA on", float("nan"), float("nan"), float("nan"),
                             "refused under op determinism"))
                continue
            training.compile_model(model, optimizers.make_optimizer(
                optimizer, 1e-3, 0.9, 1e-4 if optimizer == "sgd" else 0.0), jit, steps)
            variants[f"{name} (batch {batch}): lottery-tf, XLA {'on' if jit else 'off'}"] = (
                lambda m=model: m.fit(data, epochs=1, steps_per_epoch=steps, verbose=0))
        times = {n: [] for n in variants}
        for call in variants.values():
            call()
        theirs = []
        for _ in range(repeats):
            for n, call in variants.items():
                began = time.perf_counter()
                call()
                times[n].append((time.perf_counter() - began) / steps)
            if python:
                h, w, c = shape
                theirs.append(_reference(python, "steps", name, batch, h, w, c, steps, 2)["step_s"])
        for n, t in times.items():
            rows.append(_row(n, t, "ms/step", 1000.0))
        if python:
            rows.append(_row(f"{name} (batch {batch}): PyTorch eager", theirs, "ms/step", 1000.0))
        default = xla.TRAINING[(xla.device_type(), xla.model_family(registry.build(name, shape, 10, 0)))]
        mine = [r for r in rows if r[0].startswith(f"{name} (") and f"XLA {'on' if default else 'off'}" in r[0]]
        if python and mine:
            ratios[f"{name}: lottery-tf default step / PyTorch eager step"] = mine[0][1] / rows[-1][1]
    return rows, ratios


def determinism_on():
    from tensorflow.python.framework import config  # no public getter in TF 2.21

    return bool(config.is_op_determinism_enabled())
