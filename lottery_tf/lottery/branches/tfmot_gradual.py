"""tfmot_gradual: the TensorFlow user's baseline, gradual magnitude pruning with tfmot.

Each entry trains the dense θ0 network once, for as many iterations as one
round, under `tfmot.sparsity.keras.prune_low_magnitude` with a
`PolynomialDecay` schedule (Zhu & Gupta 2017; tfmot's `UpdatePruningStep`
callback), and records the stripped network's masks and weights like any
other entry.

Per-layer targets. tfmot gives each wrapped layer its own schedule and prunes
each layer by its own magnitudes; the paper prunes each group at its own rate.
So every masked layer gets its own `PolynomialDecay` whose final sparsity is
that layer's sparsity in main-line round r's mask (fc layers 1 - 0.8^r, the
output 1 - 0.9^r in the paper's LeNet setting), all with the same steps: the
arm and the ticket of round r then have the same per-layer sparsities, and
the arm differs in *how* it got there. Layers at sparsity 0 are not wrapped.

Schedule (fixed here, recorded in each entry's metrics): initial sparsity 0,
power 3 (tfmot's default), pruning from iteration 0 to the middle of the
round (`end_step`, a multiple of `frequency`: 100 iterations, or a tenth of
the pruning span when that is shorter), then half a round at the final mask.
Early stopping looks only at evaluations from `end_step` on, when the network
has its target sparsity; the learning curve keeps every evaluation.

A --block run's arm prunes in blocks of the same shape, chosen by tfmot's own
block sparsity: `block_size=(B, 1)` on a Keras `[in, out]` kernel is B consecutive
inputs of one unit, TFLite's 1xB, ranked by their mean |w| (`AVG`). tfmot
takes blocks in 2-D kernels only, so a block run with convolutions is refused.
"""

import numpy as np
import tf_keras as keras
from tensorflow_model_optimization.sparsity import keras as tfmot_sparsity

from lottery_tf import errors
from lottery_tf.lottery import runner
from lottery_tf.lottery.branches import BRANCHES
from lottery_tf.lottery.branches.base import Branch
from lottery_tf.lottery.storage import read_arrays
from lottery_tf.pruning import blocks
from lottery_tf.train.evaluate import Evaluator
from lottery_tf.train import fit as training
from lottery_tf.train import optimizers
from lottery_tf.train.callbacks import model_weights


def polynomial_steps(iterations):
    """(begin_step, end_step, frequency) of the schedule within a round of `iterations`."""
    span = max(1, iterations // 2)
    frequency = 100 if span >= 1000 else max(1, span // 10)
    return 0, frequency * (span // frequency), frequency


def wrap(model, sparsities, begin, end, frequency, block_size=1):
    """`model` with each layer of nonzero `sparsities[name]` under its own schedule,
    pruned in blocks of `block_size` consecutive inputs of a unit when above 1."""
    in_blocks = {"block_size": (block_size, 1), "block_pooling_type": "AVG"} if block_size > 1 else {}

    def clone(layer):
        target = sparsities.get(layer.name, 0.0)
        if not target:
            return layer
        return tfmot_sparsity.prune_low_magnitude(layer, pruning_schedule=tfmot_sparsity.PolynomialDecay(
            initial_sparsity=0.0, final_sparsity=float(target), begin_step=begin, end_step=end,
            frequency=frequency), **in_blocks)

    return keras.models.clone_model(model, clone_function=clone)


@BRANCHES.register("tfmot_gradual")
class TfmotGradual(Branch):
    label = "tfmot gradual pruning"

    def name(self):
        return "tfmot_gradual"

    @classmethod
    def series(cls, info, run_config):
        # Its targets are the round's per-layer sparsities, whatever criterion chose them;
        # only the run's --block changes what it prunes.
        block = run_config.get("block", "none")
        return f"{cls.kind}:{block} blocks" if block != "none" else cls.kind

    def start_weights(self, experiment, branch_dir):
        return read_arrays(self.main.theta0_path)

    @classmethod
    def parent_round(cls, key):
        return None  # The dense θ0 network, pruned as it trains: no round before it.

    def train_entry(self, experiment, entry, key, start):
        config = experiment.config
        ticket = self.main.load_masks(key)
        sparsities = {name: float(1.0 - np.count_nonzero(m) / m.size) for name, m in ticket.items()}
        begin, end, frequency = polynomial_steps(experiment.iterations)
        model = experiment.model
        nested = sorted({layer.name for layer in experiment.layers} - {layer.name for layer in model.layers})
        if nested:
            # clone_model hands a nested model to the clone function whole: its layers would stay dense.
            raise errors.LotteryError(
                f"--branch=tfmot_gradual prunes top-level layers only; {', '.join(nested)} "
                "sit inside a nested model: flatten the model (one functional model) to use this arm")
        block_size = blocks.block_size(config.block)
        # tfmot squeezes a kernel before pooling it in blocks: a length-1 axis breaks it too.
        not_2d = [layer.name for layer in experiment.layers
                  if sparsities.get(layer.name) and (len(layer.kernel.shape) != 2
                                                      or 1 in layer.kernel.shape)]
        if block_size > 1 and not_2d:
            raise errors.LotteryError(
                f"--branch=tfmot_gradual cannot prune this --block={config.block} run in blocks: "
                f"tfmot's block sparsity takes 2-D kernels only (no axis of length 1), and "
                f"{', '.join(not_2d)} are not; the arm runs on --block=none runs of this model")
        for layer in experiment.layers:
            layer.mask.assign(np.ones(layer.mask.shape, layer.mask.dtype.as_numpy_dtype))
        for weight_key, variable in model_weights(model).items():
            variable.assign(start[weight_key])
        steps = training.effective_steps_per_execution(
            config.steps_per_execution, config.eval_every, experiment.iterations)
        with model.distribute_strategy.scope():  # tfmot's own variables are made by `wrap`
            pruned = wrap(model, sparsities, begin, end, frequency, block_size)
            training.compile_model(pruned, optimizers.for_config(config), False, steps,
                                   getattr(experiment.dataset, "loss", None))
        curve, wall = training.train_round(
            pruned, experiment.dataset.train(config.batch_size, seed=self.data_seed(key)),
            Evaluator(pruned, {"val": experiment.dataset.validation, "test": experiment.dataset.test}),
            experiment.iterations,
            config.eval_every, [tfmot_sparsity.UpdatePruningStep()], verbose=config.verbose)
        masks = {name: np.ones_like(m) for name, m in ticket.items()}
        for layer in pruned.layers:
            if hasattr(layer, "pruning_vars"):  # a prune_low_magnitude wrapper
                (_, mask, _), = layer.pruning_vars
                masks[layer.layer.name] = mask.numpy().astype(ticket[layer.layer.name].dtype)
        stripped = tfmot_sparsity.strip_pruning(pruned)
        weights = {k: v.numpy() for k, v in model_weights(stripped).items()}
        for name, mask in masks.items():
            if np.any(weights[f"{name}/kernel"][mask == 0]):
                raise RuntimeError(f"tfmot left pruned weights of {name} nonzero")
        entry.write_masks(masks)
        metrics = {
            self.level_key: key, "branch": self.kind, "iterations": experiment.iterations,
            **runner.remaining(masks),
            **training.summarize_curve([p for p in curve if p["iteration"] >= end]),
            "pruning_schedule": {"kind": "PolynomialDecay", "initial_sparsity": 0.0, "power": 3,
                                 "block": config.block,
                                 "begin_step": begin, "end_step": end, "frequency": frequency,
                                 "final_sparsity_by_layer": sparsities},
            "wall_time_s": wall, "curve": curve,
        }
        metrics = self.with_cost(key, metrics)
        entry.save(weights, metrics)
        return metrics
