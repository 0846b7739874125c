"""random_reinit: the round's mask, a fresh random init from the same initializer
(another seed): is the init part of the ticket?"""

from lottery_tf.lottery.branches import BRANCHES
from lottery_tf.lottery.branches.base import Branch
from lottery_tf.lottery.storage import is_recorded, read_arrays, write_arrays


def reinit_seed(run_seed, branch_seed):
    """The initializer seed of a random-reinit branch: never a trial's seed."""
    return 1_000_003 * int(branch_seed) + int(run_seed)


@BRANCHES.register("random_reinit")
class RandomReinit(Branch):
    label = "random reinit"

    def info(self):
        return {**super().info(), "reinit_seed": self.model_seed()}

    def model_seed(self):
        return reinit_seed(self.config.seed, self.seed)

    def start_weights(self, experiment, branch_dir):
        return fresh_init(experiment, branch_dir)


def fresh_init(experiment, branch_dir):
    """The branch's own init: the freshly built model's weights, saved in the branch.

    Saved once, so every entry (and every rerun) starts from the same weights.
    """
    if not is_recorded(branch_dir.theta0_path):
        write_arrays(branch_dir.theta0_path, experiment.current_weights())
    return read_arrays(branch_dir.theta0_path)
