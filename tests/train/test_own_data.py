"""A user's tf.data datasets as a run's data: what is taken, what is refused."""

import numpy as np
import tensorflow as tf

from lottery_tf import Data, errors, sources
from lottery_tf.train import data as data_lib


def _examples(count):
    images = np.arange(count * 4, dtype=np.float32).reshape(count, 2, 2, 1)
    return tf.data.Dataset.from_tensor_slices((images, np.arange(count) % 3))


def _load(data, validation_size=10):
    return data_lib.load(sources.name_for(data, "dataset"), validation_size=validation_size)


class OwnDataTest(tf.test.TestCase):
    def test_examples_are_fed_as_given_with_a_holdout(self):
        # Unknown size (a filter, as files give): counted, and known to tf.data after.
        train = _examples(50).filter(lambda x, y: True)
        dataset = _load(Data(train=train, test=_examples(7), num_classes=3, name="holdout"))
        self.assertEqual((dataset.num_train, dataset.input_shape, dataset.num_classes), (40, (2, 2, 1), 3))
        first_validation = next(iter(dataset.validation))[0].numpy()
        self.assertAllEqual(first_validation, np.arange(40, dtype=np.float32).reshape(10, 2, 2, 1))
        batch = next(iter(dataset.train(8, seed=1)))[0].numpy()
        self.assertEqual(batch.shape, (8, 2, 2, 1))
        self.assertGreaterEqual(batch.min(), 40.0)  # unscaled, and none of the held-out examples
        self.assertAllEqual(batch, next(iter(dataset.train(8, seed=1)))[0])  # one order per seed
        self.assertEqual(int(dataset.test.cardinality()), 1)

    def test_a_dict_and_a_validation_set_of_its_own(self):
        dataset = _load({"train": _examples(20), "test": _examples(5), "validation": _examples(6),
                         "num_classes": 3, "name": "dict"}, validation_size=5000)
        self.assertEqual(dataset.num_train, 20)

    def test_unusable_data_is_refused_in_one_line(self):
        cases = [
            (Data(train=_examples(20).batch(4), test=_examples(5), num_classes=3, name="b"),
             "train must be a tf.data.Dataset of unbatched (input, integer label) pairs"),
            (Data(train=_examples(20).map(lambda x, y: x), test=_examples(5), num_classes=3, name="u"),
             "train must be a tf.data.Dataset of unbatched"),
            (Data(train=_examples(20).repeat(), test=_examples(5), num_classes=3, name="r"),
             "train repeats forever"),
            (Data(train=_examples(20), test=_examples(5), num_classes=1, name="n"),
             "num_classes=1 must be an integer of at least 2"),
            (Data(train=_examples(8), test=_examples(5), num_classes=3, name="s"),
             "has 8 training examples: too few to hold out --validation_size=10"),
            (Data(train=_examples(20), test=tf.data.Dataset.from_tensor_slices(
                (np.zeros((3, 4), np.float32), np.zeros(3, np.int64))), num_classes=3, name="t"),
             "test inputs are (4,), train inputs (2, 2, 1)"),
        ]
        for data, expected in cases:
            with self.assertRaises(errors.LotteryError) as caught:
                _load(data)
            self.assertIn(expected, str(caught.exception))
            self.assertNotIn("\n", str(caught.exception))
