"""final: an Early-Bird run's ticket, its last mask trained for the full round.

Early-Bird rounds stop when their mask settles, so their accuracy is not a
ticket's. The run's last step (`runner`, after its rounds) trains the mask
its last round chose — round R's mask for --rounds=R, the sparsity of plain
IMP's round R — from θ0 or the rewind point, for the full --iterations with
round R's data order: so Early-Bird and plain IMP tickets compare on equal
terms. Its cost is the Early-Bird rounds' (0..R-1) plus its own training.
Raising --rounds adds the final entry of the new last mask beside the others.
"""

from lottery_tf import errors
from lottery_tf.lottery.branches import BRANCHES
from lottery_tf.lottery.branches.base import Branch


@BRANCHES.register("final")
class Final(Branch):
    label = "Early-Bird ticket (trained in full)"

    def name(self):
        return "final"

    def keys(self):
        if not self.config.early_bird:
            raise errors.LotteryError(
                f"--branch=final trains an Early-Bird run's ticket; {self.main.path} was made "
                "without --early_bird (its rounds are its tickets)")
        if self.rounds is None:
            available = self.main.rounds_with_masks(first=1)
            if not available:
                return super().keys()  # Its one-line refusal: no pruned round yet.
            return available[-1:]
        return super().keys()

    @classmethod
    def series(cls, info, run_config):
        detail = run_config["early_bird"]
        if run_config.get("criterion", "magnitude") != "magnitude":
            detail += f", {run_config['criterion']}"
        if run_config.get("early_bird_distance", "pruned") != "pruned":
            detail += f" by {run_config['early_bird_distance']}"
        return f"{cls.kind}:{detail}"


def train(experiment, run_dir, progress):
    """Trains (or finds trained) the final entry of the run in `run_dir` after its rounds."""
    branch = Final(run_dir, experiment.config, rounds=[experiment.config.rounds])
    branch_dir = run_dir.branch(branch.name())
    branch_dir.lock()
    try:
        return branch.run(branch_dir, progress=progress, experiment=experiment)
    finally:
        branch_dir.unlock()
