"""--block: scores pooled per block, whole blocks pruned, rates counting weights."""

import os

import numpy as np
import tensorflow as tf

from conftest import mock_tfds, tiny_config
from lottery_tf import errors
from lottery_tf.config import Config
from lottery_tf.lottery import runner
from lottery_tf.lottery.run_dir import RunDir
from lottery_tf.lottery.storage import read_arrays
from lottery_tf.pruning import Pruner, PruningContext, blocks, selection


def _pruner(fractions, block, scope="layerwise", criterion="magnitude"):
    return Pruner(criterion, scope, fractions, Config(block=block))


class BlockScoresTest(tf.test.TestCase):
    def test_a_block_is_four_consecutive_inputs_of_one_unit(self):
        # Keras Dense kernel [in=8, out=2]: the blocks of unit 0 are rows 0-3 and 4-7 of column 0.
        kernel = np.zeros((8, 2), np.float32)
        kernel[0:4, 0] = [1, -1, 1, -1]      # block (0, 0): mean |w| 1
        kernel[4:8, 0] = [0.1, 0.2, 0.3, 0.4]  # block (1, 0): 0.25
        kernel[0:4, 1] = [3, 0, 0, 0]        # block (0, 1): 0.75
        kernel[4:8, 1] = [0.5, 0.5, 0.5, 0.5]  # block (1, 1): 0.5
        scores, masks, weights = blocks.pool({"fc": np.abs(kernel)}, {"fc": np.ones_like(kernel)}, 4)
        self.assertAllClose(scores["fc"], [[1.0, 0.75], [0.25, 0.5]])
        self.assertAllEqual(weights["fc"], [[4, 4], [4, 4]])
        new = _pruner({"fc": 0.5}, "1x4")(PruningContext(
            masks={"fc": np.ones_like(kernel)}, trained={"fc": kernel}))["fc"]
        # Half the weights = the two lowest blocks, (1, 0) and (1, 1): the lower half of both columns,
        # although kernel[0, 1] = 3 is the largest weight and 0.5 > 0.4 elsewhere.
        self.assertAllEqual(new, [[1, 1]] * 4 + [[0, 0]] * 4)

    def test_conv_blocks_run_along_input_channels_and_short_blocks_average(self):
        # Conv kernel [kh=1, kw=2, in=6, out=1], 1x4: per tap, channels 0-3 and the short block 4-5.
        kernel = np.zeros((1, 2, 6, 1), np.float32)
        kernel[0, 0, :, 0] = [1, 1, 1, 1, 2, 2]
        kernel[0, 1, :, 0] = [0.5, 0.5, 0.5, 0.5, 0.9, 0.1]
        mask = np.ones_like(kernel)
        mask[0, 1, 5, 0] = 0                 # a pruned weight does not count in its block's mean
        scores, block_masks, weights = blocks.pool({"c": np.abs(kernel)}, {"c": mask}, 4)
        self.assertAllClose(scores["c"][0, :, :, 0], [[1.0, 2.0], [0.5, 0.9]])
        self.assertAllEqual(weights["c"][0, :, :, 0], [[4, 2], [4, 1]])
        self.assertAllEqual(block_masks["c"][0, :, :, 0], [[1, 1], [1, 1]])
        spread = blocks.expand({"c": np.array([[[[0], [1]], [[1], [0]]]], np.float32)}, {"c": mask}, 4)
        self.assertAllEqual(spread["c"][0, :, :, 0], [[0, 0, 0, 0, 1, 1], [1, 1, 1, 1, 0, 0]])

    def test_signed_scores_keep_their_sign(self):
        scores = np.array([[-1.0], [-1.0], [3.0], [3.0]], np.float32)  # one block of 4: mean 1
        pooled, _, _ = blocks.pool({"a": scores}, {"a": np.ones((4, 1))}, 4)
        self.assertAllClose(pooled["a"], [[1.0]])


class BlockCountsTest(tf.test.TestCase):
    def test_rates_count_weights_not_blocks(self):
        rng = np.random.default_rng(3)
        # 100 inputs: 25 blocks of 4, or 6 of 16 and a short one of 4, per unit.
        kernel = rng.normal(size=(100, 10)).astype(np.float32)
        for block, fraction, want in (("1x4", 0.1, 100), ("1x4", 0.2, 200), ("1x16", 0.2, 196)):
            mask = _pruner({"o": fraction}, block)(PruningContext(
                masks={"o": np.ones_like(kernel)}, trained={"o": kernel}))["o"]
            self.assertEqual(int(mask.size - mask.sum()), want, (block, fraction))

    def test_a_count_between_two_block_sums_takes_the_closer_then_the_fewer(self):
        self.assertEqual(selection.units_to_prune(0.5, np.array([4, 4, 4])), 1)   # k=6: 4 or 8, a tie -> 4
        self.assertEqual(selection.units_to_prune(0.6, np.array([4, 4, 4, 4, 4])), 3)  # k=12
        self.assertEqual(selection.units_to_prune(0.55, np.array([4, 4, 4, 4, 4])), 3)  # k=11
        self.assertEqual(selection.units_to_prune(0.45, np.array([4, 4, 4, 4, 4])), 2)  # k=9: 8
        self.assertEqual(selection.units_to_prune(0.4, np.array([1, 1, 1, 1, 1])), 2)   # as today
        self.assertEqual(selection.units_to_prune(0.1, np.array([16, 4])), 0)  # k=2: 0 beats 16

    def test_ties_break_by_block_index_in_both_scopes(self):
        kernels = {"a": np.ones((8, 2), np.float32), "b": np.ones((4, 2), np.float32)}
        masks = {name: np.ones_like(k) for name, k in kernels.items()}
        layerwise = _pruner({"a": 0.5, "b": 0.5}, "1x4")(PruningContext(masks=masks, trained=kernels))
        # Blocks of `a` in C order of the block grid: (0,0), (0,1), (1,0), (1,1): the first two go.
        self.assertAllEqual(layerwise["a"], [[0, 0]] * 4 + [[1, 1]] * 4)
        self.assertAllEqual(layerwise["b"], [[0, 1]] * 4)
        glob = _pruner({"a": 0.5, "b": 0.5}, "1x4", scope="global")(
            PruningContext(masks=masks, trained=kernels))
        # 12 of 24 weights = 3 blocks; all tied: layer order first, so all of them from `a`.
        self.assertAllEqual(glob["a"], [[0, 0]] * 4 + [[0, 1]] * 4)
        self.assertAllEqual(glob["b"], masks["b"])

    def test_global_scope_ranks_blocks_across_layers_counting_weights(self):
        rng = np.random.default_rng(5)
        kernels = {"a": rng.normal(size=(32, 8)).astype(np.float32),
                   "b": 3 * rng.normal(size=(20, 4)).astype(np.float32)}
        masks = {name: np.ones_like(k) for name, k in kernels.items()}
        new = _pruner({"a": 0.3, "b": 0.3}, "1x4", scope="global")(
            PruningContext(masks=masks, trained=kernels))
        pruned = sum(int(m.size - m.sum()) for m in new.values())
        self.assertEqual(pruned, 4 * round(0.3 * 336 / 4))  # 100.8 -> 101 weights -> 25 blocks
        pooled, _, _ = blocks.pool({n: np.abs(k) for n, k in kernels.items()}, masks, 4)
        cut = max(pooled[n][new[n][::4] == 0].max() for n in new)
        kept = min(pooled[n][new[n][::4] == 1].min() for n in new)
        self.assertLess(cut, kept)  # one threshold across both layers
        for name, mask in new.items():
            self.assertTrue(blocks.aligned(mask, 4), name)

    def test_masks_stay_block_aligned_over_rounds_and_criteria(self):
        rng = np.random.default_rng(7)
        shapes = {"conv": (3, 3, 6, 8), "fc": (300, 100), "output": (100, 10)}
        fractions = {"conv": 0.1, "fc": 0.2, "output": 0.1}
        for block, size in (("1x4", 4), ("1x16", 16)):
            for criterion in ("magnitude", "movement", "random"):
                masks = {n: np.ones(s, np.float32) for n, s in shapes.items()}
                init = {n: rng.normal(size=s).astype(np.float32) for n, s in shapes.items()}
                alive = {n: m.size for n, m in masks.items()}
                for _ in range(6):
                    trained = {n: rng.normal(size=s).astype(np.float32) for n, s in shapes.items()}
                    new = _pruner(fractions, block, criterion=criterion)(PruningContext(
                        masks=masks, trained=trained, init=init, seed=1))
                    for name, mask in new.items():
                        self.assertTrue(blocks.aligned(mask, size), (block, criterion, name))
                        self.assertFalse(np.any(mask > masks[name]))  # nothing comes back
                        want = selection.count_to_prune(fractions[name], alive[name])
                        got = alive[name] - int(mask.sum())
                        self.assertLessEqual(abs(got - want), size / 2, (block, criterion, name))
                        alive[name] = int(mask.sum())
                    masks = new

    def test_rescoring_criteria_prune_blocks_on_their_schedule(self):
        # SynFlow-style: `iterated` re-scores between steps; the global pool survives blockwise.
        rng = np.random.default_rng(2)
        masks = {"a": np.ones((64, 8), np.float32), "b": np.ones((32, 4), np.float32)}
        fixed = {n: rng.random(m.shape) for n, m in masks.items()}
        select = blocks.blockwise(selection.SCOPES.get("global"), 4)
        self.assertTrue(select.pooled)
        new = selection.iterated(select, lambda current: fixed, masks, {"a": 0.5, "b": 0.5}, 3)
        self.assertEqual(sum(int(m.sum()) for m in new.values()), 320)  # 640 -> 320, whole blocks
        for name, mask in new.items():
            self.assertTrue(blocks.aligned(mask, 4), name)

    def test_none_is_the_unstructured_selection(self):
        rng = np.random.default_rng(11)
        kernels = {"fc": rng.normal(size=(40, 12)).astype(np.float32),
                   "output": rng.normal(size=(12, 3)).astype(np.float32)}
        masks = {n: (rng.random(k.shape) > 0.3).astype(np.float32) for n, k in kernels.items()}
        context = PruningContext(masks=masks, trained=kernels)
        for scope, fractions in (("layerwise", {"fc": 0.2, "output": 0.1}),
                                 ("global", {"fc": 0.2, "output": 0.2})):
            want = selection.SCOPES.get(scope)({n: np.abs(k) for n, k in kernels.items()},
                                               masks, fractions)
            for got in (_pruner(fractions, "none", scope)(context),
                        Pruner("magnitude", scope, fractions)(context)):
                for name in want:
                    self.assertAllEqual(got[name], want[name])

    def test_random_controls_place_whole_blocks(self):
        from lottery_tf.lottery.branches.random_pruning import random_masks_like

        rng = np.random.default_rng(0)
        # A 1x4 ticket: 10 inputs (a short last block of 2), 3 units; conv: 8 input channels.
        block_masks = {"fc": (rng.random((3, 3)) < 0.5).astype(np.float32),
                       "conv": (rng.random((2, 2, 2, 4)) < 0.5).astype(np.float32)}
        ones = {"fc": np.ones((10, 3), np.float32), "conv": np.ones((2, 2, 8, 4), np.float32)}
        ticket = blocks.expand(block_masks, ones, 4)
        shuffled = random_masks_like(ticket, [3, 1], "1x4")
        for name, mask in shuffled.items():
            self.assertTrue(blocks.aligned(mask, 4), name)
            _, kept, _ = blocks.pool({name: mask}, {name: mask}, 4)
            self.assertEqual(int(kept[name].sum()), int(block_masks[name].sum()), name)
            self.assertNotAllEqual(mask, ticket[name])
        self.assertAllEqual(random_masks_like(ticket, [3, 1], "1x4")["fc"], shuffled["fc"])  # seeded
        unstructured = random_masks_like(ticket, [3, 1])
        self.assertFalse(all(blocks.aligned(m, 4) for m in unstructured.values()))

    def test_unknown_block_is_refused_in_one_line(self):
        with self.assertRaisesRegex(errors.LotteryError, "unknown block shape '2x2'; known: 1x16, 1x4, none"):
            Config(block="2x2").check_choices()


class BlockRunTest(tf.test.TestCase):
    def test_block_run_resumes_identically_and_stays_aligned(self):
        tmp = self.get_temp_dir()

        class Crash(Exception):
            pass

        def crash_after_round_0(line):
            if line.startswith("round 0 "):
                raise Crash()

        def config(name):
            return tiny_config(iterations=10, rounds=2, block="1x4", fc_rate=0.5, output_rate=0.3,
                               output_dir=os.path.join(tmp, name))

        with mock_tfds():
            reference = runner.run(config("a"), progress=lambda line: None)
            with self.assertRaises(Crash):
                runner.run(config("b"), progress=crash_after_round_0)
            resumed = runner.run(config("b"), progress=lambda line: None)
        strip = lambda rows: [{k: v for k, v in m.items() if k != "wall_time_s"} for m in rows]  # noqa: E731
        self.assertEqual(strip(resumed), strip(reference))
        for r in range(3):
            a = read_arrays(RunDir(os.path.join(tmp, "a")).mask_path(r))
            b = read_arrays(RunDir(os.path.join(tmp, "b")).mask_path(r))
            for name in a:
                self.assertAllEqual(a[name], b[name])
                self.assertTrue(blocks.aligned(a[name], 4), (r, name))
        last = read_arrays(RunDir(os.path.join(tmp, "a")).mask_path(2))
        self.assertEqual(int(last["fc1"].sum()), 235200 // 4)  # 0.5 twice, in whole blocks
        # 1000 -> 700, then 210 = 52.5 blocks to prune: the tie goes to the fewer, 52 (208 weights).
        self.assertEqual(int(last["output"].sum()), 492)
        self.assertNotEqual(Config(block="1x4").hyperparameter_hash(), Config().hyperparameter_hash())

    def test_a_block_run_is_its_own_report_series(self):
        from lottery_tf.lottery import branches

        self.assertEqual(branches.main_line_series({}), "imp")
        self.assertEqual(branches.main_line_series({"block": "1x4"}), "imp:1x4 blocks")
        self.assertEqual(branches.main_line_series({"criterion": "movement", "block": "1x16"}),
                         "imp:movement, 1x16 blocks")
        self.assertEqual(branches.BRANCHES.get("random_reinit").series({}, {"block": "1x4"}),
                         "random_reinit:1x4 blocks")
        self.assertEqual(branches.series_label("imp:1x4 blocks"), "IMP (winning tickets): 1x4 blocks")
