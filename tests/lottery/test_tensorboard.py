"""TensorBoard scalars written per round (from test_extensions)."""

import glob
import os

import tensorflow as tf

from conftest import mock_tfds, tiny_config
from lottery_tf.lottery import runner


class TensorBoardTest(tf.test.TestCase):
    def test_tensorboard_scalars_per_round(self):
        path = os.path.join(self.get_temp_dir(), "tb")
        with mock_tfds():
            runner.run(tiny_config(iterations=20, rounds=2, output_dir=path), progress=lambda line: None)
        tags = {}
        for event_file in glob.glob(os.path.join(path, "tensorboard", "*", "events.*")):
            for event in tf.compat.v1.train.summary_iterator(event_file):
                for value in event.summary.value:
                    tags.setdefault(value.tag, []).append(event.step)
        self.assertEqual(sorted(tags["sparsity/remaining_pct"]), [0, 1])
        self.assertEqual(sorted(tags["sparsity/remaining_pct/output"]), [0, 1])
        self.assertEqual(sorted(tags["curve/test_accuracy"]), [10, 10, 20, 20])
