import os
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from conftest import mock_tfds, real_mnist_dir, real_mnist_manual_dir
from lottery_tf import errors
from lottery_tf.train import data


def _images(ds):
    return np.concatenate([x.numpy() for x, _ in ds])


class HoldoutTest(tf.test.TestCase):
    def test_validation_is_the_first_examples_of_train_and_disjoint(self):
        with mock_tfds(num_examples=200):
            dataset = data.load("mnist", validation_size=50)
            raw = tfds.load("mnist", split="train", as_supervised=True, shuffle_files=False)
            raw_images = np.stack([x.numpy() for x, _ in raw]).astype(np.float32) / 255.0
            validation = _images(dataset.validation)
            train = _images(dataset.train(batch_size=150, seed=0).take(1))
        self.assertEqual(dataset.num_train, 150)
        self.assertEqual((dataset.input_shape, dataset.num_classes), ((28, 28, 1), 10))
        self.assertAllEqual(validation, raw_images[:50])
        # One batch of the whole train part is a permutation of examples 50..199.
        key = lambda a: sorted(map(bytes, a.reshape(len(a), -1)))  # noqa: E731
        self.assertEqual(key(train), key(raw_images[50:]))
        self.assertEqual(validation.dtype, np.float32)
        self.assertBetween(float(train.min()), 0.0, 1.0)
        self.assertBetween(float(train.max()), 0.0, 1.0)

    def test_train_order_is_seeded(self):
        with mock_tfds(num_examples=200):
            dataset = data.load("mnist", validation_size=50)
            a = _images(dataset.train(batch_size=10, seed=1).take(3))
            b = _images(dataset.train(batch_size=10, seed=1).take(3))
            c = _images(dataset.train(batch_size=10, seed=2).take(3))
        self.assertAllEqual(a, b)
        self.assertNotAllClose(a, c)

    def test_train_order_is_that_of_shuffling_the_examples_themselves(self):
        # The order of lottery-tf <= 0.1 (and so of every existing run): the
        # examples shuffled, repeated, batched. Over three epochs, with batches
        # that straddle epoch boundaries.
        with mock_tfds(num_examples=200):
            dataset = data.load("mnist", validation_size=50)
            examples = tfds.load("mnist", split="train", as_supervised=True, shuffle_files=False).skip(50)
            old = examples.shuffle(150, seed=7, reshuffle_each_iteration=True).repeat()
            old = old.batch(40, drop_remainder=True).map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y))
            for (x, y), (old_x, old_y) in zip(dataset.train(40, seed=7).take(12), old.take(12)):
                self.assertAllEqual(x, old_x)
                self.assertAllEqual(y, old_y)
                self.assertEqual(x.dtype, old_x.dtype)

    def test_holdout_larger_than_train_is_refused(self):
        with mock_tfds(num_examples=100):
            with self.assertRaisesRegex(errors.LotteryError, "too few to hold out --validation_size=100"):
                data.load("mnist", validation_size=100)

    def test_unknown_dataset(self):
        with self.assertRaisesRegex(errors.LotteryError, "unknown dataset 'mnistt'"):
            data.load("mnistt", data_dir=self.get_temp_dir())

    def test_offline_failure_is_fast_and_writes_nothing(self):
        # Fast by construction, not by the clock: one short probe of the one
        # download host, and TFDS's download (ten retries with backoff per URL
        # offline) never reached.
        data_dir = os.path.join(self.get_temp_dir(), "tfds")
        probe = mock.Mock(side_effect=OSError("offline"))
        with mock.patch("socket.create_connection", probe), mock.patch.object(
                tfds.core.DatasetBuilder, "download_and_prepare") as download:
            with self.assertRaisesRegex(errors.LotteryError, "storage.googleapis.com unreachable.*--data_dir.*--manual_dir"):
                data.load("mnist", data_dir=data_dir)
        download.assert_not_called()
        self.assertEqual(probe.call_count, 1, probe.call_args_list)
        self.assertEqual(probe.call_args.args[0], ("storage.googleapis.com", 443))
        self.assertLessEqual(probe.call_args.kwargs["timeout"], 5)
        self.assertFalse(os.path.exists(data_dir))


class RealMnistDataTest(tf.test.TestCase):
    def test_real_mnist_splits(self):
        dataset = data.load("mnist", data_dir=real_mnist_dir())
        self.assertEqual(dataset.num_train, 55000)
        self.assertEqual(sum(len(y) for _, y in dataset.validation), 5000)
        self.assertEqual(sum(len(y) for _, y in dataset.test), 10000)

    def test_manual_dir_route_prepares_mnist_offline(self):
        manual_dir = real_mnist_manual_dir()
        data_dir = os.path.join(self.get_temp_dir(), "tfds")
        with mock.patch("socket.create_connection", side_effect=OSError("offline")):
            dataset = data.load("mnist", data_dir=data_dir, manual_dir=manual_dir)
        self.assertEqual(dataset.num_train, 55000)


class RealDataRequirementTest(tf.test.TestCase):
    """Without the data, real-data tests skip; under LOTTERY_TF_REQUIRE_REAL_DATA (.ci/run) they fail."""

    def test_missing_real_data_skips_or_fails(self):
        missing = {"TFDS_DATA_DIR": os.path.join(self.get_temp_dir(), "none"),
                   "LOTTERY_TF_MNIST_MANUAL_DIR": os.path.join(self.get_temp_dir(), "none")}
        for helper in (real_mnist_dir, real_mnist_manual_dir):
            for required, want in (("", pytest.skip.Exception), ("0", pytest.skip.Exception),
                                   ("1", pytest.fail.Exception)):
                # Skip and fail are BaseExceptions that would end this test: catch them all.
                outcome = None
                with mock.patch.dict(os.environ, {**missing, "LOTTERY_TF_REQUIRE_REAL_DATA": required}):
                    try:
                        helper()
                    except BaseException as e:  # noqa: B036
                        outcome = type(e)
                self.assertIs(outcome, want, (helper.__name__, required))

    def test_present_real_data_is_returned(self):
        data_dir = os.path.join(self.get_temp_dir(), "tfds")
        manual_dir = os.path.join(self.get_temp_dir(), "manual")
        os.makedirs(os.path.join(data_dir, "mnist"))
        os.makedirs(manual_dir)
        open(os.path.join(manual_dir, "train-images-idx3-ubyte.gz"), "w").close()
        with mock.patch.dict(os.environ, {"TFDS_DATA_DIR": data_dir, "LOTTERY_TF_MNIST_MANUAL_DIR": manual_dir,
                                          "LOTTERY_TF_REQUIRE_REAL_DATA": "1"}):
            self.assertEqual(real_mnist_dir(), data_dir)
            self.assertEqual(real_mnist_manual_dir(), manual_dir)
