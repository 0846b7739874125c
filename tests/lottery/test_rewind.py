"""Rewinding (late resetting): the rewind point and rounds starting from it (from test_extensions)."""

import os
from unittest import mock

import numpy as np
import tensorflow as tf
import tf_keras as keras

from conftest import mock_tfds, tiny_config
from lottery_tf.lottery import runner
from lottery_tf.lottery.run_dir import RunDir
from lottery_tf.lottery.storage import read_arrays
from lottery_tf.nn import models
from lottery_tf.nn.layers import masked_layers
from lottery_tf.train import fit as training
from lottery_tf.train import optimizers
from lottery_tf.train.callbacks import LotteryCallback, model_weights


class RewindTest(tf.test.TestCase):
    def test_rewind_point_is_exactly_the_iteration_k_weights(self):
        tmp = self.get_temp_dir()
        with mock_tfds():
            runner.run(tiny_config(iterations=30, rounds=2, rewind_iteration=10,
                                   output_dir=os.path.join(tmp, "rewind")), progress=lambda line: None)
            # The same run stopped after 10 iterations: its final weights are
            # what the rewind point must hold.
            runner.run(tiny_config(iterations=10, rounds=1, output_dir=os.path.join(tmp, "ten")),
                       progress=lambda line: None)
        rewind = read_arrays(RunDir(os.path.join(tmp, "rewind")).rewind_path)
        ten = read_arrays(RunDir(os.path.join(tmp, "ten")).weights_path(0))
        theta0 = read_arrays(RunDir(os.path.join(tmp, "rewind")).theta0_path)
        self.assertEqual(sorted(rewind), sorted(ten))
        for key in rewind:
            self.assertAllEqual(rewind[key], ten[key], key)
        self.assertNotAllClose(rewind["fc1/kernel"], theta0["fc1/kernel"])

    def test_round_1_of_a_rewind_run_starts_from_the_rewind_point(self):
        # What the network holds when training begins, each round (after the
        # round's own start-of-training restore): round 0 from θ0, round 1 from
        # the rewind point (times its mask), never θ0 again.
        starts = []

        class RecordStart(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                starts.append({key: v.numpy() for key, v in model_weights(self.model).items()})

        real_train_round = training.train_round

        def train_round(model, train, evaluate, iterations, eval_every, callbacks, **kwargs):
            return real_train_round(model, train, evaluate, iterations, eval_every,
                                    list(callbacks) + [RecordStart()], **kwargs)

        path = os.path.join(self.get_temp_dir(), "rewind")
        with mock_tfds(), mock.patch.object(training, "train_round", train_round):
            runner.run(tiny_config(iterations=30, rounds=2, rewind_iteration=10, output_dir=path),
                       progress=lambda line: None)
        run = RunDir(path)
        theta0, rewind, mask = read_arrays(run.theta0_path), read_arrays(run.rewind_path), run.load_masks(1)
        self.assertLen(starts, 2)
        self.assertEqual(sorted(starts[1]), sorted(rewind))
        for key, value in starts[0].items():
            self.assertAllEqual(value, theta0[key], key)
        for key, value in starts[1].items():
            layer, _, kind = key.partition("/")
            want = rewind[key] * mask[layer] if kind == "kernel" else rewind[key]
            self.assertAllEqual(value, want, key)
            self.assertNotAllClose(value, theta0[key] * mask[layer] if kind == "kernel" else theta0[key])

    def test_round_start_uses_the_rewind_weights(self):
        with mock_tfds():
            from lottery_tf.train import data

            dataset = data.load("mnist", validation_size=60)
        model = models.build("lenet_300_100", dataset.input_shape, dataset.num_classes, seed=1)
        rewind = {k: v.numpy() + 0.5 for k, v in model_weights(model).items()}
        masks = {l.name: np.ones(l.kernel.shape, np.float32) for l in masked_layers(model)}
        masks["fc2"][0] = 0
        training.compile_model(model, optimizers.make_optimizer("adam", 1e-3), False, 1)
        callback = LotteryCallback(rewind, masks)
        callback.set_model(model)
        callback.on_train_begin()
        self.assertAllEqual(model.get_layer("fc2").kernel.numpy(), rewind["fc2/kernel"] * masks["fc2"])
        self.assertAllEqual(model.get_layer("fc1").bias.numpy(), rewind["fc1/bias"])
