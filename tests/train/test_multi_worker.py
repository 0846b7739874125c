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
from lottery_tf.lottery import runner
from lottery_tf.lottery.run_dir import RunDir
from lottery_tf.lottery.storage import read_arrays

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(TESTS)

# `lottery-tf` on mock data that also records, outside the run directory, the
# masks and weights each round left in this worker's memory.
_WORKER = """
import sys
import numpy as np
from conftest import mock_tfds
from lottery_tf import cli
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
SETTINGS = dict(iterations=10, rounds=1, eval_every=5, checkpoint_every=5, jit_compile=False)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class MultiWorkerTest(tf.test.TestCase):
    def test_two_workers_train_like_one_and_only_the_chief_writes(self):
        tmp = self.get_temp_dir()
        path = os.path.join(tmp, "run")
        cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
        args = [*tiny_flags(**SETTINGS), "--distribution_strategy=multi_worker_mirrored",
                f"--output_dir={path}"]
        workers, records, scratch_roots = [], [], []
        for index in range(2):
            records.append(os.path.join(tmp, f"worker{index}.npz"))
            scratch_roots.append(os.path.join(tmp, f"tmp{index}"))
            os.makedirs(scratch_roots[-1])
            env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS, REPO]), TMPDIR=scratch_roots[-1],
                       TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
            workers.append(subprocess.Popen([sys.executable, "-c", _WORKER, records[-1], *args], env=env,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            self.addCleanup(workers[-1].kill)
        outputs = [worker.communicate(timeout=300) for worker in workers]
        for worker, (out, err) in zip(workers, outputs):
            self.assertEqual(worker.returncode, 0, err[-3000:])
            self.assertIn("round 0 (1/1) | 100.00% weights remaining", out)
        # The same round line, to the printed digits (wall times aside).
        self.assertEqual(*[re.sub(r"\| [\d.]+ s$", "", out, flags=re.M) for out, _ in outputs])

        # Both workers ended with the same masks and weights in memory.
        chief, other = (dict(np.load(record)) for record in records)
        self.assertNotEmpty(chief)
        self.assertEqual(sorted(chief), sorted(other))
        for key in chief:
            self.assertAllEqual(chief[key], other[key], msg=key)

        # Only the chief (worker 0) wrote the run directory; the other's scratch copy is gone.
        run = RunDir(path)
        self.assertEqual(open(run.lock_path).read(), f"process {workers[0].pid}")
        events = glob.glob(os.path.join(path, "**", "*tfevents*"), recursive=True)
        self.assertNotEmpty(events)
        for name in events:
            self.assertIn(f".{workers[0].pid}.", os.path.basename(name))
        self.assertEqual(glob.glob(os.path.join(scratch_roots[1], "lottery-tf-worker-*")), [])
        masks, weights = run.load_masks(1), run.read_weights(0)
        for name, mask in masks.items():
            self.assertAllEqual(mask, chief[f"next_mask/{name}"])
        for key, value in weights.items():
            self.assertAllEqual(value, chief[f"weights/{key}"])
        self.assertFalse(os.path.exists(run.checkpoint_dir(0)))

        # One worker at the same global batch: the same examples in every step.
        single = os.path.join(tmp, "single")
        with mock_tfds():
            runner.run(tiny_config(**SETTINGS, output_dir=single), progress=lambda line: None)
        reference = RunDir(single)
        self.assertEqual(sorted(os.listdir(single)), sorted(os.listdir(path)))
        for name, mask in reference.load_masks(1).items():
            self.assertAllEqual(masks[name], mask, msg=name)
        theta0 = read_arrays(run.theta0_path)
        for key, value in reference.read_weights(0).items():
            self.assertAllClose(weights[key], value, atol=1e-5, rtol=0, msg=key)
        self.assertNotAllClose(weights["fc1/kernel"], theta0["fc1/kernel"])  # it did train
        ours, theirs = run.read_metrics(0), reference.read_metrics(0)
        for point, expected in zip(ours["curve"], theirs["curve"]):
            self.assertEqual(point["iteration"], expected["iteration"])
            for key in ("val_loss", "val_accuracy", "test_loss", "test_accuracy"):
                self.assertAllClose(point[key], expected[key], atol=1e-5, msg=key)
