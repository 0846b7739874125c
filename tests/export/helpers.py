"""Shared helpers of the export tests: hand-made run directories, the in-process CLI.

Run directories are written by hand (models.build, masks and weights chosen
here, run_dir's writers), so each ticket has exactly the dead inputs, dead
units and dead filters a test needs, and no test trains.
"""

import contextlib
import io
import os
import tempfile

import numpy as np

from lottery_tf import export
from lottery_tf.cli import app
from lottery_tf.cli.export import ExportCommand
from lottery_tf.nn import models
from lottery_tf.nn.layers import masked_layers
from lottery_tf.lottery.run_dir import write_arrays, write_json

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LENET_SHAPE = (28, 28, 1)
# Runs `lottery-tf export ARGS` in a fresh process, before the dispatcher knows
# the command (`python -m lottery_tf export ARGS` once it does).
EXPORT_IN_A_PROCESS = ("import sys; from lottery_tf.cli import app; "
                       "from lottery_tf.cli.export import ExportCommand; "
                       "app.main(ExportCommand(), sys.argv)")


def run_export(args):
    """Runs `lottery-tf export` in-process; returns (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    status = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            app.main(ExportCommand(), ["lottery-tf export", *args])
        except SystemExit as e:
            status = e.code
    return status, out.getvalue(), err.getvalue()


def tree_files(path):
    """{relative path: bytes} of every file under `path` (empty if missing)."""
    found = {}
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                found[os.path.relpath(full, path)] = f.read()
    return found


def lenet_masks(seed, sparse):
    """LeNet-300-100 masks. Sparse ones hold every kind of dead structure:

    fc1: pixels 0-99 dead (zero rows), units 0-9 without incoming weights;
    fc2: rows 10-14 zero (fc1 units 10-14 unread), units 0-2 reading only
    fc1 units 0-9 (which are constant), output: 30 % dense.
    """
    rng = np.random.default_rng(seed)
    if not sparse:
        return {"fc1": np.ones((784, 300), np.float32), "fc2": np.ones((300, 100), np.float32),
                "output": np.ones((100, 10), np.float32)}
    fc1 = (rng.random((784, 300)) < 0.04).astype(np.float32)
    fc1[:100] = 0
    fc1[:, :10] = 0
    fc2 = (rng.random((300, 100)) < 0.05).astype(np.float32)
    fc2[10:15] = 0
    fc2[:, :3] = 0
    fc2[:10, :3] = 1
    output = (rng.random((100, 10)) < 0.3).astype(np.float32)
    return {"fc1": fc1, "fc2": fc2, "output": output}


def random_weights(model, masks, seed, positive_bias=()):
    """Random trained-looking weights, kernels zero where masked."""
    rng = np.random.default_rng(seed)
    weights = {}
    for layer in masked_layers(model):
        live_fan_in = np.prod(layer.kernel.shape[:-1]) * masks[layer.name].mean()
        std = 1.0 / np.sqrt(max(live_fan_in, 1.0))  # keeps logits O(1): float32 rounding small
        kernel = rng.normal(0, std, layer.kernel.shape).astype(np.float32)
        weights[f"{layer.name}/kernel"] = kernel * masks[layer.name]
        bias = rng.normal(0, 0.1, layer.bias.shape).astype(np.float32)
        if layer.name in positive_bias:
            bias = np.abs(bias) + 0.5  # dead units with relu(bias) > 0: folded, not dropped
        weights[f"{layer.name}/bias"] = bias
    return weights


def write_run(path, model_name="lenet_300_100", input_shape=LENET_SHAPE, rounds=None, seed=0):
    """A run directory with hand-made rounds; `rounds` maps round -> (masks, weights)."""
    os.makedirs(path)
    write_json(os.path.join(path, "config.json"), {
        "model": model_name, "dataset": "mnist", "seed": seed, "validation_size": 60,
        "data_dir": "", "rounds": len(rounds)})
    write_json(os.path.join(path, "dataset.json"), {
        "name": "mnist", "input_shape": list(input_shape), "num_classes": 10,
        "num_train": 240, "iterations_per_round": 30})
    for r, (masks, weights) in rounds.items():
        round_dir = os.path.join(path, f"round_{r:03d}")
        os.makedirs(round_dir)
        write_arrays(os.path.join(round_dir, "mask.npz"), masks)
        write_arrays(os.path.join(round_dir, "weights.npz"), weights)
        alive = sum(int(m.sum()) for m in masks.values())
        total = sum(m.size for m in masks.values())
        write_json(os.path.join(round_dir, "metrics.json"), {
            "round": r, "remaining_pct": 100.0 * alive / total,
            "remaining_pct_by_layer": {k: float(100.0 * m.mean()) for k, m in masks.items()},
            "early_stop_iteration": 30, "early_stop_val_loss": 0.5,
            "early_stop_val_accuracy": 0.9 - 0.001 * r, "early_stop_test_accuracy": 0.9,
            "final_test_accuracy": 0.9, "wall_time_s": 1.0})


def lenet_run(path):
    """Round 0 dense, round 1 sparse (see `_lenet_masks`)."""
    model = models.build("lenet_300_100", LENET_SHAPE, 10, seed=0)
    rounds = {}
    for r, sparse in ((0, False), (1, True)):
        masks = lenet_masks(r, sparse)
        rounds[r] = (masks, random_weights(model, masks, seed=r, positive_bias=("fc1",)))
    write_run(path, rounds=rounds)
    return rounds


def masked_reference(run_dir, r, images):
    ticket = export.load_ticket(run_dir, str(r))
    return export.keras_model(ticket)(images, training=False).numpy()


def random_images(n, shape=LENET_SHAPE, seed=7):
    return np.random.default_rng(seed).random((n,) + tuple(shape), dtype=np.float32)


def class_tmp(name):
    """A temp dir for a whole test class (setUpClass has no self.get_temp_dir())."""
    return tempfile.mkdtemp(prefix=f"test_export_{name}_")


def random_ticket_weights(model, masks, seed):
    """Every weight of `model` (keyed as weights.npz keys them), random: kernels
    zero where masked and scaled to keep activations O(1), batch norms with
    non-trivial gamma, beta and moving statistics (so folding them is tested)."""
    rng = np.random.default_rng(seed)
    weights = {}
    for variable in model.weights:
        key = variable.name.split(":")[0]
        layer, kind = key.rsplit("/", 1)
        shape = tuple(variable.shape)
        if kind == "mask":
            continue
        if kind == "kernel":
            live_fan_in = np.prod(shape[:-1]) * masks[layer].mean()
            value = rng.normal(0, 1.0 / np.sqrt(max(live_fan_in, 1.0)), shape) * masks[layer]
        elif kind == "gamma":
            value = rng.uniform(0.5, 1.5, shape)
        elif kind == "moving_variance":
            value = rng.uniform(0.3, 2.0, shape)
        elif kind in ("beta", "moving_mean"):
            value = rng.normal(0, 0.3, shape)
        else:  # biases
            value = rng.normal(0, 0.1, shape)
        weights[key] = value.astype(np.float32)
    return weights
