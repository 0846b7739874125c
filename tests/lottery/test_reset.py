"""Reset modes (--reset): where pruned rounds start, and their learning-rate schedule."""

import os
from unittest import mock

import tensorflow as tf
import tf_keras as keras

from conftest import mock_tfds, run_cli, tiny_config
from lottery_tf import errors
from lottery_tf.config import Config
from lottery_tf.lottery import runner
from lottery_tf.lottery.run_dir import RunDir
from lottery_tf.train import fit as training
from lottery_tf.train.callbacks import model_weights


def _run_recording(path, **overrides):
    """Runs 2 rounds; returns per round (start weights, LR of step 0, LR of the last step)."""
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append({"start": {k: v.numpy() for k, v in model_weights(self.model).items()},
                         "lr": []})

        def on_train_batch_end(self, batch, logs=None):
            seen[-1]["lr"].append(float(self.model.optimizer.learning_rate.numpy()))

    real_train_round = training.train_round

    def train_round(model, train, evaluate, iterations, eval_every, callbacks, **kwargs):
        return real_train_round(model, train, evaluate, iterations, eval_every,
                                list(callbacks) + [Record()], **kwargs)

    # One step per execution: a batch callback per step, each with that step's rate.
    config = tiny_config(iterations=20, rounds=2, warmup_iterations=10, steps_per_execution=1,
                         jit_compile=False, output_dir=path, **overrides)
    with mock_tfds(), mock.patch.object(training, "train_round", train_round):
        runner.run(config, progress=lambda line: None)
    return seen


class ResetModeTest(tf.test.TestCase):
    def test_lr_rewind_keeps_the_trained_weights_and_replays_the_schedule(self):
        path = os.path.join(self.get_temp_dir(), "lr_rewind")
        rounds = _run_recording(path, reset="lr_rewind")
        run = RunDir(path)
        trained, mask = run.read_weights(0), run.load_masks(1)
        self.assertLen(rounds, 2)
        self.assertLen(rounds[1]["lr"], 20)
        # The learning rate at step 0 of round 1 is round 0's, and so is every later one.
        self.assertEqual(rounds[1]["lr"][0], rounds[0]["lr"][0])
        self.assertEqual(rounds[1]["lr"], rounds[0]["lr"])
        self.assertLess(rounds[0]["lr"][0], rounds[0]["lr"][-1])  # warmup: the schedule moves
        for key, value in rounds[1]["start"].items():
            layer, _, kind = key.partition("/")
            self.assertAllEqual(value, trained[key] * mask[layer] if kind == "kernel" else trained[key], key)

    def test_finetune_trains_at_the_schedules_final_rate(self):
        path = os.path.join(self.get_temp_dir(), "finetune")
        rounds = _run_recording(path, reset="finetune")
        self.assertEqual(rounds[1]["lr"], [rounds[0]["lr"][-1]] * 20)
        trained = RunDir(path).read_weights(0)
        self.assertAllEqual(rounds[1]["start"]["fc1/bias"], trained["fc1/bias"])

    def test_nonsense_combinations_are_one_clear_line_and_spellings_share_a_run(self):
        with self.assertRaisesRegex(errors.LotteryError, r"^--reset=rewind needs --rewind_iteration"):
            Config(reset="rewind").validate()
        with self.assertRaisesRegex(errors.LotteryError, r"^--rewind_iteration is for --reset=rewind"):
            Config(reset="lr_rewind", rewind_iteration=100).validate()
        with self.assertRaisesRegex(errors.LotteryError, "unknown reset mode 'theta'"):
            Config(reset="theta").validate().check_choices()
        # Existing run hashes stay valid: the default, and --rewind_iteration spelled either way.
        self.assertEqual(Config(reset="theta0").hyperparameter_hash(), Config().hyperparameter_hash())
        self.assertEqual(Config(reset="rewind", rewind_iteration=100).hyperparameter_hash(),
                         Config(rewind_iteration=100).hyperparameter_hash())
        self.assertNotEqual(Config(reset="lr_rewind").hyperparameter_hash(), Config().hyperparameter_hash())
        # Said explicitly on the command line, theta0 with a rewind point is refused before any file is written.
        path = os.path.join(self.get_temp_dir(), "contradiction")
        status, _, err = run_cli(["--model=lenet_300_100", "--reset=theta0", "--rewind_iteration=5",
                                  f"--output_dir={path}"])
        self.assertEqual(status, 2)
        self.assertEqual(err.count("\n"), 1, err)
        self.assertIn("--reset=theta0 restarts from θ0, but --rewind_iteration=5", err)
        self.assertFalse(os.path.exists(path))
