"""--distribution_strategy=multi_worker_mirrored on two real local workers (TF_CONFIG, gRPC)."""

import glob
import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import tensorflow as tf

from conftest import mock_tfds, tiny_config, tiny_flags
from lottery_tf import errors
from lottery_tf.lottery import runner
from lottery_tf.lottery.run_dir import RunDir
from lottery_tf.lottery.storage import read_arrays
from lottery_tf.train import distribute

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(TESTS)

# `lottery-tf` on mock data that also records, outside the run directory, the
# masks and weights each round left in this worker's memory.
_WORKER = """
import sys
import numpy as np
from conftest import mock_tfds
from lottery_tf import cli
from lottery_tf import errors
from lottery_tf.lottery import runner

record, trained = sys.argv[1], {}
_train = runner.train

def train(*args, **kwargs):
    result = _train(*args, **kwargs)
    trained.update({f"next_mask/{k}": v for k, v in result.next_masks.items()})
    trained.update({f"weights/{k}": v for k, v in result.weights.items()})
    return result

runner.train = train
sys.argv = ["lottery-tf"] + sys.argv[2:]
try:
    with mock_tfds():
        cli.run()
finally:
    np.savez(record, **trained)
"""

# One round that checkpoints mid-round (every worker saves; only the chief's file stays).
SETTINGS = dict(iterations=10, eval_every=5, checkpoint_every=5, jit_compile=False)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class MultiWorkerTest(tf.test.TestCase):
    def _run_workers(self, path, rounds, phase):
        """Runs the two workers to the end; returns the chief's output, record and process id."""
        tmp = self.get_temp_dir()
        cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
        args = [*tiny_flags(**SETTINGS, rounds=rounds), "--distribution_strategy=multi_worker_mirrored",
                f"--output_dir={path}"]
        workers, records, scratch_roots = [], [], []
        for index in range(2):
            records.append(os.path.join(tmp, f"{phase}-worker{index}.npz"))
            scratch_roots.append(os.path.join(tmp, f"{phase}-tmp{index}"))
            os.makedirs(scratch_roots[-1])
            env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS, REPO]), TMPDIR=scratch_roots[-1],
                       TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
            workers.append(subprocess.Popen([sys.executable, "-c", _WORKER, records[-1], *args], env=env,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            self.addCleanup(workers[-1].kill)
        ends = [worker.communicate(timeout=300) for worker in workers]
        for worker, (_, err) in zip(workers, ends):
            self.assertEqual(worker.returncode, 0, err[-3000:])
        outputs = [out for out, _ in ends]
        # The same round lines, to the printed digits (wall times aside).
        self.assertEqual(*[re.sub(r"\| [\d.]+ s$", "", out, flags=re.M) for out in outputs])
        # Both workers ended with the same masks and weights in memory.
        chief, other = (dict(np.load(record)) for record in records)
        self.assertNotEmpty(chief)
        self.assertEqual(sorted(chief), sorted(other))
        for key in chief:
            self.assertAllEqual(chief[key], other[key], msg=key)
        # Only the chief (worker 0) wrote the run directory; the other's scratch copy is gone.
        self.assertEqual(open(RunDir(path).lock_path).read(), f"process {workers[0].pid}")
        self.assertEqual(glob.glob(os.path.join(scratch_roots[1], "lottery-tf-worker-*")), [])
        return outputs[0], chief, workers[0].pid

    def _assert_saved(self, run, r, record):
        """Round r's weights and next masks in the run directory are the chief's."""
        for key, value in run.read_weights(r).items():
            self.assertAllEqual(value, record[f"weights/{key}"])
        for name, mask in run.load_masks(r + 1).items():
            self.assertAllEqual(mask, record[f"next_mask/{name}"])

    def test_two_workers_train_like_one_and_only_the_chief_writes(self):
        tmp = self.get_temp_dir()
        path = os.path.join(tmp, "run")
        run = RunDir(path)
        output, chief, pid = self._run_workers(path, rounds=1, phase="fresh")
        self.assertIn("round 0 (1/1) | 100.00% weights remaining", output)
        self._assert_saved(run, 0, chief)
        self.assertFalse(os.path.exists(run.checkpoint_dir(0)))
        # Resumed (one more round): the other worker starts from a copy of the chief's directory.
        output, chief, resumed_pid = self._run_workers(path, rounds=2, phase="resumed")
        self.assertIn("round 0 (1/2)", output)
        self.assertIn("[saved]", output.splitlines()[0])
        self.assertIn("round 1 (2/2) | 80.04% weights remaining", output)
        self._assert_saved(run, 1, chief)
        events = glob.glob(os.path.join(path, "**", "*tfevents*"), recursive=True)
        self.assertNotEmpty(events)
        for name in events:
            self.assertTrue(any(f".{p}." in os.path.basename(name) for p in (pid, resumed_pid)), name)

        # One worker at the same global batch: the same examples in every step.
        single = os.path.join(tmp, "single")
        with mock_tfds():
            runner.run(tiny_config(**SETTINGS, rounds=2, output_dir=single), progress=lambda line: None)
        reference = RunDir(single)
        self.assertEqual(sorted(os.listdir(single)), sorted(os.listdir(path)))
        for r in (0, 1):
            for name, mask in reference.load_masks(r + 1).items():
                self.assertAllEqual(run.load_masks(r + 1)[name], mask, msg=name)
            for key, value in reference.read_weights(r).items():
                self.assertAllClose(run.read_weights(r)[key], value, atol=1e-5, rtol=0, msg=key)
            for point, expected in zip(run.read_metrics(r)["curve"], reference.read_metrics(r)["curve"]):
                self.assertEqual(point["iteration"], expected["iteration"])
                for key in ("val_loss", "val_accuracy", "test_loss", "test_accuracy"):
                    self.assertAllClose(point[key], expected[key], atol=1e-5, msg=key)
        theta0 = read_arrays(run.theta0_path)
        self.assertNotAllClose(run.read_weights(0)["fc1/kernel"], theta0["fc1/kernel"])  # it did train


class LostWorkerTest(tf.test.TestCase):
    def test_a_stopped_peer_is_one_line_that_says_what_to_do(self):
        # What a worker's collective op raises when its peer's process is gone (seen with two real workers).
        raised = tf.errors.UnavailableError(None, None, (
            "{{function_node __wrapped__CollectiveReduceV2_Nordering_token_1_device_/job:worker/replica:0/"
            "task:1/device:CPU:0}} Collective ops is aborted by: Socket closed\nAdditional GRPC error ..."))
        with self.assertRaises(errors.LotteryError) as caught:
            with distribute.lost_workers_explained():
                raise raised
        self.assertEqual(str(caught.exception),
                         "another worker stopped (Collective ops is aborted by: Socket closed): see its "
                         "output; what was complete before is intact: fix the cause and start every worker "
                         "again with the same command")
