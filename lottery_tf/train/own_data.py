"""The user's own data: tf.data datasets handed over as a `Data`.

A dataset function (`--dataset=package.module:function`, or
`lottery_tf.run(config, data=...)`) returns a `Data`: unbatched
(input, integer label) examples for training, validation and test, the
class count, and optionally the loss. lottery-tf batches, shuffles (one
seeded order per round, over the whole training set) and repeats the
training examples itself, and evaluates the others in batches, exactly as
it does TFDS data, but feeds the inputs as they are (no /255 scaling).
"""

import dataclasses

import tensorflow as tf

from lottery_tf import errors, sources
from lottery_tf.train import data as data_lib


@dataclasses.dataclass
class Data:
    """A dataset of your own.

    Args:
      train: `tf.data.Dataset` of unbatched `(input, label)` pairs, the
        training examples; it must give the same examples in the same order
        each time it is iterated (resuming relies on it); it is cached in
        memory.
      test: the same for the test examples.
      num_classes: the number of classes; labels are integers in
        [0, num_classes) and the model outputs one logit per class.
      validation: the same for validation (early stopping); None holds out
        the first `--validation_size` examples of `train` instead.
      loss: a Keras loss of (integer labels, logits); None for
        `SparseCategoricalCrossentropy(from_logits=True)`. Accuracy is the
        share of correct class ids (argmax of the logits) either way.
      name: the name a run records for this object when it is handed to
        `lottery_tf.run` directly (not by a dataset function's import path).
    """

    train: tf.data.Dataset
    test: tf.data.Dataset
    num_classes: int
    validation: tf.data.Dataset = None
    loss: object = None
    name: str = "data"


@dataclasses.dataclass(frozen=True)
class OwnDataset(data_lib.Dataset):
    """A `data.Dataset` of the user's examples: fed unscaled, with its loss."""

    loss: object = None

    def train(self, batch_size, seed):
        """Endless, shuffled (by `seed`) batches of training examples."""
        ds = self._train_examples.shuffle(self.num_train, seed=seed, reshuffle_each_iteration=True)
        return ds.repeat().batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def load(name, data_dir=None, validation_size=5000):
    """The `OwnDataset` of dataset function (or `Data`) `name` (see `sources`).

    The function is called with those of `data_dir` (--data_dir, e.g. where
    its files are) and `validation_size` it declares.

    Raises:
      errors.LotteryError: the function cannot be found, fails, or returns
        something that is not a usable `Data` (one line, what to do).
    """
    target = sources.resolve(name, "dataset")
    if callable(target) and not isinstance(target, Data):
        target = sources.call(target, name, "dataset", data_dir=data_dir or "",
                              validation_size=validation_size)
    if isinstance(target, dict):
        target = _from_dict(target, name)
    if not isinstance(target, Data):
        raise errors.LotteryError(
            f"--dataset={name} gave a {type(target).__name__}, not a lottery_tf.Data "
            "(train, test, num_classes[, validation, loss])")
    input_shape = _check_examples(target.train, "train", name)
    for split in ("validation", "test"):
        examples = getattr(target, split)
        shape = input_shape if examples is None else _check_examples(examples, split, name)
        if shape != input_shape:
            raise errors.LotteryError(
                f"--dataset={name}: {split} inputs are {shape}, train inputs {input_shape}")
    if not isinstance(target.num_classes, int) or target.num_classes < 2:
        raise errors.LotteryError(
            f"--dataset={name}: num_classes={target.num_classes!r} must be an integer of at least 2")
    train, validation, test = (_sized(getattr(target, split), split, name)
                               for split in ("train", "validation", "test"))
    total = int(train.cardinality())
    if validation is None:
        if total <= validation_size:
            raise errors.LotteryError(
                f"--dataset={name} has {total} training examples: too few to hold out "
                f"--validation_size={validation_size}; lower it or give Data(validation=...)")
        validation, train = train.take(validation_size), train.skip(validation_size)
        total -= validation_size
    return OwnDataset(
        name=name,
        input_shape=input_shape,
        num_classes=target.num_classes,
        num_train=total,
        validation=_eval_pipeline(validation),
        test=_eval_pipeline(test),
        _train_examples=train.cache(),
        loss=target.loss,
    )


def _from_dict(values, name):
    try:
        return Data(**values)
    except TypeError as e:
        raise errors.LotteryError(f"--dataset={name} gave a dict that is not a Data: {e}") from None


def _check_examples(dataset, split, name):
    """The input shape of unbatched (input, label) examples; refuses anything else."""
    spec = getattr(dataset, "element_spec", None)
    ok = (isinstance(spec, tuple) and len(spec) == 2
          and all(isinstance(s, tf.TensorSpec) for s in spec))
    if ok and spec[1].shape.rank == 0 and spec[1].dtype.is_integer and spec[0].shape.is_fully_defined():
        return tuple(int(d) for d in spec[0].shape)
    raise errors.LotteryError(
        f"--dataset={name}: {split} must be a tf.data.Dataset of unbatched (input, integer label) "
        f"pairs with a fixed input shape; its elements are {spec!r} (unbatch it, or map it to "
        "(input, label))")


def _sized(dataset, split, name):
    """`dataset` with its size known to tf.data (Keras's evaluation needs it)."""
    if dataset is None or int(dataset.cardinality()) >= 0:
        return dataset
    if int(dataset.cardinality()) == tf.data.INFINITE_CARDINALITY:
        raise errors.LotteryError(
            f"--dataset={name}: {split} repeats forever; give one pass over the examples "
            "(lottery-tf repeats and shuffles the training examples itself)")
    count = int(dataset.reduce(0, lambda n, _: n + 1))  # e.g. read from files: count once
    return dataset.apply(tf.data.experimental.assert_cardinality(count))


def _eval_pipeline(examples):
    return examples.batch(data_lib.EVAL_BATCH_SIZE).cache().prefetch(tf.data.AUTOTUNE)
