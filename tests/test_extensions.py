"""Rewinding, global pruning, LR schedules, deeper models, trials, TensorBoard."""

import glob
import os

import numpy as np
import tensorflow as tf

from conftest import mock_tfds
from lottery_tf.cli import train as cli
from lottery_tf.nn import models
from lottery_tf.pruning import selection as pruning
from lottery_tf.lottery import runner
from lottery_tf.pruning import schedule
from lottery_tf.train import fit as training
from lottery_tf.train.callbacks import LotteryCallback, model_weights
from lottery_tf.config import Config
from lottery_tf.nn.layers import masked_layers
from lottery_tf.lottery.run_dir import RunDir, read_arrays

TINY = dict(eval_every=10, validation_size=60, batch_size=16, steps_per_execution=5, verbose=0)


class RewindTest(tf.test.TestCase):
    def test_rewind_point_is_exactly_the_iteration_k_weights(self):
        tmp = self.get_temp_dir()
        with mock_tfds():
            runner.run(Config(iterations=30, rounds=2, rewind_iteration=10,
                              output_dir=os.path.join(tmp, "rewind"), **TINY), progress=lambda line: None)
            # The same run stopped after 10 iterations: its final weights are
            # what the rewind point must hold.
            runner.run(Config(iterations=10, rounds=1, output_dir=os.path.join(tmp, "ten"), **TINY),
                       progress=lambda line: None)
        rewind = read_arrays(RunDir(os.path.join(tmp, "rewind")).rewind_path)
        ten = read_arrays(RunDir(os.path.join(tmp, "ten")).weights_path(0))
        theta0 = read_arrays(RunDir(os.path.join(tmp, "rewind")).theta0_path)
        self.assertEqual(sorted(rewind), sorted(ten))
        for key in rewind:
            self.assertAllEqual(rewind[key], ten[key], key)
        self.assertNotAllClose(rewind["fc1/kernel"], theta0["fc1/kernel"])

    def test_round_start_uses_the_rewind_weights(self):
        with mock_tfds():
            from lottery_tf.train import data

            dataset = data.load("mnist", validation_size=60)
        model = models.build("lenet_300_100", dataset.input_shape, dataset.num_classes, seed=1)
        rewind = {k: v.numpy() + 0.5 for k, v in model_weights(model).items()}
        masks = {l.name: np.ones(l.kernel.shape, np.float32) for l in masked_layers(model)}
        masks["fc2"][0] = 0
        training.compile_model(model, training.make_optimizer("adam", 1e-3), False, 1)
        callback = LotteryCallback(rewind, masks)
        callback.set_model(model)
        callback.on_train_begin()
        self.assertAllEqual(model.get_layer("fc2").kernel.numpy(), rewind["fc2/kernel"] * masks["fc2"])
        self.assertAllEqual(model.get_layer("fc1").bias.numpy(), rewind["fc1/bias"])


class GlobalPruningTest(tf.test.TestCase):
    def test_one_threshold_across_layers_with_exclusions(self):
        weights = {
            "a": np.array([0.1, 0.9, 0.3, 0.7], np.float32),
            "b": np.array([[0.2, 0.05], [0.8, 0.6]], np.float32),
            "out": np.array([0.01, 0.02], np.float32),
        }
        masks = {k: np.ones_like(v) for k, v in weights.items()}
        groups = {"a": "fc", "b": "fc", "out": "output"}
        fractions = schedule.global_fractions(groups, 0.5, ("output",))
        self.assertEqual(fractions, {"a": 0.5, "b": 0.5, "out": 0.0})
        new = pruning.STRATEGIES.get("global")(weights, masks, fractions)
        # 8 included survivors, 4 pruned: 0.05, 0.1, 0.2, 0.3 wherever they are.
        self.assertAllEqual(new["a"], [0, 1, 0, 1])
        self.assertAllEqual(new["b"], [[0, 0], [1, 1]])
        self.assertAllEqual(new["out"], [1, 1])  # excluded although smallest

    def test_global_ties_break_by_layer_then_index(self):
        weights = {"a": np.full(3, 0.5, np.float32), "b": np.full(3, 0.5, np.float32)}
        masks = {k: np.ones(3, np.float32) for k in weights}
        new = pruning.STRATEGIES.get("global")(weights, masks, {"a": 0.5, "b": 0.5})
        self.assertAllEqual(new["a"], [0, 0, 0])
        self.assertAllEqual(new["b"], [1, 1, 1])

    def test_global_one_shot_hits_the_target(self):
        groups = {"fc1": "fc", "fc2": "fc", "output": "output"}
        sizes = {"fc1": 1000, "fc2": 300, "output": 50}
        fractions = schedule.one_shot_global_fractions(groups, sizes, ("output",), 0.9)
        kept = sum(sizes[n] * (1 - f) for n, f in fractions.items()) / sum(sizes.values())
        self.assertAllClose(kept, 0.1)
        self.assertEqual(fractions["output"], 0.0)

    def test_global_run_prunes_the_global_rate_overall(self):
        with mock_tfds():
            results = runner.run(Config(iterations=20, rounds=2, pruning_scope="global", global_rate=0.3,
                                        output_dir=os.path.join(self.get_temp_dir(), "g"), **TINY),
                                 progress=lambda line: None)
        by_layer = results[1]["remaining_pct_by_layer"]
        self.assertEqual(by_layer["output"], 100.0)
        alive = 235200 * by_layer["fc1"] / 100 + 30000 * by_layer["fc2"] / 100
        self.assertAllClose(alive, 0.7 * 265200, atol=0.6)


class ScheduleAndModelsTest(tf.test.TestCase):
    def test_warmup_and_drops(self):
        lr = training.WarmupStepSchedule(0.1, warmup_iterations=10, drops=(20, 30), factor=0.1)
        values = [float(lr(s)) for s in (0, 4, 9, 15, 20, 29, 30, 100)]
        self.assertAllClose(values, [0.01, 0.05, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
        optimizer = training.make_optimizer("sgd", 0.1, momentum=0.9, weight_decay=1e-4,
                                            warmup_iterations=10, lr_drops=(20,))
        self.assertAllClose(optimizer.momentum, 0.9)
        self.assertAllClose(optimizer.weight_decay, 1e-4)

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


class TrialsAndTensorBoardTest(tf.test.TestCase):
    def test_trials_get_distinct_recorded_seeds_and_dirs(self):
        base = Config(seed=5, output_dir="/x/run")
        trials = cli.trial_configs(base, 3)
        self.assertEqual([c.seed for c in trials], [5, 6, 7])
        self.assertEqual([c.output_dir for c in trials], ["/x/run/trial_0", "/x/run/trial_1", "/x/run/trial_2"])
        self.assertEqual([c.seed for c in cli.trial_configs(base, 3, trial_index=1)], [6])
        self.assertEqual(cli.trial_configs(base, 1), [base])

    def test_tensorboard_scalars_per_round(self):
        path = os.path.join(self.get_temp_dir(), "tb")
        with mock_tfds():
            runner.run(Config(iterations=20, rounds=2, output_dir=path, **TINY), progress=lambda line: None)
        tags = {}
        for event_file in glob.glob(os.path.join(path, "tensorboard", "*", "events.*")):
            for event in tf.compat.v1.train.summary_iterator(event_file):
                for value in event.summary.value:
                    tags.setdefault(value.tag, []).append(event.step)
        self.assertEqual(sorted(tags["sparsity/remaining_pct"]), [0, 1])
        self.assertEqual(sorted(tags["sparsity/remaining_pct/output"]), [0, 1])
        self.assertEqual(sorted(tags["curve/test_accuracy"]), [10, 10, 20, 20])
