"""One round of training: compiled `model.fit` with periodic evaluation."""

import math
import time

import numpy as np
import tf_keras as keras


def make_optimizer(name, learning_rate, momentum=0.0):
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=momentum)
    raise ValueError(f"unknown optimizer {name!r}")


def effective_steps_per_execution(requested, eval_every, iterations):
    """Largest count <= requested that lands exactly on every evaluation.

    Callbacks only run between executions, so an execution must never step
    over an evaluation point (multiples of eval_every, and the last step).
    """
    return math.gcd(requested, eval_every, iterations)


def jit_supported(strategy):
    """Whether Keras's `jit_compile` can run under `strategy`.

    XLA compiles the whole step into one cluster, which cannot reach variables
    mirrored on other devices ("Trying to access resource ... located in
    device CPU:1 from device CPU:0"); TPUs compile with XLA anyway.
    """
    return strategy.num_replicas_in_sync == 1


def compile_model(model, optimizer, learning_rate, momentum, jit_compile, steps_per_execution):
    """Compiles for training; call inside the distribution strategy's scope."""
    model.compile(
        optimizer=make_optimizer(optimizer, learning_rate, momentum),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )


class PeriodicEval(keras.callbacks.Callback):
    """Evaluates validation and test sets every `eval_every` iterations.

    Records a learning curve of (iteration, val loss/accuracy, test
    loss/accuracy); also adds the latest values to the progress-bar logs.
    """

    def __init__(self, validation, test, eval_every, iterations):
        super().__init__()
        self._validation = validation
        self._test = test
        self._eval_every = eval_every
        self._iterations = iterations
        self.curve = []

    def on_train_batch_end(self, batch, logs=None):
        # One epoch per round: `batch` is the index of the last step executed.
        iteration = batch + 1
        if iteration % self._eval_every and iteration != self._iterations:
            return
        val = self.model.evaluate(self._validation, verbose=0, return_dict=True)
        test = self.model.evaluate(self._test, verbose=0, return_dict=True)
        point = {
            "iteration": iteration,
            "val_loss": float(val["loss"]),
            "val_accuracy": float(val["accuracy"]),
            "test_loss": float(test["loss"]),
            "test_accuracy": float(test["accuracy"]),
        }
        self.curve.append(point)
        if logs is not None:
            logs.update({k: v for k, v in point.items() if k != "iteration"})


def train_round(model, train, validation, test, iterations, eval_every, callbacks, verbose=1):
    """Trains `iterations` steps; returns (curve, wall seconds).

    The model must be compiled. Its train/test functions are built on the
    first round and reused afterwards (same dataset structure, no retrace).
    """
    evaluator = PeriodicEval(validation, test, eval_every, iterations)
    start = time.perf_counter()
    model.fit(
        train,
        epochs=1,
        steps_per_epoch=iterations,
        callbacks=list(callbacks) + [evaluator],
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
