"""The Keras callback that turns `model.fit` calls into IMP rounds."""

import os
import re

import tensorflow as tf
import tf_keras as keras

from lottery_tf import faults
from lottery_tf.nn.layers import masked_layers
from lottery_tf.pruning import PruningContext
from lottery_tf.train.evaluate import as_loss


def weight_key(variable):
    """Stable name of a model weight: 'fc1/kernel' (layer names are fixed)."""
    return variable.name.split(":")[0]


def model_weights(model):
    """Every weight of the model except the masks, by `weight_key`."""
    masks = {id(layer.mask) for layer in masked_layers(model)}
    return {weight_key(v): v for v in model.weights if id(v) not in masks}


class LotteryCallback(keras.callbacks.Callback):
    """Starts a round from θ0 under its masks and ends it by pruning.

    On train begin: installs `masks`, resets every weight to `start_weights`
    (θ0, or the rewind point; kernels times the mask) and zeroes the optimizer
    state, iteration count included, so each round trains exactly like a
    fresh network of that sparsity. On train end: asks `prune` for the next
    round's masks from a `PruningContext` (masks, trained and start kernels,
    the model), and leaves them in `next_masks` (None when `prune` is None).
    All assignments are device-side; nothing here retraces the model's
    compiled functions.

    Args:
      start_weights: weight key -> value, for every entry of `model_weights`.
      masks: masked layer name -> mask for this round.
      prune: callable `PruningContext` -> masks, or None for no pruning.
      restore: False for a round resumed from a mid-round checkpoint (weights
        and optimizer state come from the checkpoint).
      batch: None, or a callable returning one training batch, for criteria
        that read data.
    """

    def __init__(self, start_weights, masks, prune=None, restore=True, batch=None):
        super().__init__()
        self._start = start_weights
        self._masks = masks
        self._prune = prune
        self._restore = restore
        self._batch = batch
        self.next_masks = None
        self.began = False

    def on_train_begin(self, logs=None):
        self.began = True
        layers = {layer.name: layer for layer in masked_layers(self.model)}
        masked_kernels = {}
        for name, layer in layers.items():
            layer.assign_mask(self._masks[name])
            masked_kernels[weight_key(layer.kernel)] = layer.mask
        if not self._restore:
            return
        for key, variable in model_weights(self.model).items():
            value = tf.constant(self._start[key], dtype=variable.dtype)
            if key in masked_kernels:
                value = value * masked_kernels[key]
            variable.assign(value)
        for variable in self.model.optimizer.variables:
            variable.assign(tf.zeros(variable.shape, variable.dtype))

    @property
    def masks(self):
        """The masks the round trains with."""
        return self._masks

    def choose(self):
        """The masks `prune` chooses from the weights as they are now."""
        layers = masked_layers(self.model)
        return self._prune(PruningContext(
            masks=self._masks,
            trained={layer.name: layer.kernel.numpy() for layer in layers},
            init={layer.name: self._start[weight_key(layer.kernel)] for layer in layers},
            model=self.model,
            batch=self._batch,
            loss=as_loss(self.model.loss),
            start=self._start,
        ))

    def on_train_end(self, logs=None):
        if self._prune is None:
            return
        if self.next_masks is None:  # Else chosen already from these weights (Early-Bird).
            self.next_masks = self.choose()
        faults.point("after_prune")


class WeightSnapshot(keras.callbacks.Callback):
    """Copies every weight (masks aside) after `iteration` training steps.

    The rewind point of late resetting (Frankle et al. 2019). Needs the
    steps per execution to land on `iteration` (see
    `training.effective_steps_per_execution`).
    """

    def __init__(self, iteration, start_step=0, weights=None):
        super().__init__()
        self._iteration = iteration
        self._start = start_step
        self.weights = weights

    def on_train_batch_end(self, batch, logs=None):
        if self.weights is None and self._start + batch + 1 == self._iteration:
            self.weights = {key: v.numpy() for key, v in model_weights(self.model).items()}


class RoundCheckpoint(keras.callbacks.Callback):
    """Checkpoints a round every `every` iterations, so a crash loses at most that.

    A `tf.train.CheckpointManager` (keeping 2) saves the model (weights and
    masks) and the optimizer (state and iteration count); `save_state(step)`
    saves what Keras does not hold: the learning curve so far and the rewind
    snapshot. The input pipeline's position is the step itself: the data
    order is a pure function of the round's seed, so a resumed round skips
    that many batches.
    """

    def __init__(self, directory, every, save_state, last_step, start_step=0):
        super().__init__()
        self._directory = directory
        self._every = every
        self._save_state = save_state
        self._last = last_step
        self._start = start_step
        self._manager = None

    def manager(self):
        if self._manager is None:
            checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.model.optimizer)
            self._manager = tf.train.CheckpointManager(checkpoint, self._directory, max_to_keep=2)
        return self._manager

    def on_train_batch_end(self, batch, logs=None):
        step = self._start + batch + 1
        # At the last step the round's own outputs follow at once; a checkpoint
        # there would only leave nothing to resume into.
        if step % self._every or step >= self._last:
            return
        if self.model.stop_training:
            # A round stopped here (Early-Bird) ends with its own outputs; resumed
            # from a checkpoint at this step, it would train on past its stop.
            return
        self.manager().save(checkpoint_number=step)
        self._save_state(step)
        faults.point("mid_fit")


def latest_checkpoint_step(directory):
    """The step of the newest checkpoint in `directory`, or 0."""
    path = tf.train.latest_checkpoint(directory) if os.path.isdir(directory) else None
    match = re.search(r"-(\d+)$", path or "")
    return int(match.group(1)) if match else 0


def restore_checkpoint(model, path):
    """Restores model and optimizer from the checkpoint at `path` (a prefix)."""
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    checkpoint.restore(path)
