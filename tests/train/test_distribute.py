"""IMP under MirroredStrategy over the two logical CPUs made in conftest."""

import os

import numpy as np
import tensorflow as tf

from conftest import mock_tfds, tiny_config
from lottery_tf.lottery import runner
from lottery_tf.lottery.run_dir import RunDir
from lottery_tf.lottery.storage import read_arrays
from lottery_tf.nn import models
from lottery_tf.nn.layers import masked_layers
from lottery_tf.train import data
from lottery_tf.train import distribute
from lottery_tf.train import fit as training
from lottery_tf.train import optimizers
from lottery_tf.train.evaluate import Evaluator
from lottery_tf.train.callbacks import LotteryCallback, model_weights



def _evaluator(model, dataset):
    return Evaluator(model, {"val": dataset.validation, "test": dataset.test})

class MirroredTest(tf.test.TestCase):
    def test_masks_identical_on_every_replica_and_pruned_weights_stay_zero(self):
        strategy = distribute.make("mirrored")
        self.assertEqual(strategy.num_replicas_in_sync, 2)
        with mock_tfds():
            dataset = data.load("mnist", validation_size=60)
            with strategy.scope():
                model = models.build("lenet_300_100", dataset.input_shape, dataset.num_classes, seed=2)
                self.assertFalse(training.jit_supported(strategy))
                training.compile_model(model, optimizers.make_optimizer("adam", 1e-3), jit_compile=False, steps_per_execution=5)
            theta0 = {k: v.numpy() for k, v in model_weights(model).items()}
            rng = np.random.default_rng(0)
            masks = {l.name: (rng.random(l.kernel.shape) < 0.25).astype(np.float32)
                     for l in masked_layers(model)}
            # Pruning that keeps the masks: the pruning step runs, nothing changes.
            callback = LotteryCallback(theta0, masks, prune=lambda context: context.masks)
            training.train_round(model, dataset.train(16, seed=0), _evaluator(model, dataset),
                                 20, 10, [callback], verbose=0)
        for layer in masked_layers(model):
            mask = masks[layer.name]
            local_masks = strategy.experimental_local_results(layer.mask)
            local_kernels = strategy.experimental_local_results(layer.kernel)
            self.assertLen(local_masks, 2)
            for local_mask, local_kernel in zip(local_masks, local_kernels):
                self.assertAllEqual(local_mask.numpy(), mask)
                self.assertAllEqual(local_kernel.numpy()[mask == 0], np.zeros(int((mask == 0).sum())))
            # Replicas trained in sync: both hold the same kernel.
            self.assertAllEqual(local_kernels[0].numpy(), local_kernels[1].numpy())
            # And it did train: survivors moved away from θ0.
            self.assertNotAllClose(local_kernels[0].numpy(), theta0[f"{layer.name}/kernel"] * mask)

    def test_runner_with_mirrored_strategy(self):
        out_dir = os.path.join(self.get_temp_dir(), "run")
        config = tiny_config(iterations=20, rounds=2, output_dir=out_dir, distribution_strategy="mirrored")
        with mock_tfds():
            results = runner.run(config, progress=lambda line: None)
        self.assertAllClose(results[1]["remaining_pct"], 80.04, atol=0.01)
        weights = read_arrays(RunDir(out_dir).weights_path(1))
        mask = read_arrays(RunDir(out_dir).mask_path(1))["fc1"]
        self.assertAllEqual(weights["fc1/kernel"][mask == 0], np.zeros(int((mask == 0).sum())))
