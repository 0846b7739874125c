import glob
import hashlib
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from conftest import mock_tfds, tiny_config
from lottery_tf import errors
from lottery_tf.lottery import branches
from lottery_tf.lottery import runner
from lottery_tf.lottery.branches.random_pruning import random_masks_like
from lottery_tf.lottery.run_dir import RunDir
from lottery_tf.lottery.storage import read_arrays


def _main_line_digest(path):
    digest = hashlib.sha256()
    for name in sorted(glob.glob(os.path.join(path, "**"), recursive=True)):
        if os.sep + "branches" in name[len(path):] or not os.path.isfile(name):
            continue
        digest.update(name.encode())
        with open(name, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


class BranchesTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp(prefix="lottery_branches_")
        cls.run_path = os.path.join(cls.tmp, "run")
        with mock_tfds():
            runner.run(tiny_config(iterations=30, rounds=3, output_dir=cls.run_path), progress=lambda line: None)
        cls.main_digest = _main_line_digest(cls.run_path)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def _branch(self, kind, **kwargs):
        with mock_tfds():
            return branches.run_branch(self.run_path, kind, progress=lambda line: None, **kwargs)

    def test_random_reinit_same_masks_other_init_main_line_untouched(self):
        results = self._branch("random_reinit", rounds=[1, 2], seed=7)
        self.assertEqual([m["round"] for m in results], [1, 2])
        main, branch = RunDir(self.run_path), RunDir(os.path.join(self.run_path, "branches", "random_reinit_seed7"))
        for r in (1, 2):
            mask = read_arrays(os.path.join(branch.round_dir(r), "mask.npz"))
            for name, m in read_arrays(main.mask_path(r)).items():
                self.assertAllEqual(mask[name], m)
        theta0, reinit = read_arrays(main.theta0_path), read_arrays(branch.theta0_path)
        self.assertNotAllClose(theta0["fc1/kernel"], reinit["fc1/kernel"])
        # Same initializer: same scale.
        self.assertAllClose(np.std(theta0["fc1/kernel"]), np.std(reinit["fc1/kernel"]), rtol=0.02)
        self.assertEqual(_main_line_digest(self.run_path), self.main_digest)
        # Resuming: nothing is retrained.
        again = self._branch("random_reinit", rounds=[1, 2], seed=7)
        self.assertEqual(again, results)

    def test_random_pruning_keeps_per_layer_counts(self):
        self._branch("random_pruning", rounds=[2], seed=3)
        main = RunDir(self.run_path)
        entry = os.path.join(self.run_path, "branches", "random_pruning_seed3", "round_002")
        random_masks = read_arrays(os.path.join(entry, "mask.npz"))
        for name, ticket in read_arrays(main.mask_path(2)).items():
            self.assertEqual(int(random_masks[name].sum()), int(ticket.sum()), name)
            self.assertNotAllClose(random_masks[name], ticket)
            weights = read_arrays(os.path.join(entry, "weights.npz"))[f"{name}/kernel"]
            self.assertAllEqual(weights[random_masks[name] == 0], np.zeros(int((random_masks[name] == 0).sum())))
        # Another round later: the branch's summary lists both entries, not only the last asked for.
        self._branch("random_pruning", rounds=[1], seed=3)
        with open(os.path.join(os.path.dirname(entry), "summary.csv")) as f:
            self.assertEqual([row.split(",")[0] for row in f.read().splitlines()[1:]], ["1", "2"])
        self.assertEqual(_main_line_digest(self.run_path), self.main_digest)

    def test_one_shot_reaches_targets_from_round_0(self):
        results = self._branch("one_shot", targets=[0.9, 0.5])
        self.assertEqual([m["target_sparsity"] for m in results], [0.5, 0.9])
        self.assertAllClose([m["remaining_pct"] for m in results], [50.0, 10.0], atol=0.01)
        summary = os.path.join(self.run_path, "branches", "one_shot", "summary.csv")
        with open(summary) as f:
            self.assertStartsWith(f.read(), "target_sparsity,remaining_pct,")
        self.assertEqual(_main_line_digest(self.run_path), self.main_digest)

    def test_bad_branch_requests(self):
        with self.assertRaisesRegex(errors.LotteryError, "unknown branch 'reinit'"):
            self._branch("reinit")
        with self.assertRaisesRegex(errors.LotteryError, "round 9 .* has no mask yet"):
            self._branch("random_reinit", rounds=[9])
        with self.assertRaisesRegex(errors.LotteryError, "needs --targets"):
            self._branch("one_shot")
        with self.assertRaisesRegex(errors.LotteryError, "--targets 1.5 is outside"):
            self._branch("one_shot", targets=[1.5])
        with self.assertRaisesRegex(errors.LotteryError, "holds no lottery-tf run"):
            branches.run_branch(self.tmp + "/nope", "random_reinit")
        self.assertEqual(_main_line_digest(self.run_path), self.main_digest)

    def test_random_masks_like_is_seeded(self):
        masks = {"a": (np.arange(20).reshape(4, 5) % 3 == 0).astype(np.float32)}
        a = random_masks_like(masks, [1, 2])["a"]
        self.assertAllEqual(a, random_masks_like(masks, [1, 2])["a"])
        self.assertEqual(a.sum(), masks["a"].sum())
        self.assertNotAllClose(a, random_masks_like(masks, [1, 3])["a"])
