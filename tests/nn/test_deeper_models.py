"""VGG-19 and ResNet-20, and the conv models training end to end (from test_extensions)."""

import os

import numpy as np
import tensorflow as tf

from conftest import mock_tfds
from lottery_tf.config import Config
from lottery_tf.lottery import runner
from lottery_tf.lottery.storage import read_arrays
from lottery_tf.lottery.run_dir import RunDir
from lottery_tf.nn import models
from lottery_tf.nn.layers import masked_layers


class DeeperModelsTest(tf.test.TestCase):
    def test_vgg19_and_resnet20_shapes_and_unpruned_batch_norm(self):
        for name, conv_count, weights in (("vgg19", 16, 20_024_000), ("resnet20", 21, 270_896)):
            model = models.build(name, (32, 32, 3), 10, seed=0)
            layers = masked_layers(model)
            self.assertEqual(sum(1 for l in layers if l.pruning_group == "conv"), conv_count, name)
            self.assertEqual(layers[-1].pruning_group, "output")
            self.assertEqual(sum(int(np.prod(l.kernel.shape)) for l in layers), weights, name)
            bn = [l for l in model.layers if "BatchNormalization" in type(l).__name__]
            self.assertNotEmpty(bn)
            self.assertEqual(model(tf.zeros((1, 32, 32, 3))).shape, (1, 10))

    def test_conv2_trains_with_default_speed_and_determinism_flags(self):
        # XLA has no deterministic max-pooling gradient: runs must still work.
        with mock_tfds():
            results = runner.run(Config(model="conv2", iterations=10, rounds=2, eval_every=5,
                                        validation_size=60, batch_size=8, verbose=0,
                                        output_dir=os.path.join(self.get_temp_dir(), "c")),
                                 progress=lambda line: None)
        self.assertAllClose(results[1]["remaining_pct_by_layer"]["conv1"], 90.0, atol=0.2)

    def test_resnet20_trains_two_rounds_with_sgd_schedule(self):
        with mock_tfds():
            results = runner.run(
                Config(model="resnet20", iterations=10, rounds=2, optimizer="sgd", learning_rate=0.05,
                       momentum=0.9, weight_decay=1e-4, warmup_iterations=5, lr_drops="8",
                       pruning_scope="global", output_dir=os.path.join(self.get_temp_dir(), "r"),
                       eval_every=5, validation_size=60, batch_size=8, steps_per_execution=5, verbose=0),
                progress=lambda line: None)
        self.assertAllClose(results[1]["remaining_pct"], 80.0, atol=0.05)
        theta0 = read_arrays(RunDir(os.path.join(self.get_temp_dir(), "r")).theta0_path)
        self.assertIn("stem_bn/moving_mean", theta0)
