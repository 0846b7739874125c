"""Pruning = criterion x selection, in amounts set by a schedule.

  criteria/    what scores each weight (magnitude, ...): one file per criterion
  selection.py which weights the scores remove (layerwise, global)
  schedule.py  how much each layer loses per round (IMP rates, one-shot targets)
  blocks.py    --block: scores pooled per block, block masks spread over weights

`Pruner` ties the three together for one pruning step.
"""

import dataclasses

from lottery_tf.pruning import blocks, criteria, selection
from lottery_tf.pruning.criteria.base import Criterion, PruningContext  # noqa: F401


class Pruner:
    """One pruning step: scores from `criterion`, masks from `scope`.

    Args:
      criterion: a registered criterion name, or a `Criterion`.
      scope: a registered selection name (`layerwise`, `global`).
      fractions: masked layer name -> fraction of its survivors to remove.
      config: the run's `Config`, for criteria with hyperparameters and for
        its --block (None: unstructured).
    """

    def __init__(self, criterion, scope, fractions, config=None):
        self.criterion = criterion if isinstance(criterion, Criterion) else criteria.get(criterion, config)
        self._select = selection.SCOPES.get(scope)
        self.fractions = dict(fractions)
        size = blocks.block_size(getattr(config, "block", "none"))
        if size > 1:
            self._select = blocks.blockwise(self._select, size)

    @property
    def reads(self):
        return self.criterion.reads

    def __call__(self, context):
        """The new masks for `context` (a `PruningContext`)."""
        if self.criterion.steps == 1:
            return self._select(self.criterion.scores(context), context.masks, self.fractions)
        return selection.iterated(
            self._select,
            lambda masks: self.criterion.scores(dataclasses.replace(context, masks=masks)),
            context.masks, self.fractions, self.criterion.steps)
