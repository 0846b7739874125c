"""Every criterion on hand-made tiny networks, against hand or independent numpy values.

Gradient criteria (snip, grasp, synflow) are checked against a numpy forward
and backward pass written here (and, for GraSP's Hessian-vector product, a
central finite difference of that numpy gradient), not against TensorFlow.
"""

import types

import numpy as np
import tensorflow as tf
import tf_keras as keras

from lottery_tf.nn.layers import MaskedDense
from lottery_tf.pruning import Pruner, PruningContext, criteria, selection
from lottery_tf.pruning.criteria import CRITERIA
from lottery_tf.pruning.criteria import grasp as grasp_lib
from lottery_tf.pruning.criteria.large_init_large_final import percentile_ranks

FIELDS = ("trained", "init", "model", "batch", "loss", "start", "seed")


class Guarded(PruningContext):
    """A context whose fields outside `allowed` fail the test when read."""

    def __init__(self, allowed, **fields):
        object.__setattr__(self, "_allowed", set(allowed) | {"masks"})
        super().__init__(**fields)

    def __getattribute__(self, name):
        if name in FIELDS and name not in object.__getattribute__(self, "_allowed"):
            raise AssertionError(f"the criterion read {name!r}, which it does not list in `reads`")
        return object.__getattribute__(self, name)


def _raise(*args):
    raise AssertionError("a data-free criterion asked for data")


class TrainedRoundCriteriaTest(tf.test.TestCase):
    init = {"a": np.array([[0.5, -0.2, 0.1], [0.3, -0.4, 0.05]], np.float32)}
    trained = {"a": np.array([[0.6, 0.3, -0.05], [0.1, -0.9, 0.0]], np.float32)}
    masks = {"a": np.array([[1, 1, 1], [1, 1, 0]], np.float32)}

    def _scores(self, name):
        criterion = criteria.get(name)
        context = Guarded(criterion.reads, masks=self.masks, trained=self.trained, init=self.init)
        return criterion.scores(context)["a"]

    def test_by_hand(self):
        # |wf| - |wi|, |wf - wi|, and |wf| where the sign is kept (0 where it flipped).
        self.assertAllClose(self._scores("magnitude_increase"), [[0.1, 0.1, -0.05], [-0.2, 0.5, -0.05]])
        self.assertAllClose(self._scores("movement"), [[0.1, 0.5, 0.15], [0.2, 0.5, 0.05]])
        self.assertAllClose(self._scores("large_final_same_sign"), [[0.6, 0.0, 0.0], [0.1, 0.9, 0.0]])
        self.assertAllClose(self._scores("magnitude"), np.abs(self.trained["a"]))
        self.assertAllClose(self._scores("magnitude_at_init"), np.abs(self.init["a"]))

    def test_large_init_large_final_keeps_the_common_quadrant(self):
        # Survivors (5): |wi| ranks 0.5:5, 0.2:2, 0.1:1, 0.3:3, 0.4:4 (of 5);
        # |wf| ranks 0.6:4, 0.3:3, 0.05:2, 0.1:... -> by hand below.
        scores = self._scores("large_init_large_final")
        # |wf| of survivors: 0.6, 0.3, 0.05, 0.1, 0.9 -> ranks 4, 3, 1, 2, 5.
        self.assertAllClose(scores, np.array([[4, 2, 1], [2, 4, 0]]) / 5.0)
        # Zhou et al.'s rule: keep the weights above one percentile in both; keeping 2
        # keeps those with both ranks >= 4: the first (5, 4) and the fifth (4, 5).
        mask = selection.prune_lowest(scores, self.masks["a"], 3 / 5)
        self.assertAllEqual(mask, [[1, 0, 0], [0, 1, 0]])

    def test_percentile_ranks_break_ties_by_index(self):
        ranks = percentile_ranks(np.array([0.2, 0.2, 0.1, 0.7]), np.array([1, 1, 1, 0]))
        self.assertAllClose(ranks, [2 / 3, 1.0, 1 / 3, 0.0])

    def test_random_is_seeded_and_reads_only_its_seed(self):
        criterion = criteria.get("random")
        draw = lambda seed, masks: criterion.scores(Guarded(criterion.reads, masks=masks, seed=seed))["a"]
        a = draw([1, 2], self.masks)
        self.assertAllEqual(a, draw([1, 2], self.masks))
        self.assertNotAllClose(a, draw([1, 3], self.masks))
        fewer = {"a": self.masks["a"] * np.array([[1, 1, 0], [1, 1, 1]], np.float32)}
        self.assertNotAllClose(a, draw([1, 2], fewer))  # another round: a fresh draw


def _tiny_model(activation):
    inputs = keras.Input((3,))
    h = MaskedDense(4, activation=activation, name="fc1")(inputs)
    out = MaskedDense(2, pruning_group="output", name="output")(h)
    return keras.Model(inputs, out)


class AtInitCriteriaTest(tf.test.TestCase):
    """A 3-4-2 network at hand-set start weights; the model holds other (trained) values."""

    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(5)
        self.w1 = rng.normal(size=(3, 4)).astype(np.float32)
        self.w2 = rng.normal(size=(4, 2)).astype(np.float32)
        self.b1 = rng.normal(size=4).astype(np.float32) * 0.1
        self.b2 = rng.normal(size=2).astype(np.float32) * 0.1
        self.m1 = np.ones((3, 4), np.float32)
        self.m1[0, 1] = self.m1[2, 3] = 0
        self.m2 = np.ones((4, 2), np.float32)
        self.m2[1, 0] = 0
        self.x = rng.normal(size=(5, 3)).astype(np.float32)
        self.y = np.array([0, 1, 1, 0, 1])

    def _context(self, model, **fields):
        start = {"fc1/kernel": self.w1, "fc1/bias": self.b1, "output/kernel": self.w2, "output/bias": self.b2}
        return PruningContext(
            masks={"fc1": self.m1, "output": self.m2},
            trained={"fc1": np.zeros((3, 4), np.float32), "output": np.zeros((4, 2), np.float32)},
            init={"fc1": self.w1, "output": self.w2}, model=model, start=start,
            batch=lambda: (tf.constant(self.x), tf.constant(self.y)),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), seed=0, **fields)

    def _model_holding_other_values(self, activation):
        model = _tiny_model(activation)
        model.build((None, 3))
        before = [v.numpy().copy() for v in model.weights]
        return model, before

    def _assert_restored(self, model, before):
        for v, b in zip(model.weights, before):
            self.assertAllEqual(v.numpy(), b, v.name)

    # --- an independent numpy network ---

    def _numpy_grads(self, w1, w2, temperature=1.0):
        """d mean-CE(softmax(logits / T)) / d kernel of the tanh network, float64."""
        x, b1, b2 = self.x.astype(np.float64), self.b1, self.b2
        e1, e2 = w1 * self.m1, w2 * self.m2
        h = np.tanh(x @ e1 + b1)
        z = (h @ e2 + b2) / temperature
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        dz = (p - np.eye(2)[self.y]) / (len(self.y) * temperature)
        g2 = h.T @ dz
        g1 = x.T @ ((dz @ e2.T) * (1 - h ** 2))
        return g1 * self.m1, g2 * self.m2

    def test_snip(self):
        model, before = self._model_holding_other_values("tanh")
        criterion = criteria.get("snip")
        scores = criterion.scores(Guarded(criterion.reads, **vars(self._context(model))))
        g1, g2 = self._numpy_grads(self.w1.astype(np.float64), self.w2.astype(np.float64))
        self.assertAllClose(scores["fc1"], np.abs(g1 * self.w1 * self.m1), rtol=1e-4, atol=1e-7)
        self.assertAllClose(scores["output"], np.abs(g2 * self.w2 * self.m2), rtol=1e-4, atol=1e-7)
        self._assert_restored(model, before)

    def test_grasp_is_w_times_hessian_gradient_product(self):
        model, before = self._model_holding_other_values("tanh")
        criterion = criteria.get("grasp")
        scores = criterion.scores(Guarded(criterion.reads, **vars(self._context(model))))
        t = grasp_lib.TEMPERATURE
        w1, w2 = self.w1.astype(np.float64), self.w2.astype(np.float64)
        g1, g2 = self._numpy_grads(w1, w2, t)
        # Hg by a central difference of the numpy gradient along g.
        norm = np.sqrt((g1 ** 2).sum() + (g2 ** 2).sum())
        eps = 1e-3 / norm
        plus = self._numpy_grads(w1 + eps * g1, w2 + eps * g2, t)
        minus = self._numpy_grads(w1 - eps * g1, w2 - eps * g2, t)
        hg1, hg2 = ((p - m) / (2 * eps) for p, m in zip(plus, minus))
        self.assertAllClose(scores["fc1"], w1 * self.m1 * hg1, rtol=2e-3, atol=1e-3 * np.abs(w1 * hg1).max())
        self.assertAllClose(scores["output"], w2 * self.m2 * hg2, rtol=2e-3, atol=1e-3 * np.abs(w2 * hg2).max())
        # GraSP removes the highest -w*Hg: the lowest score here goes first.
        mask = Pruner("grasp", "layerwise", {"fc1": 0.5, "output": 0.0})(self._context(model))["fc1"]
        paper = -(w1 * hg1)
        alive = np.flatnonzero(self.m1)
        highest = alive[np.argsort(-paper.reshape(-1)[alive])[:5]]
        self.assertAllEqual(np.flatnonzero(mask.reshape(-1) == 0), np.sort(np.r_[highest, [1, 11]]))
        self._assert_restored(model, before)

    def _synflow_by_hand(self, m1, m2):
        """|w ⊙ dR/dw| of the |w| ReLU network on ones: positive, so ReLU is the identity."""
        a1, a2 = np.abs(self.w1) * m1, np.abs(self.w2) * m2
        h = np.ones(3) @ a1 + np.abs(self.b1)       # R = sum(h @ a2 + |b2|)
        s1 = a1 * a2.sum(1)[None, :]                # dR/dW1[i, j] = 1 * sum_k a2[j, k]
        s2 = a2 * h[:, None]                        # dR/dW2[j, k] = h[j]
        return s1, s2

    def test_synflow_is_data_free_and_matches_the_hand_formula(self):
        model, before = self._model_holding_other_values("relu")
        criterion = criteria.get("synflow")
        self.assertNotIn("batch", criterion.reads)
        self.assertNotIn("loss", criterion.reads)
        context = self._context(model)
        context.batch = context.loss = _raise
        scores = criterion.scores(Guarded(criterion.reads, **vars(context)))
        s1, s2 = self._synflow_by_hand(self.m1, self.m2)
        self.assertAllClose(scores["fc1"], s1, rtol=1e-5)
        self.assertAllClose(scores["output"], s2, rtol=1e-5)
        self._assert_restored(model, before)

    def test_synflow_iterates_on_the_exponential_schedule(self):
        model, _ = self._model_holding_other_values("relu")
        context = self._context(model)
        context.batch = context.loss = _raise
        steps = 4
        config = types.SimpleNamespace(synflow_iterations=steps, seed=0)
        for scope, fractions in (("layerwise", {"fc1": 0.6, "output": 0.3}),
                                 ("global", {"fc1": 0.5, "output": 0.5})):
            masks = Pruner("synflow", scope, fractions, config)(context)
            # By hand: re-score under the current masks, prune to the schedule's count, repeat.
            start = {"fc1": self.m1, "output": self.m2}
            pools = [["fc1", "output"]] if scope == "global" else [["fc1"], ["output"]]
            want = start
            select = selection.SCOPES.get(scope)
            for k in range(1, steps + 1):
                now = {}
                for pool in pools:
                    before = sum(int(start[n].sum()) for n in pool)
                    alive = sum(int(want[n].sum()) for n in pool)
                    f = fractions[pool[0]]
                    reached = int(np.floor((1 - (1 - f) ** (k / steps)) * before + 0.5))
                    if k == steps:
                        reached = int(np.floor(f * before + 0.5))
                    now.update({n: (reached - (before - alive)) / alive for n in pool})
                s1, s2 = self._synflow_by_hand(want["fc1"], want["output"])
                want = select({"fc1": s1, "output": s2}, want, now)
            one_step = select({"fc1": self.w1, "output": self.w2}, start, fractions)
            for name in masks:
                self.assertAllEqual(masks[name], want[name], (scope, name))
            # Iterating ends at the counts one step would leave.
            self.assertEqual(sum(int(m.sum()) for m in masks.values()),
                             sum(int(m.sum()) for m in one_step.values()), scope)

    def test_every_registered_criterion_reads_what_it_lists(self):
        model, before = self._model_holding_other_values("relu")
        for name in CRITERIA.names():
            criterion = criteria.get(name, types.SimpleNamespace(synflow_iterations=2, seed=0))
            scores = criterion.scores(Guarded(criterion.reads, **vars(self._context(model))))
            self.assertEqual(sorted(scores), ["fc1", "output"], name)
            self.assertEqual(scores["fc1"].shape, (3, 4), name)
        self._assert_restored(model, before)
        self.assertEqual(set(criteria.at_init_names()),
                         {"snip", "grasp", "synflow", "magnitude_at_init", "random"})


class IteratedSelectionTest(tf.test.TestCase):
    def test_many_small_steps_end_at_the_one_step_counts(self):
        # 100 steps of ~2 weights each: rounding every step up would overshoot (the
        # output layer of LeNet at 19%: 0.0021 * alive rounds to 2 > 1.9).
        rng = np.random.default_rng(0)
        masks = {"a": np.ones((100, 10), np.float32), "b": np.ones((30, 10), np.float32)}
        alive = []

        def score(current):
            alive.append({n: int(m.sum()) for n, m in current.items()})
            return {n: rng.random(m.shape) for n, m in current.items()}

        for scope, fractions in (("layerwise", {"a": 0.19, "b": 0.36}), ("global", {"a": 0.19, "b": 0.19})):
            alive.clear()
            select = selection.SCOPES.get(scope)
            new = selection.iterated(select, score, masks, fractions, 100)
            one = select({n: rng.random(m.shape) for n, m in masks.items()}, masks, fractions)
            if scope == "layerwise":
                self.assertEqual({n: int(m.sum()) for n, m in new.items()}, {"a": 810, "b": 192})
            self.assertEqual(sum(int(m.sum()) for m in new.values()), sum(int(m.sum()) for m in one.values()))
            totals = [sum(a.values()) for a in alive]
            self.assertEqual(len(totals), 100)
            self.assertTrue(all(x >= y for x, y in zip(totals, totals[1:])), scope)
