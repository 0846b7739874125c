"""SIGKILL in the middle of a round, then the same command: same results."""

import csv
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import tensorflow as tf

from lottery_tf.lottery.run_dir import RunDir
from lottery_tf.lottery.storage import read_arrays, read_json

# tests/, where conftest.py and mock_cli.py live.
TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(TESTS)
ARGS = [
    "--rounds=4", "--iterations=1500", "--eval_every=500", "--validation_size=60",
    "--batch_size=16", "--verbose=0",
]
# How long the child may take to finish rounds 0 and 1 (about 20 s here).
DEADLINE_S = 300


def _command(out_dir):
    return [sys.executable, os.path.join(TESTS, "mock_cli.py"), *ARGS, f"--output_dir={out_dir}"]


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS, REPO]))


class KillResumeTest(tf.test.TestCase):
    def test_sigkill_mid_round_then_rerun_matches_uninterrupted(self):
        tmp = self.get_temp_dir()
        reference, killed = os.path.join(tmp, "reference"), os.path.join(tmp, "killed")
        subprocess.run(_command(reference), check=True, env=_env(), capture_output=True, timeout=300)

        process = subprocess.Popen(_command(killed), env=_env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, text=True)
        # Lines are read by a thread, so a child that hangs (or never prints
        # round 1) fails the test at the deadline instead of hanging it.
        lines = queue.Queue()

        def read():
            for line in process.stdout:
                lines.put(line)
            lines.put(None)  # end of output

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + DEADLINE_S
        try:
            while True:
                try:
                    line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    self.fail(f"no 'round 1' line from the child within {DEADLINE_S} s")
                if line is None:
                    self.fail(f"the child ended ({process.wait()}) before printing 'round 1'")
                if line.startswith("round 1 "):
                    break
            # Round 2 is now training; metrics.json of round 2 must not exist yet.
            self.assertFalse(RunDir(killed).round_complete(2))
            process.send_signal(signal.SIGKILL)
        finally:
            process.kill()
            process.wait()
        self.assertEqual(process.returncode, -signal.SIGKILL)
        self.assertFalse(RunDir(killed).round_complete(3))

        result = subprocess.run(_command(killed), env=_env(), capture_output=True, text=True, timeout=300)
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.splitlines()
        self.assertLen(lines, 4)
        self.assertTrue(lines[0].endswith("[saved]") and lines[1].endswith("[saved]"))
        self.assertFalse(lines[3].endswith("[saved]"))

        a, b = RunDir(reference), RunDir(killed)
        for r in range(4):
            ma, mb = read_json(a.metrics_path(r)), read_json(b.metrics_path(r))
            ma.pop("wall_time_s"), mb.pop("wall_time_s")
            self.assertEqual(ma, mb, r)
            for name, mask in read_arrays(a.mask_path(r)).items():
                self.assertAllEqual(mask, read_arrays(b.mask_path(r))[name])
        summaries = []
        for run in (a, b):
            with open(run.summary_path) as f:
                rows = list(csv.DictReader(f))
            for row in rows:
                row.pop("wall_time_s")
            summaries.append(rows)
        self.assertLen(summaries[0], 4)
        self.assertEqual(summaries[0], summaries[1])
        leftovers = [f for _, _, files in os.walk(killed) for f in files if f.startswith(".tmp-")]
        self.assertEqual(leftovers, [])
