"""Real-data check: a briefly trained dense LeNet-300-100 reaches 97 %."""

import os

import tensorflow as tf

from conftest import real_mnist_dir
from lottery_tf.lottery import runner
from lottery_tf.config import Config


class RealMnistTest(tf.test.TestCase):
    def test_dense_lenet_reaches_97_percent(self):
        config = Config(
            data_dir=real_mnist_dir(),
            iterations=3000,
            eval_every=1000,
            rounds=1,
            verbose=0,
            output_dir=os.path.join(self.get_temp_dir(), "run"),
        )
        (metrics,) = runner.run(config, progress=print)
        self.assertGreaterEqual(metrics["final_test_accuracy"], 0.97)
