"""environment.json: what a run ran on, one entry more when a resumed run's differs."""

import os
from unittest import mock

import tensorflow as tf

from conftest import mock_tfds, tiny_config
from lottery_tf import environment
from lottery_tf.lottery import runner
from lottery_tf.lottery.run_dir import RunDir
from lottery_tf.lottery.storage import read_json


class EnvironmentTest(tf.test.TestCase):
    def test_recorded_once_and_again_when_a_resumed_run_runs_elsewhere(self):
        path = os.path.join(self.get_temp_dir(), "run")
        with mock_tfds():
            runner.run(tiny_config(iterations=10, eval_every=5, rounds=1, output_dir=path),
                       progress=lambda line: None)
            history = read_json(RunDir(path).environment_path)
            self.assertLen(history, 1)
            recorded = history[0]["environment"]
            self.assertEqual(history[0]["from_round"], 0)
            self.assertEqual(recorded["packages"]["tensorflow"], tf.__version__)
            self.assertTrue(recorded["cpu"])
            self.assertIsInstance(recorded["cpu_features"], (list, type(None)))
            # Resumed on the same machine: nothing added.
            runner.run(tiny_config(iterations=10, eval_every=5, rounds=2, output_dir=path),
                       progress=lambda line: None)
            self.assertLen(read_json(RunDir(path).environment_path), 1)
            # Resumed where TensorFlow's kernels are set otherwise: a second entry from round 2.
            with mock.patch.dict(os.environ, {"TF_ENABLE_ONEDNN_OPTS": "1"}):
                runner.run(tiny_config(iterations=10, eval_every=5, rounds=3, output_dir=path),
                           progress=lambda line: None)
        history = read_json(RunDir(path).environment_path)
        self.assertEqual([h["from_round"] for h in history], [0, 2])
        self.assertEqual(environment.differences(history[0]["environment"], history[1]["environment"]),
                         ["variables: {} -> {'TF_ENABLE_ONEDNN_OPTS': '1'}"])


class VariablesTest(tf.test.TestCase):
    def test_thread_counts_are_recorded(self):
        # They change the float results of a seeded run (environment.VARIABLES).
        with mock.patch.dict(os.environ, {"TF_NUM_INTRAOP_THREADS": "1",
                                          "TF_NUM_INTEROP_THREADS": "2"}):
            recorded = environment.describe()["variables"]
        self.assertEqual(recorded["TF_NUM_INTRAOP_THREADS"], "1")
        self.assertEqual(recorded["TF_NUM_INTEROP_THREADS"], "2")


class DifferencesTest(tf.test.TestCase):
    def test_a_field_an_older_version_did_not_record_is_no_difference(self):
        now = environment.describe()
        older = {k: v for k, v in now.items() if k != "onednn"}
        self.assertEqual(environment.differences(older, now), [])
        changed = dict(older, cpu_count=(now["cpu_count"] or 0) + 1)
        self.assertEqual(environment.differences(changed, now),
                         [f"cpu_count: {changed['cpu_count']} -> {now['cpu_count']}"])
