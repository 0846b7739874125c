"""The lottery loop: train, prune, rewind to θ0, repeat.

Each round is one idempotent step: it is skipped when its metrics exist, so
rerunning a stopped run continues after the last completed round, and since
a round depends only on θ0, its masks and its seed, a resumed run ends with
the masks and metrics of an uninterrupted one.
"""

import os

import numpy as np
import tensorflow as tf
import tf_keras as keras

from lottery_tf import data as data_lib
from lottery_tf import distribute, errors, models, pruning, schedule, training
from lottery_tf.callbacks import LotteryCallback, model_weights
from lottery_tf.layers import masked_layers
from lottery_tf.run_dir import RunDir, read_arrays, read_json, write_arrays


def round_seed(seed, r):
    """The data-order seed of round r: distinct per round, fixed per run."""
    return int(seed) * 10007 + r


def run(config, progress=print, dataset=None):
    """Runs (or resumes) the lottery experiment `config` describes.

    Args:
      config: a `Config`.
      progress: called with one line of text per round.
      dataset: a `data.Dataset` to use instead of loading `config.dataset`.

    Returns:
      The metrics dict of every round, in order.

    Raises:
      errors.LotteryError: bad configuration, data or run directory; raised
        before anything is written.
    """
    config.validate()
    models.MODELS.get(config.model)
    strategy_fn = pruning.STRATEGIES.get(config.pruning_strategy)
    run_dir = RunDir.for_config(config)
    run_dir.check(config)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)

    if dataset is None:
        dataset = data_lib.load(
            config.dataset,
            data_dir=config.data_dir or None,
            manual_dir=config.manual_dir or None,
            validation_size=config.validation_size,
        )
    iterations = config.train_iterations(dataset.num_train)
    if iterations <= 0:
        raise errors.LotteryError(
            f"--epochs={config.epochs} at --batch_size={config.batch_size} is no "
            f"iteration of {dataset.num_train} training examples"
        )
    steps = training.effective_steps_per_execution(
        config.steps_per_execution, config.eval_every, iterations
    )
    strategy = distribute.make(config.distribution_strategy)
    jit_compile = config.jit_compile and training.jit_supported(strategy)
    with strategy.scope():
        model = models.build(config.model, dataset.input_shape, dataset.num_classes, config.seed)
        training.compile_model(
            model, config.optimizer, config.learning_rate, config.momentum,
            jit_compile, steps,
        )

    run_dir.create(config, {
        "name": dataset.name,
        "input_shape": list(dataset.input_shape),
        "num_classes": dataset.num_classes,
        "num_train": dataset.num_train,
        "iterations_per_round": iterations,
    })
    theta0 = _theta0(run_dir, model)
    layers = masked_layers(model)
    groups = {layer.name: layer.pruning_group for layer in layers}
    sizes = {layer.name: int(np.prod(layer.kernel.shape)) for layer in layers}

    results = []
    for r in range(config.rounds):
        saved = run_dir.round_complete(r)
        if saved:
            metrics = read_json(run_dir.metrics_path(r))
        else:
            metrics = _train_round(
                config, run_dir, r, model, dataset, theta0, iterations,
                _pruner(config, strategy_fn, r, groups, sizes),
            )
        results.append(metrics)
        run_dir.write_summary([summary_row(m) for m in results])
        progress(format_round(metrics, config.rounds) + (" [saved]" if saved else ""))
    return results


def _theta0(run_dir, model):
    """θ0 from the run directory, or the fresh model's weights saved there."""
    if os.path.exists(run_dir.theta0_path):
        return read_arrays(run_dir.theta0_path)
    theta0 = {key: v.numpy() for key, v in model_weights(model).items()}
    write_arrays(run_dir.theta0_path, theta0)
    return theta0


def _pruner(config, strategy_fn, r, groups, sizes):
    """What ends round r: a (kernels, masks) -> masks function, or None."""
    if config.one_shot_sparsity:
        if r > 0:
            return None
        fractions = schedule.one_shot_fractions(
            groups, sizes, config.rates(), config.one_shot_sparsity
        )
    else:
        fractions = schedule.iterative_fractions(groups, config.rates())
    return lambda kernels, masks: strategy_fn(kernels, masks, fractions)


def _train_round(config, run_dir, r, model, dataset, theta0, iterations, prune):
    layers = masked_layers(model)
    if r == 0:
        masks = {layer.name: np.ones(layer.mask.shape, np.float32) for layer in layers}
        os.makedirs(run_dir.round_dir(0), exist_ok=True)
        write_arrays(run_dir.mask_path(0), masks)
    else:
        masks = run_dir.load_masks(r)
    callback = LotteryCallback(theta0, masks, prune)
    curve, wall = training.train_round(
        model,
        dataset.train(config.batch_size, seed=round_seed(config.seed, r)),
        dataset.validation,
        dataset.test,
        iterations,
        config.eval_every,
        [callback],
        verbose=config.verbose,
    )
    metrics = {
        "round": r,
        "iterations": iterations,
        **remaining(masks),
        **training.summarize_curve(curve),
        "wall_time_s": wall,
        "curve": curve,
    }
    weights = {key: v.numpy() for key, v in model_weights(model).items()}
    run_dir.save_round(r, weights, metrics, next_masks=callback.next_masks)
    return metrics


def remaining(masks):
    """Percent of prunable weights (kernels) alive, overall and per layer."""
    alive = {name: int(np.count_nonzero(m)) for name, m in masks.items()}
    total = sum(m.size for m in masks.values())
    return {
        "remaining_pct": 100.0 * sum(alive.values()) / total,
        "remaining_pct_by_layer": {
            name: 100.0 * alive[name] / masks[name].size for name in masks
        },
    }


def summary_row(metrics):
    row = {
        "round": metrics["round"],
        "remaining_pct": f"{metrics['remaining_pct']:.4f}",
        "early_stop_iteration": metrics["early_stop_iteration"],
        "early_stop_val_loss": f"{metrics['early_stop_val_loss']:.6f}",
        "early_stop_test_accuracy": f"{metrics['early_stop_test_accuracy']:.6f}",
        "final_test_accuracy": f"{metrics['final_test_accuracy']:.6f}",
        "wall_time_s": f"{metrics['wall_time_s']:.2f}",
    }
    for name, pct in metrics["remaining_pct_by_layer"].items():
        row[f"remaining_pct/{name}"] = f"{pct:.4f}"
    return row


def format_round(metrics, rounds):
    return (
        f"round {metrics['round']} ({metrics['round'] + 1}/{rounds}) | "
        f"{metrics['remaining_pct']:.2f}% weights remaining | "
        f"early stop: iteration {metrics['early_stop_iteration']}, "
        f"test acc {100 * metrics['early_stop_test_accuracy']:.2f}% | "
        f"final test acc {100 * metrics['final_test_accuracy']:.2f}% | "
        f"{metrics['wall_time_s']:.1f} s"
    )
