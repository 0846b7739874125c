"""Early-Bird rounds (You et al. 2020): stop training once the mask has settled.

At every evaluation of a round, the round's own pruning (criterion and
selection, through `LotteryCallback.choose`) picks the masks it would keep
from the weights as they are; the distance to the masks picked at the
evaluation before is recorded (`pruning.mask_distance`, both
normalisations). Once the last WINDOW distances under the chosen
normalisation are all <= EPSILON, the round stops there and prunes with
the masks just picked.
"""

import tf_keras as keras

from lottery_tf.pruning import mask_distance


class EarlyBird(keras.callbacks.Callback):
    """Watches the masks a round's pruning would choose; stops the round when they settle.

    Runs after the evaluation of each step (a late callback), so an
    evaluation point it stops at is in the learning curve.

    Args:
      lottery: the round's `LotteryCallback` (chooses masks; prunes with
        `next_masks` at the end).
      rule: (epsilon, window).
      normalization: one of `mask_distance.NORMALIZATIONS`.
      eval_every, iterations: the round's evaluation points.
      start_step: the step a resumed round starts at.
      distances: the distances recorded before `start_step` (appended to in
        place), and `previous`: the masks of the last evaluation before it.
      earliest: never stop before this iteration (the rewind snapshot).
    """

    def __init__(self, lottery, rule, normalization, eval_every, iterations, start_step=0,
                 distances=None, previous=None, earliest=0):
        super().__init__()
        self._lottery = lottery
        self.epsilon, self.window = rule
        self.normalization = normalization
        self._eval_every = eval_every
        self._iterations = iterations
        self._start = start_step
        self._earliest = earliest
        self.distances = [] if distances is None else distances
        self.previous = previous
        self.stopped_at = None

    def on_train_batch_end(self, batch, logs=None):
        iteration = self._start + batch + 1
        if iteration % self._eval_every and iteration != self._iterations:
            return
        masks = self._lottery.choose()
        if self.previous is not None:
            self.distances.append({"iteration": iteration,
                                   **mask_distance.distances(self.previous, masks, self._lottery.masks)})
        self.previous = masks
        history = [point[self.normalization] for point in self.distances]
        if iteration == self._iterations:
            self._lottery.next_masks = masks  # What the round's end would choose again.
        elif iteration >= self._earliest and mask_distance.should_stop(history, self.epsilon, self.window):
            self._lottery.next_masks = masks
            self.stopped_at = iteration
            self.model.stop_training = True

    def record(self):
        """What the round's metrics keep: the rule, where it stopped, the distance curve."""
        return {"epsilon": self.epsilon, "window": self.window, "normalization": self.normalization,
                "stopped_at": self.stopped_at, "distances": self.distances}
