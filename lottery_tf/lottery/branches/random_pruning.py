"""random_pruning: a random mask with the round's per-layer counts (of blocks, on a
--block run), from the run's start weights (θ0, or the rewind point)."""

import numpy as np

from lottery_tf.lottery.branches import BRANCHES
from lottery_tf.lottery.branches.base import Branch
from lottery_tf.pruning import blocks


def random_masks_like(masks, seed, block="none"):
    """Uniformly random masks with exactly the per-layer counts of `masks`.

    With `block` other than "none" (a --block run), whole blocks are placed at
    random, as many per layer as `masks` keeps, so the control has the
    ticket's structure (a short last block may trade places with a full one).
    """
    size = blocks.block_size(block)
    if size > 1:
        _, kept, _ = blocks.pool({name: np.zeros(m.shape) for name, m in masks.items()}, masks, size)
        return blocks.expand(random_masks_like(kept, seed),
                             {name: np.ones_like(m) for name, m in masks.items()}, size)
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
        return random_masks_like(super().masks(experiment, key), [int(self.seed), int(key)],
                                 self.config.block)
