"""One round of training: compiled `model.fit` with periodic evaluation."""

import math
import time

import numpy as np
import tf_keras as keras

from lottery_tf import interrupts
from lottery_tf.train import compiled_loop, xla


def effective_steps_per_execution(requested, eval_every, iterations, snapshot_at=0, checkpoint_every=0):
    """Largest count <= requested that lands exactly on every evaluation.

    Callbacks only run between executions, so an execution must never step
    over an evaluation point (multiples of eval_every, and the last step), nor
    over the rewind snapshot iteration or a mid-round checkpoint.
    """
    return math.gcd(requested, eval_every, iterations, snapshot_at, checkpoint_every)


def jit_supported(strategy, model=None, deterministic=False):
    """Whether Keras's `jit_compile` can run `model` under `strategy` (see `xla.supported`)."""
    return xla.supported(strategy, model, deterministic)


def compile_model(model, optimizer, jit_compile, steps_per_execution, loss=None):
    """Compiles for training; call inside the distribution strategy's scope.

    Args:
      optimizer: a Keras optimizer (see `make_optimizer`).
      loss: a Keras loss of (integer labels, logits); None for cross-entropy.
    """
    model.compile(
        optimizer=optimizer,
        loss=loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    compiled_loop.install(model)


class Diverged(Exception):
    """The training loss became NaN or infinite."""

    def __init__(self, iteration, loss):
        super().__init__(f"loss {loss} by iteration {iteration}")
        self.iteration = iteration
        self.loss = loss


class DivergenceGuard(keras.callbacks.Callback):
    """Stops training as soon as the loss is NaN or infinite.

    Checked after each execution (every `steps_per_execution` steps), so the
    iteration reported is the first execution boundary at or after the step
    that diverged.
    """

    def __init__(self, start_step=0):
        super().__init__()
        self._start = start_step

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise Diverged(self._start + batch + 1, float(loss))


class InterruptCheck(keras.callbacks.Callback):
    """Ends training at the next step once Ctrl-C was pressed (see `interrupts`)."""

    def on_train_batch_end(self, batch, logs=None):
        if interrupts.requested():
            raise KeyboardInterrupt


class PeriodicEval(keras.callbacks.Callback):
    """Evaluates every `eval_every` iterations and at the last one.

    Records a learning curve of (iteration, val loss/accuracy, test
    loss/accuracy); also adds the latest values to the progress-bar logs.
    A round resumed from a checkpoint passes its `start_step` and the curve
    recorded so far.

    Args:
      evaluate: callable returning {val_loss, val_accuracy, test_loss,
        test_accuracy} for the model as it is (an `evaluate.Evaluator`).
    """

    def __init__(self, evaluate, eval_every, iterations, start_step=0, curve=None):
        super().__init__()
        self._evaluate = evaluate
        self._eval_every = eval_every
        self._iterations = iterations
        self._start = start_step
        # Appended to in place: a mid-round checkpoint saves this very list.
        self.curve = [] if curve is None else curve

    def on_train_batch_end(self, batch, logs=None):
        # One epoch per round: `batch` is the index of the last step executed.
        iteration = self._start + batch + 1
        if iteration % self._eval_every and iteration != self._iterations:
            return
        figures = self._evaluate()
        point = {"iteration": iteration, **{key: figures[key] for key in CURVE_KEYS}}
        self.curve.append(point)
        if logs is not None:
            logs.update({key: point[key] for key in CURVE_KEYS})


CURVE_KEYS = ("val_loss", "val_accuracy", "test_loss", "test_accuracy")


def train_round(model, train, evaluate, iterations, eval_every, callbacks, verbose=1,
                start_step=0, curve=None, late_callbacks=()):
    """Trains up to iteration `iterations`; returns (curve, wall seconds).

    The model must be compiled. Its train function is built on the first
    round and reused afterwards (same dataset structure, no retrace).
    `evaluate` gives the curve's figures (see `PeriodicEval`). A resumed round
    starts at `start_step` with the `curve` (a list, appended to in place)
    recorded so far; `train` must then already be positioned there.
    `late_callbacks` run after the divergence check and the evaluation of
    each step (mid-round checkpoints go there).

    Raises:
      Diverged: the loss became NaN or infinite.
    """
    evaluator = PeriodicEval(evaluate, eval_every, iterations, start_step, curve)
    start = time.perf_counter()
    model.fit(
        train,
        epochs=1,
        steps_per_epoch=iterations - start_step,
        callbacks=(list(callbacks) + [InterruptCheck(), DivergenceGuard(start_step), evaluator]
                   + list(late_callbacks)),
        verbose=verbose,
    )
    return evaluator.curve, time.perf_counter() - start


def summarize_curve(curve):
    """Early stopping (min validation loss; first on ties) and final metrics."""
    losses = np.array([p["val_loss"] for p in curve])
    # A diverged (NaN) evaluation can never be the early-stopping point.
    best = curve[int(np.nanargmin(losses))] if np.isfinite(losses).any() else curve[-1]
    last = curve[-1]
    return {
        "early_stop_iteration": best["iteration"],
        "early_stop_val_loss": best["val_loss"],
        "early_stop_val_accuracy": best["val_accuracy"],
        "early_stop_test_accuracy": best["test_accuracy"],
        "final_val_loss": last["val_loss"],
        "final_val_accuracy": last["val_accuracy"],
        "final_test_accuracy": last["test_accuracy"],
    }
