"""What a pruning criterion is: scores per weight, computed from a context.

Scoring is separate from selection (`selection.py` turns scores into masks:
layerwise or global, with the deterministic tie-break and round-half-up
counts), so criteria differ by one method and every criterion respects the
per-group rates or the global scope.
"""

import dataclasses


@dataclasses.dataclass
class PruningContext:
    """Everything a criterion may read when a round's masks are chosen.

    Attributes:
      masks: masked layer name -> the mask the round trained with.
      trained: masked layer name -> the kernel at the end of the round.
      init: masked layer name -> the kernel the round started from (θ0, or
        the rewind point).
      model: the Keras model, with the trained weights and current masks
        (for criteria that need gradients).
      batch: None, or a callable returning one (images, labels) training
        batch (for criteria that need data).
      loss: None, or the training loss, a callable (labels, logits) -> loss.
      start: None, or weight key ('fc1/bias') -> every weight the round
        started from (biases, batch norm), for criteria that evaluate the
        network at its start; None: those weights as the model holds them.
      seed: None, or the seed of criteria that draw random numbers (None:
        the run's seed).
    """

    masks: dict
    trained: dict = None
    init: dict = None
    model: object = None
    batch: object = None
    loss: object = None
    start: dict = None
    seed: object = None


class Criterion:
    """Scores the weights of each masked layer; the lowest scores are pruned.

    Subclasses implement `scores` and list in `reads` the context fields they
    use ("trained", "init", "model", "batch", "loss", "start", "seed"; the
    masks are always there), so callers know what to provide and a test can
    check that, say, a data-free criterion reads no data. Scores of pruned
    weights are ignored (selection looks at survivors).

    Args:
      config: the run's `Config`, for criteria with hyperparameters of their
        own (e.g. --synflow_iterations); None: their defaults.
    """

    name = ""
    reads = ()
    # Scoring-and-selection steps one pruning takes: 1, or more for criteria
    # that re-score as they prune (SynFlow), on an exponential schedule.
    steps = 1

    def __init__(self, config=None):
        self.config = config

    def scores(self, context):
        """masked layer name -> float array of the kernel's shape."""
        raise NotImplementedError
