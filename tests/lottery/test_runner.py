import glob
import hashlib
import os

import numpy as np
import tensorflow as tf

from conftest import mock_tfds, tiny_config
from lottery_tf import errors
from lottery_tf.config import Config
from lottery_tf.lottery import runner
from lottery_tf.lottery import storage
from lottery_tf.lottery.run_dir import RunDir
from lottery_tf.lottery.storage import read_arrays, read_json
from lottery_tf.nn import models
from lottery_tf.nn.layers import masked_layers
from lottery_tf.train import data
from lottery_tf.train import fit as training
from lottery_tf.train import optimizers
from lottery_tf.train.evaluate import Evaluator
from lottery_tf.train.callbacks import LotteryCallback, model_weights


def _config(tmp, **overrides):
    return tiny_config(**{"iterations": 30, "output_dir": os.path.join(tmp, "run"), **overrides})


def _tree_digest(path):
    digest = hashlib.sha256()
    for name in sorted(glob.glob(os.path.join(path, "**"), recursive=True)):
        digest.update(name.encode())
        if os.path.isfile(name):
            with open(name, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()


def _without_times(metrics):
    return [{k: v for k, v in m.items() if k != "wall_time_s"} for m in metrics]



def _evaluator(model, dataset):
    return Evaluator(model, {"val": dataset.validation, "test": dataset.test})

class _Crash(Exception):
    pass


class RunnerTest(tf.test.TestCase):
    def test_rounds_prune_each_group_at_its_rate(self):
        tmp = self.get_temp_dir()
        with mock_tfds():
            results = runner.run(_config(tmp, rounds=3), progress=lambda line: None)
        self.assertEqual([m["round"] for m in results], [0, 1, 2])
        run = RunDir(os.path.join(tmp, "run"))
        expected_alive = {"fc1": 235200, "fc2": 30000, "output": 1000}
        rates = {"fc1": 0.2, "fc2": 0.2, "output": 0.1}
        for r in range(4):  # round 3's mask is written at the end of round 2
            masks = read_arrays(run.mask_path(r))
            for name, alive in expected_alive.items():
                self.assertEqual(int(masks[name].sum()), alive, (r, name))
                expected_alive[name] = alive - int(np.floor(rates[name] * alive + 0.5))
        self.assertAllClose(results[2]["remaining_pct_by_layer"]["output"], 81.0)
        self.assertAllClose(results[2]["remaining_pct_by_layer"]["fc1"], 64.0)
        # Pruned positions are exactly zero in the weights each round trained.
        for r in range(3):
            masks = read_arrays(run.mask_path(r))
            weights = read_arrays(run.weights_path(r))
            for name, mask in masks.items():
                self.assertAllEqual(weights[f"{name}/kernel"][mask == 0], np.zeros(int((mask == 0).sum())))
        with open(run.summary_path) as f:
            rows = f.read().splitlines()
        self.assertLen(rows, 4)
        self.assertStartsWith(rows[0], "round,remaining_pct,early_stop_iteration,")
        metrics = read_json(run.metrics_path(1))
        self.assertEqual([p["iteration"] for p in metrics["curve"]], [10, 20, 30])
        best = min(metrics["curve"], key=lambda p: p["val_loss"])
        self.assertEqual(metrics["early_stop_iteration"], best["iteration"])
        self.assertEqual(metrics["early_stop_test_accuracy"], best["test_accuracy"])

    def test_resumed_run_equals_uninterrupted_run(self):
        tmp = self.get_temp_dir()
        with mock_tfds():
            reference = runner.run(_config(tmp, rounds=3, output_dir=os.path.join(tmp, "a")),
                                   progress=lambda line: None)

            def crash_after_round_1(line):
                if line.startswith("round 1 "):
                    raise _Crash()

            interrupted = _config(tmp, rounds=3, output_dir=os.path.join(tmp, "b"))
            with self.assertRaises(_Crash):
                runner.run(interrupted, progress=crash_after_round_1)
            self.assertFalse(RunDir(interrupted.output_dir).round_complete(2))
            lines = []
            resumed = runner.run(interrupted, progress=lines.append)
        self.assertLen(lines, 3)
        self.assertEqual([line.endswith(" [saved]") for line in lines], [True, True, False])
        # Rounds 0 and 1 were read back, not retrained.
        self.assertEqual(_without_times(resumed), _without_times(reference))
        self.assertEqual(resumed[1]["wall_time_s"], read_json(
            RunDir(interrupted.output_dir).metrics_path(1))["wall_time_s"])
        for r in range(4):
            a = read_arrays(RunDir(os.path.join(tmp, "a")).mask_path(r))
            b = read_arrays(RunDir(os.path.join(tmp, "b")).mask_path(r))
            for name in a:
                self.assertAllEqual(a[name], b[name])

    def test_other_hyperparameters_are_refused_and_nothing_changes(self):
        tmp = self.get_temp_dir()
        with mock_tfds():
            runner.run(_config(tmp, rounds=1), progress=lambda line: None)
            before = _tree_digest(os.path.join(tmp, "run"))
            with self.assertRaisesRegex(errors.LotteryError, r"other hyperparameters: learning_rate=0.0012 \(now 0.1\)"):
                runner.run(_config(tmp, rounds=2, learning_rate=0.1), progress=lambda line: None)
        self.assertEqual(_tree_digest(os.path.join(tmp, "run")), before)

    def test_one_shot_prunes_to_the_target_in_one_step(self):
        tmp = self.get_temp_dir()
        with mock_tfds():
            results = runner.run(_config(tmp, rounds=2, one_shot_sparsity=0.9), progress=lambda line: None)
        self.assertLen(results, 2)
        self.assertAllClose(results[1]["remaining_pct"], 10.0, atol=0.01)
        by_layer = results[1]["remaining_pct_by_layer"]
        self.assertAllClose(by_layer["fc1"], by_layer["fc2"], atol=0.01)
        self.assertGreater(by_layer["output"], by_layer["fc1"])
        self.assertFalse(os.path.exists(RunDir(os.path.join(tmp, "run")).mask_path(2)))


class RoundMechanicsTest(tf.test.TestCase):
    def _model_and_data(self):
        dataset = data.load("mnist", validation_size=60)
        model = models.build("lenet_300_100", dataset.input_shape, dataset.num_classes, seed=5)
        training.compile_model(model, optimizers.make_optimizer("adam", 1e-3), jit_compile=True, steps_per_execution=5)
        return model, dataset

    def test_round_start_restores_theta0_bitwise_under_the_mask(self):
        with mock_tfds():
            model, dataset = self._model_and_data()
            theta0 = {k: v.numpy() for k, v in model_weights(model).items()}
            rng = np.random.default_rng(0)
            masks = {l.name: (rng.random(l.kernel.shape) < 0.3).astype(np.float32) for l in masked_layers(model)}
            training.train_round(model, dataset.train(16, seed=1), _evaluator(model, dataset),
                                 20, 10, [LotteryCallback(theta0, masks)], verbose=0)
            self.assertGreater(model.optimizer.iterations.numpy(), 0)
            # A round start on a trained model: θ0 comes back exactly.
            callback = LotteryCallback(theta0, masks)
            callback.set_model(model)
            callback.on_train_begin()
        for key, variable in model_weights(model).items():
            layer = key.split("/")[0]
            expected = theta0[key] * masks[layer] if key.endswith("/kernel") else theta0[key]
            self.assertAllEqual(variable.numpy(), expected, key)
        for variable in model.optimizer.variables:
            self.assertAllEqual(variable.numpy(), np.zeros(variable.shape), variable.name)

    def test_rounds_reuse_the_compiled_train_function(self):
        with mock_tfds():
            model, dataset = self._model_and_data()
            theta0 = {k: v.numpy() for k, v in model_weights(model).items()}
            masks = {l.name: np.ones(l.kernel.shape, np.float32) for l in masked_layers(model)}
            tracings = []
            for r in range(3):
                training.train_round(model, dataset.train(16, seed=r), _evaluator(model, dataset),
                                     20, 10, [LotteryCallback(theta0, masks)], verbose=0)
                tracings.append(model.train_tf_function.experimental_get_tracing_count())
        self.assertEqual(tracings[1], tracings[0])
        self.assertEqual(tracings[2], tracings[0])


class RunDirectoryTest(tf.test.TestCase):
    def test_default_run_directory_is_named_from_hyperparameters(self):
        a = RunDir.for_config(Config(seed=1)).path
        self.assertEqual(RunDir.for_config(Config(seed=1, rounds=7, jit_compile=False)).path, a)
        self.assertNotEqual(RunDir.for_config(Config(seed=2)).path, a)
        self.assertStartsWith(os.path.basename(a), "lenet_300_100_mnist_")

    def test_half_written_files_never_replace_good_ones(self):
        path = os.path.join(self.get_temp_dir(), "m.json")
        storage.write_json(path, {"ok": 1})

        class Boom(Exception):
            pass

        original = os.fsync
        def failing_fsync(fd):
            raise Boom()
        os.fsync = failing_fsync
        try:
            with self.assertRaises(Boom):
                storage.write_json(path, {"ok": 2})
        finally:
            os.fsync = original
        self.assertEqual(read_json(path), {"ok": 1})
        self.assertEqual(sorted(os.listdir(os.path.dirname(path))), ["MANIFEST.json", "m.json"])
