"""The lottery loop: train, prune, rewind, repeat.

Each round is one idempotent step: it is skipped when its metrics exist, so
rerunning a stopped run continues after the last completed round, and since
a round depends only on its start weights, its masks and its seed, a resumed
run ends with the masks and metrics of an uninterrupted one.

`setup` and `train` are the building blocks; `run` is the main IMP line, and
the controls in `branches/` reuse the same blocks.
"""

import contextlib
import dataclasses
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf
import tf_keras as keras

from lottery_tf import errors, sources
from lottery_tf.lottery import cost, reset, storage, tensorboard
from lottery_tf.lottery.run_dir import RunDir
from lottery_tf.lottery.storage import is_recorded, read_arrays, read_json, write_arrays, write_json
from lottery_tf.nn import models, own_models
from lottery_tf.nn.layers import masked_layers
from lottery_tf.pruning import Pruner, PruningContext, schedule
from lottery_tf.train import callbacks as callbacks_lib
from lottery_tf.train import data as data_lib
from lottery_tf.train import distribute, optimizers, random_layers
from lottery_tf.train import evaluate as evaluate_lib
from lottery_tf.train import xla
from lottery_tf.train.evaluate import as_loss
from lottery_tf.train import fit as training
from lottery_tf.train.callbacks import LotteryCallback, WeightSnapshot, model_weights
from lottery_tf.train.early_bird import EarlyBird


def round_seed(seed, r):
    """The data-order seed of round r: distinct per round, fixed per run."""
    return int(seed) * 10007 + r


@dataclasses.dataclass
class Experiment:
    """A compiled model on its data, ready to train rounds of `config`."""

    config: object
    dataset: data_lib.Dataset
    model: keras.Model
    iterations: int
    evaluate: object  # -> {val_loss, val_accuracy, test_loss, test_accuracy}

    @property
    def layers(self):
        return masked_layers(self.model)

    @property
    def groups(self):
        return {layer.name: layer.pruning_group for layer in self.layers}

    @property
    def sizes(self):
        return {layer.name: int(np.prod(layer.kernel.shape)) for layer in self.layers}

    def dataset_info(self):
        return {
            "name": self.dataset.name,
            "input_shape": list(self.dataset.input_shape),
            "num_classes": self.dataset.num_classes,
            "num_train": self.dataset.num_train,
            "iterations_per_round": self.iterations,
        }

    def current_weights(self):
        return {key: v.numpy() for key, v in model_weights(self.model).items()}

    def pruner(self, one_shot_target=None):
        """The `Pruner` of one IMP round, or of one-shot pruning to a target."""
        fractions = schedule.fractions_for(self.config, self.groups, self.sizes, one_shot_target)
        return Pruner(self.config.criterion, self.config.pruning_scope, fractions, self.config)

    def first_batch(self, seed):
        """The first training batch of data seed `seed` (for criteria that read data)."""
        return next(iter(self.dataset.train(self.config.batch_size, seed=seed)))


@dataclasses.dataclass
class RoundResult:
    metrics: dict
    weights: dict
    next_masks: dict = None
    snapshot: dict = None


def check(config):
    """Every check that needs no data: raises `errors.LotteryError`."""
    config.validate().check_choices()


def setup(config, dataset=None, model_seed=None):
    """Loads the data and builds the compiled model `config` describes.

    Args:
      config: a validated `Config`.
      dataset: a `data.Dataset` to use instead of loading `config.dataset`.
      model_seed: initializer seed, if not `config.seed` (random reinit).
    """
    check(config)
    # First: a multi-worker strategy configures the runtime, which must not have started yet.
    strategy = distribute.make(config.distribution_strategy)
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
    if config.batch_size > dataset.num_train:
        raise errors.LotteryError(
            f"--batch_size={config.batch_size} is larger than the {dataset.num_train} training "
            f"examples of {dataset.name} (after --validation_size={config.validation_size}): every "
            "batch would repeat examples; use a smaller --batch_size"
        )
    iterations = config.train_iterations(dataset.num_train)
    if iterations <= 0:
        raise errors.LotteryError(
            f"--epochs={config.epochs} at --batch_size={config.batch_size} is no "
            f"iteration of {dataset.num_train} training examples"
        )
    if config.rewind_iteration >= iterations:
        raise errors.LotteryError(
            f"--rewind_iteration={config.rewind_iteration} must be below the "
            f"{iterations} iterations of a round"
        )
    steps = training.effective_steps_per_execution(
        config.steps_per_execution, config.eval_every, iterations, config.rewind_iteration,
        config.checkpoint_every,
    )
    seed = config.seed if model_seed is None else model_seed
    with strategy.scope():
        model = models.build(config.model, dataset.input_shape, dataset.num_classes, seed)
        jit_compile = xla.for_training(config.jit_compile, model, strategy, config.deterministic)
        optimizer = optimizers.for_config(config)
        training.compile_model(model, optimizer, jit_compile, steps, getattr(dataset, "loss", None))
        random_layers.seed_by_step(model, seed)
    evaluator = evaluate_lib.Evaluator(
        model, {"val": dataset.validation, "test": dataset.test},
        jit_compile=xla.for_evaluation(config.jit_compile, model, strategy))
    return Experiment(config, dataset, model, iterations, evaluator)


def train(experiment, masks, start_weights, seed, prune=None, snapshot_at=0, entry=None,
          held_rate_step=None):
    """Trains one round from `start_weights` under `masks`.

    `held_rate_step`: train at the learning-rate schedule's rate of that
    step throughout (--reset=finetune); None follows the schedule from 0.

    With `entry` (an `EntryDir`, and --checkpoint_every), the round is
    checkpointed as it trains and, if the entry holds a checkpoint, continues
    from the newest one instead of starting over.

    Returns a `RoundResult`: metrics (sparsity, early stopping, final
    accuracy, learning curve, wall time), the trained weights, the masks
    `prune` chose for the next round, and the weights after `snapshot_at`
    iterations when asked for (the rewind point).
    """
    config = experiment.config
    every = config.checkpoint_every if entry is not None else 0
    start_step, state, snapshot_weights, watched = 0, {}, None, None
    if every:
        start_step, state, snapshot_weights, watched = _resume_point(experiment.model, entry)
    curve = state.get("curve", [])
    train_data = distribute.split_by_example(experiment.dataset.train(config.batch_size, seed=seed))
    # From a fresh pipeline: the same batch whether or not the round resumed.
    callback = LotteryCallback(start_weights, masks, prune, restore=not start_step,
                               batch=lambda: experiment.first_batch(seed))
    callbacks = [callback]
    snapshot = WeightSnapshot(snapshot_at, start_step, snapshot_weights) if snapshot_at else None
    if snapshot:
        callbacks.append(snapshot)
    late = []
    watch = None
    if config.early_bird and prune is not None:
        watch = EarlyBird(callback, config.early_bird_rule(), config.early_bird_distance,
                          config.eval_every, experiment.iterations, start_step,
                          state.get("early_bird"), watched, earliest=snapshot_at)
        late.append(watch)
    if every:
        late.append(callbacks_lib.RoundCheckpoint(
            entry.checkpoint_dir, every, lambda step: _save_state(entry, step, curve, snapshot, watch),
            experiment.iterations, start_step))
    if start_step:
        train_data = train_data.skip(start_step)
    optimizers.hold_rate(experiment.model.optimizer, held_rate_step)
    try:
        curve, wall = training.train_round(
            experiment.model,
            train_data,
            experiment.evaluate,
            experiment.iterations,
            config.eval_every,
            callbacks,
            verbose=config.verbose,
            start_step=start_step,
            curve=curve,
            late_callbacks=late,
        )
    except KeyboardInterrupt:
        step = int(experiment.model.optimizer.iterations.numpy()) if callback.began else start_step
        raise errors.Interrupted(f"iteration {step}") from None
    metrics = {
        "iterations": experiment.iterations,
        "train_iterations": curve[-1]["iteration"],
        **remaining(masks),
        **training.summarize_curve(curve),
        "wall_time_s": wall,
        "curve": curve,
    }
    if watch is not None:
        metrics["early_bird"] = watch.record()
    return RoundResult(
        metrics, experiment.current_weights(), callback.next_masks,
        snapshot.weights if snapshot else None,
    )


def _save_state(entry, step, curve, snapshot, watch=None):
    """What a mid-round checkpoint needs beside Keras's variables (the state file last)."""
    if snapshot is not None and snapshot.weights is not None and not is_recorded(entry.checkpoint_snapshot_path):
        write_arrays(entry.checkpoint_snapshot_path, snapshot.weights)
    state = {"step": step, "curve": curve}
    if watch is not None:  # Early-Bird: the distances so far and the masks they continue from.
        state["early_bird"] = watch.distances
        if watch.previous is not None:
            write_arrays(entry.checkpoint_masks_path(step), watch.previous)
    write_json(entry.checkpoint_state_path(step), state)


def _resume_point(model, entry):
    """(step, state, rewind snapshot, Early-Bird masks) of the newest usable checkpoint,
    or a fresh start; state holds the learning curve (and Early-Bird distances) so far."""
    step = callbacks_lib.latest_checkpoint_step(entry.checkpoint_dir)
    if not step or not is_recorded(entry.checkpoint_state_path(step)):
        return 0, {}, None, None
    state = read_json(entry.checkpoint_state_path(step))
    snapshot_path = entry.checkpoint_snapshot_path
    snapshot = read_arrays(snapshot_path) if is_recorded(snapshot_path) else None
    masks_path = entry.checkpoint_masks_path(step)
    watched = read_arrays(masks_path) if is_recorded(masks_path) else None
    callbacks_lib.restore_checkpoint(model, entry.checkpoint_path(step))
    return step, state, snapshot, watched


def dense_masks(experiment):
    return {layer.name: np.ones(layer.mask.shape, np.float32) for layer in experiment.layers}


def with_own(config, model=None, data=None, recorded=False):
    """`config` naming the user's own model and data handed over from Python.

    Args:
      model: a model function, a built tf_keras model (its weights are θ0),
        or an import path; None keeps `config.model`.
      data: a dataset function, a `lottery_tf.Data`, or an import path; None
        keeps `config.dataset`.
      recorded: `config` is an existing run's: the objects must be the ones
        it recorded (see `sources`).
    """
    if isinstance(model, keras.Model):
        model = own_models.from_built(model, config.seed)
    names = {"model": model, "dataset": data}
    changes = {k: sources.name_for(v, k) for k, v in names.items() if v is not None}
    for key, name in changes.items():
        if recorded and name != getattr(config, key):
            raise errors.LotteryError(
                f"the run was made with --{key}={getattr(config, key)}, not {name}: hand over "
                "the same object (or function) it was made with")
    return dataclasses.replace(config, **changes)


def run(config, progress=print, dataset=None, model=None, data=None):
    """Runs (or resumes) the lottery experiment `config` describes.

    Args:
      config: a `Config`.
      progress: called with one line of text per round.
      dataset: a `data.Dataset` to use instead of loading `config.dataset`.
      model, data: your own model and data instead of `config.model` and
        `config.dataset` (see `with_own`; docs/OWN_MODEL.md).

    Returns:
      The metrics dict of every round, in order.

    Raises:
      errors.LotteryError: bad configuration, data or run directory; raised
        before anything is written.
    """
    config = with_own(config, model, data)
    check(config)
    run_dir = RunDir.for_config(config)
    chief = distribute.is_chief(config.distribution_strategy)
    with damage_explained(run_dir), distribute.lost_workers_explained():
        run_dir.check(config)
        if chief and run_dir.is_run():
            run_dir.verify_complete_rounds()
        experiment = setup(config, dataset)
        if not chief:
            return _follow_chief(experiment, run_dir, progress)
        try:
            run_dir.create(config, experiment.dataset_info())
            distribute.agree(experiment.model.distribute_strategy)  # Other workers may copy it now.
            _check_same_start(experiment, run_dir)
            with writing_errors_explained(run_dir.path):
                results = _rounds(experiment, run_dir, progress)
            distribute.agree(experiment.model.distribute_strategy)  # Others end with it.
            return results
        finally:
            run_dir.unlock()


def _follow_chief(experiment, run_dir, progress):
    """The rounds on a worker that is not the chief (multi_worker_mirrored).

    It trains in step with the chief and computes what the chief computes, but
    writes nothing to the run directory: it works in a private copy of it
    (TensorFlow's convention: only the chief writes, the others write to
    temporary directories), removed when it ends.
    """
    distribute.agree(experiment.model.distribute_strategy)  # The chief has checked and locked it.
    scratch = RunDir(tempfile.mkdtemp(prefix="lottery-tf-worker-"))
    try:
        run_dir.copy_state(scratch.path)
        _check_same_start(experiment, scratch, run_dir.path)
        scratch.create(experiment.config, experiment.dataset_info())
        results = _rounds(experiment, scratch, progress)
        distribute.agree(experiment.model.distribute_strategy)
        return results
    finally:
        scratch.unlock()
        shutil.rmtree(scratch.path, ignore_errors=True)


def _check_same_start(experiment, run_dir, path=None):
    """Refuses to go on unless every worker resumes from the same point (and
    the chief writes nothing until the others have copied what they read)."""
    complete = run_dir.complete_rounds()
    first = next(r for r in range(len(complete) + 1) if r not in complete)
    step = callbacks_lib.latest_checkpoint_step(run_dir.checkpoint_dir(first))
    if not distribute.agree(experiment.model.distribute_strategy, [len(complete), first, step]):
        raise errors.LotteryError(
            f"the workers see different run directories at {path or run_dir.path} (this one: "
            f"{len(complete)} complete rounds, round {first} at iteration {step}): a resumed run "
            "needs --output_dir on a filesystem every worker reads")


def _rounds(experiment, run_dir, progress):
    config = experiment.config
    theta0 = _theta0(run_dir, experiment)
    results = []
    for r in range(config.rounds):
        saved = run_dir.round_complete(r)
        before = results[-1] if results else None
        if saved:
            # As a fresh round returns them: recorded fields only (older rounds get theirs computed).
            metrics = run_dir.read_metrics(r)
            if not all(key in metrics for key in cost.FIELDS):
                metrics.update(cost.fields(metrics, before))
        else:
            try:
                metrics = _main_round(experiment, run_dir, r, theta0, before, progress)
            except training.Diverged as e:
                raise errors.LotteryError(
                    f"round {r} diverged: {e}; rounds before it are intact. Change the "
                    "hyperparameters (e.g. --learning_rate) and rerun with "
                    "--allow_changed_hyperparameters"
                ) from None
            except errors.Interrupted as e:
                raise errors.Interrupted(f"round {r}, {e.where}") from None
            tensorboard.write_round(run_dir, metrics)
        results.append(metrics)
        if not saved:
            run_dir.write_summary([summary_row(m) for m in results])
        progress(format_round(metrics, config.rounds) + (" [saved]" if saved else ""))
    # Rewritten only when it differs (a finished run's rerun writes nothing).
    run_dir.write_summary([summary_row(m) for m in results])
    if config.early_bird:
        _final_ticket(experiment, run_dir, progress)
    return results


def _final_ticket(experiment, run_dir, progress):
    """Early-Bird's `final` step: the run's last mask trained for the full round."""
    from lottery_tf.lottery.branches import final  # Branches build on this module.

    final.train(experiment, run_dir, progress)


@contextlib.contextmanager
def damage_explained(directory):
    """A damaged file as one line that says what to do about it."""
    try:
        yield
    except storage.DamagedFileError as e:
        raise errors.LotteryError(f"{e}: {directory.recovery_advice(e.path)}") from None


@contextlib.contextmanager
def writing_errors_explained(path):
    """A failed write (disk full, I/O error) as one clear line.

    Every file is written whole or not at all, so what was complete before
    the failure still is, and a rerun resumes from there.
    """
    try:
        yield
    except OSError as e:
        raise errors.LotteryError(
            f"could not write {e.filename or path}: {e.strerror or e}; everything completed "
            "before is intact: fix the cause and rerun the same command to resume"
        ) from None


def _theta0(run_dir, experiment):
    """θ0 from the run directory, or the fresh model's weights saved there."""
    if is_recorded(run_dir.theta0_path):
        return read_arrays(run_dir.theta0_path)
    theta0 = experiment.current_weights()
    write_arrays(run_dir.theta0_path, theta0)
    return theta0


def _main_round(experiment, run_dir, r, theta0, before=None, progress=print):
    """Trains round r; `before` is round r - 1's metrics (its cost is carried on)."""
    config = experiment.config
    if r == 0:
        masks = dense_masks(experiment)
        run_dir.round(0).write_masks(masks)
    elif is_recorded(run_dir.mask_path(r)):
        masks = run_dir.load_masks(r)
    else:
        masks = _recompute_masks(experiment, run_dir, r, theta0)
    pruner = _round_pruner(experiment, r)
    result = train(
        experiment, masks, _start_point(experiment, run_dir, r, theta0), round_seed(config.seed, r),
        pruner,
        snapshot_at=config.rewind_iteration if r == 0 else 0,
        entry=run_dir.round(r),
        held_rate_step=reset.held_rate_step(config, r, experiment.iterations),
    )
    metrics = {"round": r, **result.metrics}
    metrics.update(cost.fields(metrics, before))
    if result.snapshot is not None:
        write_arrays(run_dir.rewind_path, result.snapshot)
    run_dir.save_round(r, result.weights, metrics, next_masks=result.next_masks)
    if pruner is not None:
        # Said once: in the first round whose pruning leaves a layer as it was.
        before = run_dir.read_metrics(r - 1)["remaining_pct_by_layer"] if r else {}
        now = metrics["remaining_pct_by_layer"]
        stopped = [name for name in masks if pruner.fractions[name] > 0
                   and np.count_nonzero(result.next_masks[name]) == np.count_nonzero(masks[name])
                   and before.get(name, 101.0) > now[name]]
        if stopped:
            progress(f"round {r}: pruning has stopped for {', '.join(stopped)}: the rate times "
                     "their surviving weights rounds to 0 weights (round-half-up); later rounds "
                     "train the same mask there")
    return metrics


def _recompute_masks(experiment, run_dir, r, theta0):
    """Round r's masks, recomputed from round r - 1 (they were lost or deleted).

    Pruning is a pure function of round r - 1's trained weights, masks and
    start point, so the masks are the ones round r - 1 chose.
    """
    previous = r - 1
    if not run_dir.round_complete(previous) or not is_recorded(run_dir.weights_path(previous)):
        raise errors.LotteryError(
            f"run directory {run_dir.path} is damaged: {run_dir.mask_path(r)} is missing and round "
            f"{previous} cannot recompute it (its weights are missing): delete "
            f"{run_dir.round_dir(previous)} and rerun the same command"
        )
    pruner = _round_pruner(experiment, previous)
    if pruner is None:
        raise errors.LotteryError(f"round {previous} of {run_dir.path} prunes nothing; no round {r}")
    trained = run_dir.read_weights(previous)
    start = _start_point(experiment, run_dir, previous, theta0)
    masks = run_dir.load_masks(previous)
    next_masks = pruner(PruningContext(
        masks=masks,
        trained={name: trained[f"{name}/kernel"] for name in masks},
        init={name: start[f"{name}/kernel"] for name in masks},
        model=experiment.model,
        batch=lambda: experiment.first_batch(round_seed(experiment.config.seed, previous)),
        loss=as_loss(experiment.model.loss),
        start=start,
    ))
    run_dir.round(r).write_masks(next_masks)
    return next_masks


def _start_point(experiment, run_dir, r, theta0):
    """Where round r starts: θ0, the rewind point, or round r - 1's weights (`reset`)."""
    return reset.start_point(experiment.config, run_dir, r, theta0)


def _round_pruner(experiment, r):
    """What prunes at the end of round r: IMP every round, or one-shot once."""
    if experiment.config.one_shot_sparsity:
        return experiment.pruner(experiment.config.one_shot_sparsity) if r == 0 else None
    return experiment.pruner()


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


def summary_row(metrics, key="round"):
    row = {
        key: metrics[key],
        "remaining_pct": f"{metrics['remaining_pct']:.4f}",
        "early_stop_iteration": metrics["early_stop_iteration"],
        "early_stop_val_loss": f"{metrics['early_stop_val_loss']:.6f}",
        "early_stop_test_accuracy": f"{metrics['early_stop_test_accuracy']:.6f}",
        "final_test_accuracy": f"{metrics['final_test_accuracy']:.6f}",
        "wall_time_s": f"{metrics['wall_time_s']:.2f}",
    }
    for key in cost.FIELDS:
        if key in metrics:
            row[key] = metrics[key]
    for name, pct in metrics["remaining_pct_by_layer"].items():
        row[f"remaining_pct/{name}"] = f"{pct:.4f}"
    return row


def format_round(metrics, rounds, label=None):
    label = label or f"round {metrics['round']} ({metrics['round'] + 1}/{rounds})"
    stopped = (metrics.get("early_bird") or {}).get("stopped_at")
    return (
        f"{label} | "
        f"{metrics['remaining_pct']:.2f}% weights remaining | "
        f"early stop: iteration {metrics['early_stop_iteration']}, "
        f"test acc {100 * metrics['early_stop_test_accuracy']:.2f}% | "
        f"final test acc {100 * metrics['final_test_accuracy']:.2f}% | "
        + (f"Early-Bird mask at iteration {stopped} | " if stopped else "")
        + f"{metrics['wall_time_s']:.1f} s"
    )
