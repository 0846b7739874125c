"""IMP on the user's own model and data: by import path from the command line,
by object from Python; killed and resumed, branched, exported."""

import contextlib
import os
import shutil
from unittest import mock

import numpy as np
import tensorflow as tf

import own_fixtures
from conftest import TINY, run_cli, tiny_config, tiny_flags
from lottery_tf import Config, errors, faults, sources
from lottery_tf.lottery import runner
from lottery_tf.lottery.run_dir import RunDir
from lottery_tf.lottery.storage import read_arrays, read_json

# No XLA, one step per call: what these tests check does not depend on them.
FLAGS = tiny_flags(iterations=10, eval_every=5, rounds=2, checkpoint_every=5,
                   steps_per_execution=1, jit_compile="false", validation_size=40)
OWN = ["--model=own_fixtures:residual_cnn", "--dataset=own_fixtures:blobs"]


class _Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so no handler of ours catches it."""


@contextlib.contextmanager
def _killed_at(spec):
    faults.reset()

    def die():
        raise _Killed(spec)

    with mock.patch.dict(os.environ, {"LOTTERY_TF_FAULT": spec}), mock.patch.object(faults, "die", die):
        yield
    faults.reset()


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
