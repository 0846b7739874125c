"""random_pruning: a random mask with the round's per-layer counts, from the
run's start weights (θ0, or the rewind point)."""

import numpy as np

from lottery_tf.lottery.branches import BRANCHES
from lottery_tf.lottery.branches.base import Branch


def random_masks_like(masks, seed):
    """Uniformly random masks with exactly the per-layer counts of `masks`."""
    rng = np.random.default_rng(seed)
    result = {}
    for name, mask in masks.items():
        flat = np.zeros(mask.size, mask.dtype)
        flat[rng.choice(mask.size, int(np.count_nonzero(mask)), replace=False)] = 1
        result[name] = flat.reshape(mask.shape)
    return result


@BRANCHES.register("random_pruning")
class RandomPruning(Branch):
    label = "random pruning"

    @classmethod
    def parent_round(cls, key):
        return None  # Only the round's counts, which the schedule sets without training.

    def masks(self, experiment, key):
        return random_masks_like(super().masks(experiment, key), [int(self.seed), int(key)])
