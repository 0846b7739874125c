"""at_init: pruning at initialization, with the ablations of Frankle et al. 2021.

Each entry prunes θ0 in one step (SynFlow: its own iterations) with an
at-initialization criterion (--branch_criterion: snip, grasp, synflow,
magnitude_at_init, random) to the sparsity of main-line round r, and trains
once from θ0 with the main line's data order of that round. Under the
layerwise scope each layer keeps exactly round r's count; under the global
scope (--branch_scope=global, the way SNIP, GraSP and SynFlow were published)
the criterion's scores decide the layers' shares, with round r's overall count
and the run's --global_exclude layers left dense.

Ablations (--ablation; Frankle et al. 2021, "Pruning Neural Networks at
Initialization: Why Are We Missing the Mark?", Section 5):
  shuffle  each layer's mask permuted at random (same per-layer counts)
  reinit   the same masks, trained from a fresh init (random_reinit's seed)
  invert   the highest scores pruned instead of the lowest

The branch reads the main line's θ0 and round masks and never writes there.
"""

import numpy as np

from lottery_tf import errors
from lottery_tf.lottery import runner
from lottery_tf.lottery.branches import BRANCHES
from lottery_tf.lottery.branches.base import Branch
from lottery_tf.lottery.branches.random_pruning import random_masks_like
from lottery_tf.lottery.branches.random_reinit import fresh_init, reinit_seed
from lottery_tf.lottery.storage import read_arrays
from lottery_tf.pruning import Pruner, PruningContext, criteria, schedule
from lottery_tf.pruning.criteria.base import Criterion
from lottery_tf.pruning.selection import SCOPES
from lottery_tf.train.evaluate import as_loss

ABLATIONS = ("none", "shuffle", "reinit", "invert")


class Inverted(Criterion):
    """Another criterion's scores, negated: its highest scores go first."""

    def __init__(self, criterion):
        super().__init__(criterion.config)
        self.inner = criterion
        self.reads = criterion.reads
        self.steps = criterion.steps

    def scores(self, context):
        return {name: -s for name, s in self.inner.scores(context).items()}


@BRANCHES.register("at_init")
class AtInit(Branch):
    label = "pruned at init"
    options = {"criterion": "--branch_criterion", "ablation": "--ablation", "scope": "--branch_scope"}

    @property
    def criterion(self):
        return self.chosen.get("criterion", "")

    @property
    def ablation(self):
        return self.chosen.get("ablation") or "none"

    @property
    def scope(self):
        return self.chosen.get("scope") or self.config.pruning_scope

    def name(self):
        ablation = "" if self.ablation == "none" else f"_{self.ablation}"
        return f"at_init_{self.criterion}_{self.scope}{ablation}_seed{self.seed}"

    def keys(self):
        names = criteria.at_init_names()
        if self.criterion not in names:
            what = (f"--branch_criterion={self.criterion} reads the trained weights"
                    if self.criterion in criteria.CRITERIA.names() else
                    f"--branch_criterion={self.criterion or '(none)'} is not an at-init criterion")
            raise errors.LotteryError(f"{what}; --branch=at_init takes one of {', '.join(names)}")
        if self.ablation not in ABLATIONS:
            raise errors.LotteryError(
                f"--ablation={self.ablation} is unknown; known: {', '.join(ABLATIONS)}")
        SCOPES.get(self.scope)
        return super().keys()

    def info(self):
        return {**super().info(), "criterion": self.criterion, "ablation": self.ablation,
                "scope": self.scope, "criterion_steps": criteria.get(self.criterion, self.config).steps}

    @classmethod
    def series(cls, info, run_config):
        detail = f"{info['criterion']}, {info['scope']}"
        if info["ablation"] != "none":
            detail += f", {info['ablation']}"
        return f"{cls.kind}:{detail}"

    @classmethod
    def parent_round(cls, key):
        return None  # Pruned at θ0, before any training.

    def model_seed(self):
        return reinit_seed(self.config.seed, self.seed) if self.ablation == "reinit" else None

    def start_weights(self, experiment, branch_dir):
        if self.ablation == "reinit":
            return fresh_init(experiment, branch_dir)
        return read_arrays(self.main.theta0_path)

    def masks(self, experiment, key):
        theta0 = read_arrays(self.main.theta0_path)
        dense = runner.dense_masks(experiment)
        criterion = criteria.get(self.criterion, self.config)
        if self.ablation == "invert":
            criterion = Inverted(criterion)
        pruner = Pruner(criterion, self.scope, self._fractions(experiment, key), self.config)
        masks = pruner(PruningContext(
            masks=dense,
            init={name: theta0[f"{name}/kernel"] for name in dense},
            start=theta0,
            model=experiment.model,
            batch=lambda: experiment.first_batch(runner.round_seed(self.config.seed, 0)),
            loss=as_loss(experiment.model.loss),
            seed=[int(self.seed), int(key)],
        ))
        if self.ablation == "shuffle":
            masks = random_masks_like(masks, [int(self.seed), int(key), 1], self.config.block)
        return masks

    def _fractions(self, experiment, key):
        """What each layer loses from dense: round `key`'s per-layer or overall count."""
        ticket = self.main.load_masks(key)
        if self.scope != "global":
            return {name: 1.0 - np.count_nonzero(m) / m.size for name, m in ticket.items()}
        alive = sum(int(np.count_nonzero(m)) for m in ticket.values())
        total = sum(m.size for m in ticket.values())
        return schedule.one_shot_global_fractions(
            experiment.groups, experiment.sizes, self.config.excluded_from_global(), 1.0 - alive / total)
