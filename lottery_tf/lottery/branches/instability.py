"""instability: linear mode connectivity of a round's network from a start point θk.

Frankle et al. 2020 ("Linear Mode Connectivity and the Lottery Ticket
Hypothesis"): a network is *stable* at iteration k when two copies trained
from θk with different data orders end in one linearly connected basin, and
a sparse network matches the dense one only from such a point.

Each entry, keyed by (round r, start iteration k), takes round r's mask
(round 0: the dense network) and θk: θ0 for k = 0; else the weights after k
iterations of round 0 (the dense network's training, where late resetting
rewinds to) — the run's rewind.npz when it was made with
--rewind_iteration=k, otherwise trained here once from θ0 with round 0's
data order and kept in the branch (rewind_KKKKKKK.npz). Two copies (copy_a,
copy_b) then train from θk under the mask for a full round each, exactly as
the run trains its tickets from their start point (optimizer state and
learning-rate schedule from step 0), each with its own data order (seeds
from --branch_seed, never a main-line round's). The run's `Evaluator` then
measures the test error at 30 evenly spaced points α of the straight line
(1 - α) w_a + α w_b between the two final weight sets, masks installed (the
pruned weights are 0 at both ends, so on the whole line), and the error
barrier is the path's maximum minus the mean of its two ends, in
percentage points.

--find_rewind=K1,K2,... probes those k and reports, per round, the earliest
whose barrier is below --barrier_threshold (2.0 points by default, Frankle
et al.'s "stable" criterion), in find_rewind.json and on the terminal.

Models with batch normalization are refused: interpolated weights would need
their batch statistics recomputed on training data (as Frankle et al. did),
which this branch does not do.

Every step skips when its output exists (θk, each copy, the path), so a
killed branch rerun continues where it stopped and ends as an uninterrupted
one; copies checkpoint mid-round with the run's --checkpoint_every.
"""

import dataclasses
import functools

import numpy as np

from lottery_tf import errors
from lottery_tf.lottery import cost, runner, tensorboard
from lottery_tf.lottery.branches import BRANCHES
from lottery_tf.lottery.branches.base import Branch
from lottery_tf.lottery.storage import is_recorded, read_arrays, read_json, write_arrays, write_json
from lottery_tf.nn.layers import masked_layers
from lottery_tf.train.callbacks import model_weights

PATH_POINTS = 30
COPIES = ("copy_a", "copy_b")
DEFAULT_THRESHOLD = 2.0  # percentage points of test error (Frankle et al. 2020)
_COPY_FIELDS = ("data_seed", "early_stop_iteration", "early_stop_test_accuracy",
                "final_test_accuracy", "wall_time_s")


def copy_seed(run_seed, branch_seed, copy, r):
    """The data-order seed of copy `copy` (0 or 1) of round r: never a main-line round's."""
    return runner.round_seed(run_seed, r) + 1_000_037 * (2 * int(branch_seed) + int(copy) + 1)


def barrier(test_errors):
    """The error barrier of a path: its maximum minus the mean of its two ends."""
    values = [float(e) for e in test_errors]
    return max(values) - (values[0] + values[-1]) / 2.0


def earliest_stable(barriers, threshold=DEFAULT_THRESHOLD):
    """The smallest k of {k: barrier} whose barrier is below `threshold`; None if none is."""
    for k in sorted(barriers):
        if barriers[k] < threshold:
            return k
    return None


def find_rewind_verdict(barriers, pending, threshold=DEFAULT_THRESHOLD):
    """(the earliest stable k, or None while unknown; the verdict's words).

    A stable k is the earliest only once every smaller k is probed (entries of
    a job array finish in any order).
    """
    stable = earliest_stable(barriers, threshold)
    earlier = sorted(k for k in pending if stable is None or k < stable)
    if stable is not None and not earlier:
        return stable, f"earliest stable k = {stable}"
    if stable is not None:
        return None, (f"k = {stable} is stable; k={','.join(map(str, earlier))} before it not "
                      "probed yet")
    if earlier:
        return None, f"no stable k yet; k={','.join(map(str, earlier))} not probed yet"
    return None, "no probed k is stable: probe later iterations"


def interpolate(a, b, alpha):
    """(1 - alpha) a + alpha b for every weight, in each weight's dtype.

    Mixed in float64 and rounded once, so alpha = 0 gives `a` and alpha = 1
    gives `b` bit for bit.
    """
    return {key: ((1.0 - alpha) * a[key].astype(np.float64)
                  + alpha * b[key].astype(np.float64)).astype(a[key].dtype) for key in a}


def evaluate_path(experiment, masks, a, b, points=PATH_POINTS):
    """The run's evaluation at `points` evenly spaced points of the line from `a` to `b`.

    Returns:
      A list of {alpha, val_loss, val_accuracy, test_loss, test_accuracy}.
    """
    variables = model_weights(experiment.model)
    layers = masked_layers(experiment.model)
    path = []
    for alpha in np.linspace(0.0, 1.0, points):
        for key, value in interpolate(a, b, float(alpha)).items():
            variables[key].assign(value)
        for layer in layers:  # After the kernels: it zeroes their pruned entries.
            layer.assign_mask(masks[layer.name])
        path.append({"alpha": float(alpha), **experiment.evaluate()})
    return path


@BRANCHES.register("instability")
class Instability(Branch):
    label = "instability (error barrier)"
    in_accuracy_series = False  # reported as barriers and paths (report/instability.py)
    options = {"start_iterations": "--instability_k", "find_rewind": "--find_rewind",
               "barrier_threshold": "--barrier_threshold"}

    @property
    def start_iterations(self):
        ks = self.chosen.get("find_rewind") or self.chosen.get("start_iterations") or [0]
        return sorted(set(int(k) for k in ks))

    @property
    def threshold(self):
        value = self.chosen.get("barrier_threshold")
        return DEFAULT_THRESHOLD if value is None else float(value)

    def keys(self):
        if self.chosen.get("find_rewind") and self.chosen.get("start_iterations"):
            raise errors.LotteryError("--find_rewind already lists the start iterations to probe; "
                                      "drop --instability_k")
        iterations = self.main.read_dataset_info()["iterations_per_round"]
        bad = [k for k in self.start_iterations if not 0 <= k < iterations]
        if bad:
            raise errors.LotteryError(f"start iteration k={bad[0]} is outside [0, {iterations}), the "
                                      f"iterations of a round of {self.main.path}: give k below {iterations}")
        self._refuse_batch_norm()
        available = self.main.rounds_with_masks(first=0)
        rounds = available if self.rounds is None else sorted(set(self.rounds))
        missing = [r for r in rounds if r not in available]
        if missing or not rounds:
            raise errors.LotteryError(
                f"round {missing[0] if missing else 0} of {self.main.path} has no mask yet (rounds "
                f"with masks: {available[0] if available else '-'}..{available[-1] if available else '-'})")
        return [(r, k) for r in rounds for k in self.start_iterations]

    def _refuse_batch_norm(self):
        theta0 = read_arrays(self.main.theta0_path)
        statistics = sorted(key for key in theta0 if key.endswith("/moving_mean"))
        if statistics:
            raise errors.LotteryError(
                f"--branch=instability does not take models with batch normalization "
                f"({statistics[0].rsplit('/', 1)[0]} of {self.main.path}): interpolated weights need "
                "their batch statistics recomputed on training data, which it does not do")

    def entry_name(self, key):
        r, k = key
        return f"round_{r:03d}_k{k:07d}"

    def info(self):
        return {**super().info(), "path_points": PATH_POINTS}

    def start_weights(self, experiment, branch_dir):
        return functools.partial(self._theta_k, experiment, branch_dir)

    def _theta_k(self, experiment, branch_dir, k):
        """(θk, where it came from)."""
        if k == 0:
            return read_arrays(self.main.theta0_path), "theta0"
        if k == self.config.rewind_iteration and is_recorded(self.main.rewind_path):
            return read_arrays(self.main.rewind_path), "rewind.npz of the run"
        path = branch_dir.rewind_point_path(k)
        with branch_dir.updating():  # One process of a job array trains it; the others wait.
            if not is_recorded(path):
                write_arrays(path, self.train_to(experiment, k))
        return read_arrays(path), f"round 0 trained to iteration {k} in the branch"

    def train_to(self, experiment, k):
        """The weights after the first k iterations of round 0 (the main line's data order)."""
        head = dataclasses.replace(experiment, iterations=k)
        return runner.train(head, runner.dense_masks(experiment), read_arrays(self.main.theta0_path),
                            runner.round_seed(self.config.seed, 0)).weights

    @classmethod
    def parent_round(cls, key):
        r, _ = key
        return r - 1 if r >= 1 else None

    def train_entry(self, experiment, entry, key, start):
        r, k = key
        masks = self.masks(experiment, r)
        theta_k = source = None
        copies = []
        for index, name in enumerate(COPIES):
            part = entry.part(name)
            if not part.complete():
                if theta_k is None:
                    theta_k, source = start(k)
                seed = copy_seed(self.config.seed, self.seed, index, r)
                part.write_masks(masks)
                result = runner.train(experiment, masks, theta_k, seed, entry=part)
                part.save(result.weights, {"round": r, "start_iteration": k, "copy": name,
                                           "start_point": source, "data_seed": seed,
                                           **result.metrics})
            copies.append(part.read_metrics())
        a, b = (entry.part(name).read_weights() for name in COPIES)
        path = evaluate_path(experiment, masks, a, b)
        errors_pct = [100.0 * (1.0 - point["test_accuracy"]) for point in path]
        metrics = {
            "round": r, "start_iteration": k, "branch": self.kind,
            "start_point": copies[0]["start_point"],
            **runner.remaining(masks),
            "copies": [{field: c[field] for field in _COPY_FIELDS} for c in copies],
            "path": path,
            "test_error_pct": errors_pct,
            "barrier_pct": barrier(errors_pct),
            "wall_time_s": sum(c["wall_time_s"] for c in copies),
            # Its price (lottery/cost.py): both copies' training, on top of the rounds that chose
            # the mask (which include reaching θk in round 0); the dense network (round 0) has no
            # such parent, so its k iterations to θk count here.
            "train_iterations": sum(cost.own(c)[0] for c in copies) + (k if r == 0 else 0),
        }
        metrics = self.with_cost(key, metrics)
        write_json(entry.metrics_path, metrics)  # Last: it marks the entry complete.
        return metrics

    def log(self, branch_dir, entry, key, metrics):
        tensorboard.write_instability(branch_dir, metrics, entry.name)

    def describe(self, metrics, label):
        a, b = (100 * c["final_test_accuracy"] for c in metrics["copies"])
        return (f"{label} | {metrics['remaining_pct']:.2f}% weights remaining | from "
                f"{metrics['start_point']} | final test acc {a:.2f}%, {b:.2f}% | error barrier "
                f"{metrics['barrier_pct']:.2f} points | {metrics['wall_time_s']:.1f} s")

    def summary_row(self, metrics):
        errors_pct = metrics["test_error_pct"]
        return {
            "round": metrics["round"],
            "start_iteration": metrics["start_iteration"],
            "remaining_pct": f"{metrics['remaining_pct']:.4f}",
            "barrier_pct": f"{metrics['barrier_pct']:.4f}",
            "test_error_a_pct": f"{errors_pct[0]:.4f}",
            "test_error_b_pct": f"{errors_pct[-1]:.4f}",
            "max_test_error_pct": f"{max(errors_pct):.4f}",
            "wall_time_s": f"{metrics['wall_time_s']:.2f}",
        }

    def run(self, branch_dir, dataset=None, progress=print, entry_index=None):
        results = super().run(branch_dir, dataset, progress, entry_index)
        if self.chosen.get("find_rewind"):
            for line in self._find_rewind(branch_dir):
                progress(line)
        return results

    def _find_rewind(self, branch_dir):
        """Writes find_rewind.json from the complete entries; returns its lines for the terminal."""
        found, lines = {}, []
        for r in sorted({r for r, _ in self.keys()}):
            barriers, pending = {}, []
            for k in self.start_iterations:
                entry = branch_dir.entry(self.entry_name((r, k)))
                if entry.complete():
                    barriers[k] = entry.read_metrics()["barrier_pct"]
                else:
                    pending.append(k)
            stable, verdict = find_rewind_verdict(barriers, pending, self.threshold)
            found[str(r)] = {"barrier_pct": {str(k): b for k, b in barriers.items()},
                             "earliest_stable_k": stable, "not_probed_yet": pending}
            probed = ", ".join(f"k={k}: {b:.2f}" for k, b in barriers.items())
            lines.append(f"find_rewind round {r}: {verdict} (barrier < {self.threshold:g} points; "
                         f"{probed or 'none probed'})")
        record = {"threshold_pct": self.threshold, "rounds": found}
        with branch_dir.updating():
            path = branch_dir.find_rewind_path
            if not is_recorded(path) or read_json(path) != record:
                write_json(path, record)
        return lines
