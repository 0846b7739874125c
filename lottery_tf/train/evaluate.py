"""Evaluation at the speed of a forward pass: both evaluation sets, one compiled call.

`model.evaluate` costs far more than its forward passes when called every few
hundred iterations: each call builds an iterator, a callback list and a
progress bar, and dispatches one step per batch. An evaluation point of a
LeNet round (5,000 validation and 10,000 test images) took ~335 ms that way,
against ~42 ms for a compiled forward pass over the same images. Here the
batches are read once into memory and every later evaluation is a single
call of one compiled function looping over them.

The figures are those `model.evaluate` reports, computed the same way: the
loss is the batch-size-weighted mean of each batch's mean loss (regularization
losses included), accumulated in float32 in batch order; the accuracy is the
number of correct predictions over the number of examples. The batches are
those of the given datasets, so batch-level float rounding matches too (when
batches of unequal size alternate, the regular ones are added first).
"""

import tensorflow as tf
import tf_keras as keras


def _read(dataset):
    """The dataset's batches as lists of tensors (images, labels)."""
    images, labels = [], []
    for x, y in dataset:
        images.append(tf.convert_to_tensor(x))
        labels.append(tf.convert_to_tensor(y))
    if not images:
        raise ValueError("an evaluation dataset is empty")
    return images, labels


def _groups(sets):
    """Groups every set's batches by shape, each group stacked into one tensor.

    Returns a list of (images [k, batch, ...], labels [k, batch], set index
    [k]) per distinct batch shape, in order of first appearance: with the
    usual batching, all full batches of every set, then each set's last,
    smaller batch. Within a set, batches keep their order.
    """
    groups = {}
    for index, (images, labels) in enumerate(sets):
        for x, y in zip(images, labels):
            group = groups.setdefault((tuple(x.shape), tuple(y.shape)), ([], [], []))
            group[0].append(x)
            group[1].append(y)
            group[2].append(index)
    return [(tf.stack(x), tf.stack(y), tf.constant(owner, tf.int32)) for x, y, owner in groups.values()]


def as_loss(loss):
    """A Keras `Loss` object for what `compile` accepted (an object, a name or a function).

    Criteria that read the loss (SNIP, GraSP) call it through this too.
    """
    if isinstance(loss, keras.losses.Loss):
        return loss
    function = keras.losses.get(loss)
    if isinstance(function, keras.losses.Loss):
        return function
    # What Keras's loss container does with a function (tf_keras exports no public name for it).
    from tf_keras.src.losses import LossFunctionWrapper

    return LossFunctionWrapper(function)


class Evaluator:
    """Loss and accuracy of a compiled classifier over fixed evaluation sets.

    Args:
      model: a compiled Keras model whose `loss` maps (labels, outputs) to a
        batch-mean loss and whose outputs are class scores.
      sets: name -> batched `tf.data.Dataset` of (images, labels), each
        finite; read once, on the first call, and kept in memory.
      jit_compile: compile the evaluation with XLA (as the training step).

    Calling it returns {f"{name}_loss", f"{name}_accuracy"} for every set,
    as Python floats.
    """

    def __init__(self, model, sets, jit_compile=False):
        self._model = model
        self._names = list(sets)
        self._sets = sets
        self._jit_compile = jit_compile
        self._loss = as_loss(model.loss)
        self._inputs = None
        self._function = None

    def _prepare(self):
        self._inputs = _groups([_read(self._sets[name]) for name in self._names])
        self._function = tf.function(self._evaluate, jit_compile=self._jit_compile)

    def _batch_stats(self, x, y):
        """(mean loss, number correct, batch size) of one batch, as `evaluate` computes them."""
        outputs = self._model(x, training=False)
        labels = y
        if labels.shape.rank == 1 and outputs.shape.rank == 2:
            labels = tf.expand_dims(labels, -1)  # what Keras's loss container does
        loss = tf.cast(self._loss(labels, outputs), tf.float32)
        if self._model.losses:  # as Keras's loss container adds them: their sum, then to the loss
            loss = loss + tf.add_n([tf.cast(l, tf.float32) for l in self._model.losses])
        correct = tf.reduce_sum(keras.metrics.sparse_categorical_accuracy(y, outputs))
        return loss, correct, tf.cast(tf.shape(x)[0], tf.float32)

    def _evaluate(self, groups):
        count = len(self._names)
        # Per set: loss total, correct total, examples. Added to one batch at a
        # time in batch order, in float32, as Keras's Mean metrics do.
        totals = [tf.zeros([count]), tf.zeros([count]), tf.zeros([count])]

        def add(totals, index, stats):
            loss, correct, size = stats
            updates = (loss * size, correct, size)
            return [tf.tensor_scatter_nd_add(t, [[index]], [u]) for t, u in zip(totals, updates)]

        for images, labels, owner in groups:
            for i in tf.range(tf.shape(owner)[0]):
                totals = add(totals, owner[i], self._batch_stats(images[i], labels[i]))
        loss, correct, size = totals
        return tf.math.divide_no_nan(loss, size), tf.math.divide_no_nan(correct, size)

    def __call__(self):
        if self._function is None:
            self._prepare()
        loss, accuracy = self._function(self._inputs)
        loss, accuracy = loss.numpy(), accuracy.numpy()
        result = {}
        for i, name in enumerate(self._names):
            result[f"{name}_loss"] = float(loss[i])
            result[f"{name}_accuracy"] = float(accuracy[i])
        return result
