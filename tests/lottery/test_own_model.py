"""IMP on the user's own model and data: by import path from the command line,
by object from Python; killed and resumed, branched, exported."""

import os

import numpy as np
import tensorflow as tf

import own_fixtures
from conftest import run_cli, tiny_config, tiny_flags
from lottery_tf import Config, errors, export, run_branch, sources
from lottery_tf.lottery import runner
from lottery_tf.lottery.run_dir import RunDir
from lottery_tf.lottery.storage import read_arrays, read_json
from test_recovery import _fault as _killed_at
from test_recovery import _Killed

# No XLA, one step per call: what these tests check does not depend on them.
FLAGS = tiny_flags(iterations=10, eval_every=5, rounds=2, checkpoint_every=5,
                   steps_per_execution=1, jit_compile="false", validation_size=40)
OWN = ["--model=own_fixtures:residual_cnn", "--dataset=own_fixtures:blobs"]


def _results(path):
    run = RunDir(path)
    masks = [read_arrays(run.mask_path(r)) for r in range(3)]
    metrics = [{k: v for k, v in read_json(run.metrics_path(r)).items() if k != "wall_time_s"}
               for r in range(2)]
    return masks, metrics, [read_arrays(run.weights_path(r)) for r in range(2)]


class CommandLineTest(tf.test.TestCase):
    def _train(self, path, *extra):
        status, out, err = run_cli(OWN + FLAGS + [f"--output_dir={path}", *extra])
        self.assertEqual(status, 0, err)
        return out

    def test_import_path_run_killed_and_resumed_gives_the_same_result(self):
        tmp = self.get_temp_dir()
        reference, killed = os.path.join(tmp, "reference"), os.path.join(tmp, "killed")
        self._train(reference)
        # mid_fit:2 is round 1's checkpoint at iteration 5: round 0 done, round 1 half.
        with _killed_at("mid_fit:2"), self.assertRaises(_Killed):
            run_cli(OWN + FLAGS + [f"--output_dir={killed}"])
        self.assertTrue(RunDir(killed).round_complete(0))
        self.assertFalse(RunDir(killed).round_complete(1))
        out = self._train(killed)
        self.assertIn("[saved]", out.splitlines()[0])
        want, got = _results(reference), _results(killed)
        for r in range(3):
            for name in want[0][r]:
                self.assertAllEqual(got[0][r][name], want[0][r][name])
        self.assertEqual(got[1], want[1])
        for r in range(2):
            for key in want[2][r]:
                self.assertAllEqual(got[2][r][key], want[2][r][key], key)
        config = read_json(RunDir(killed).config_path)
        self.assertEqual((config["model"], config["dataset"]),
                         ("own_fixtures:residual_cnn", "own_fixtures:blobs"))
        # Pruned kernels stay exactly 0 through round 1's training (batch norm and dropout around them).
        masks, weights = got[0][1], got[2][1]
        for name, mask in masks.items():
            self.assertLess(mask.mean(), 1.0)
            self.assertAllEqual(weights[f"{name}/kernel"][mask == 0], np.zeros(int((mask == 0).sum())))
        # Batch norm folded, the residual Add compacted, dropout dropped: exported and verified.
        status, out, err = run_cli(["export", f"--run={killed}", "--round=last",
                                    f"--output={os.path.join(tmp, 'export')}"])
        self.assertEqual(status, 0, err)
        self.assertIn("verified on 40 own_fixtures:blobs test images + 64 random images", out)
        self.assertIn("class ids identical", out)

    def test_branch_and_verified_export_of_an_import_path_run(self):
        tmp = self.get_temp_dir()
        path, output = os.path.join(tmp, "plain"), os.path.join(tmp, "plain_export")
        self._train(path, "--model=own_fixtures:plain_cnn")
        status, out, err = run_cli(["branch", f"--run_dir={path}", "--branch=random_reinit"])
        self.assertEqual(status, 0, err)
        self.assertIn("random_reinit_seed1 round_001", out)
        reinit = read_arrays(os.path.join(path, "branches", "random_reinit_seed1", "theta0.npz"))
        theta0 = read_arrays(RunDir(path).theta0_path)
        self.assertNotAllClose(reinit["conv/kernel"], theta0["conv/kernel"])  # the seed reaches the function
        status, out, err = run_cli(["export", f"--run={path}", "--round=last", f"--output={output}"])
        self.assertEqual(status, 0, err)
        # Verified on the run's own test examples (from the dataset function), not only random ones.
        self.assertIn("verified on 40 own_fixtures:blobs test images + 64 random images", out)
        self.assertIn("class ids identical", out)
        serve = tf.saved_model.load(output).signatures["serving_default"]
        images = own_fixtures._examples(5, 2).batch(5).get_single_element()[0]
        # The masked model, rebuilt from the recorded import path with the round's weights.
        model = export.keras_model(export.load_ticket(path, "last"))
        self.assertAllClose(serve(image=images)["logits"], model(images), atol=1e-5)

    def test_bad_import_paths_are_one_line_errors(self):
        tmp = self.get_temp_dir()
        cases = [
            (["--model=own_fixtures:nope"], "--model=own_fixtures:nope: module 'own_fixtures' has no 'nope'"),
            (["--model=no_such_module:f"], "cannot import 'no_such_module' (ModuleNotFoundError"),
            (["--dataset=own_fixtures:plain_cnn"], "its parameter 'input_shape' is not one lottery-tf passes"),
            (["--dataset=own_fixtures:SHAPE"], "gave a tuple, not a lottery_tf.Data"),
        ]
        for args, expected in cases:
            path = os.path.join(tmp, "bad")
            status, _, err = run_cli(OWN + FLAGS + args + [f"--output_dir={path}"])
            self.assertEqual(status, 2, args)
            self.assertEqual(err.count("\n"), 1, err)
            self.assertIn(expected, err)
            self.assertFalse(os.path.exists(os.path.join(path, "config.json")), args)


class PythonTest(tf.test.TestCase):
    def test_function_and_data_objects_then_a_branch_in_another_process(self):
        path = os.path.join(self.get_temp_dir(), "py")
        config = tiny_config(iterations=10, eval_every=5, rounds=2, validation_size=40, output_dir=path)
        data = own_fixtures.blobs(0)
        results = runner.run(config, progress=lambda line: None, model=own_fixtures.plain_cnn, data=data)
        self.assertLen(results, 2)
        recorded = read_json(RunDir(path).config_path)
        self.assertEqual((recorded["model"], recorded["dataset"]), ("own_fixtures:plain_cnn", "python:data"))
        # A new process no longer holds the Data object: one line saying what to do, then doing it.
        sources._OBJECTS.pop("python:data")
        with self.assertRaisesRegex(errors.LotteryError, r"pass it again .*run_branch\(\.\.\., data=\.\.\.\)"):
            run_branch(path, "random_pruning", progress=lambda line: None)
        self.assertLen(run_branch(path, "random_pruning", rounds=[1], progress=lambda line: None, data=data), 1)

    def test_built_model_weights_are_theta0(self):
        path = os.path.join(self.get_temp_dir(), "built")
        built = own_fixtures.plain_cnn(own_fixtures.SHAPE, 2, seed=7)
        config = tiny_config(iterations=10, eval_every=5, rounds=1, validation_size=40, output_dir=path)
        runner.run(config, progress=lambda line: None, model=built, data=own_fixtures.blobs)
        theta0 = read_arrays(RunDir(path).theta0_path)
        for variable in built.weights:
            self.assertAllEqual(theta0[variable.name.split(":")[0]], variable.numpy())
        self.assertEqual(read_json(RunDir(path).config_path)["model"], "python:plain")


    def test_the_dataset_functions_loss_is_the_training_loss(self):
        config = tiny_config(model="own_fixtures:plain_cnn", dataset="own_fixtures:blobs_half_loss",
                             validation_size=40, iterations=10)
        model = runner.setup(config).model
        self.assertIsInstance(model.loss, own_fixtures.HalfLoss)
        x, y = own_fixtures._examples(40, 1).batch(40).get_single_element()
        full = tf.nn.sparse_softmax_cross_entropy_with_logits(y, model(x))
        self.assertAllClose(model.evaluate(x, y, verbose=0)[0], 0.5 * float(tf.reduce_mean(full)), rtol=1e-5)


class RunNameTest(tf.test.TestCase):
    def test_registry_names_keep_their_run_directory_names(self):
        self.assertEqual(Config().default_run_name(), "lenet_300_100_mnist_aa2189c37c7d")
        own = Config(model="my.models:residual_cnn", dataset="my.data:records")
        self.assertRegex(own.default_run_name(), r"^residual_cnn_records_[0-9a-f]{12}$")
        self.assertNotEqual(own.hyperparameter_hash(),
                            Config(model="other:residual_cnn", dataset="my.data:records").hyperparameter_hash())
