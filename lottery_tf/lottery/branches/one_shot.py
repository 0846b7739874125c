"""one_shot: masks pruned in one step to a target sparsity from round 0's
trained weights, from the same start weights: one-shot vs iterative at equal
sparsity (paper Figure 4)."""

from lottery_tf import errors
from lottery_tf.lottery import run_dir, runner
from lottery_tf.lottery.branches import BRANCHES
from lottery_tf.lottery.branches.base import Branch
from lottery_tf.pruning import PruningContext


@BRANCHES.register("one_shot")
class OneShot(Branch):
    label = "one-shot"
    level_key = "target_sparsity"
    takes_targets = True

    def name(self):
        return "one_shot"

    def keys(self):
        if not self.targets:
            raise errors.LotteryError("--branch=one_shot needs --targets (sparsities in (0, 1))")
        bad = [t for t in self.targets if not 0.0 < t < 1.0]
        if bad:
            raise errors.LotteryError(f"--targets {bad[0]} is outside (0, 1)")
        if not self.main.round_complete(0):
            raise errors.LotteryError(f"one_shot needs round 0 of {self.main.path} to be complete")
        return sorted(set(float(t) for t in self.targets))

    def entry_name(self, key):
        return run_dir.sparsity_entry_name(key)

    @classmethod
    def parent_round(cls, key):
        return 0  # Pruned from round 0's trained weights.

    def step(self, key):
        return int(round(key * 10000))

    def masks(self, experiment, key):
        trained = self.main.read_weights(0)
        dense = runner.dense_masks(experiment)
        start = self.start_weights(experiment, None)
        return experiment.pruner(one_shot_target=key)(PruningContext(
            masks=dense,
            trained={name: trained[f"{name}/kernel"] for name in dense},
            init={name: start[f"{name}/kernel"] for name in dense},
            model=experiment.model,
        ))

    def data_seed(self, key):
        return runner.round_seed(self.config.seed, 1)
