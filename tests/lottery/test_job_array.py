"""Trials and branch entries as a job array: processes side by side on one run directory."""

import json
import os
import subprocess
import sys

import tensorflow as tf

from conftest import mock_tfds, run_cli, tiny_flags, tree_files
from lottery_tf import errors
from lottery_tf.lottery import storage
from lottery_tf.lottery.run_dir import BranchDir, RunDir
from lottery_tf.report import make_report

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(TESTS)

# One job of the array: its trial, then (started with the other job's) its branch entry.
_JOB = """
import json, os, sys, time
from conftest import mock_tfds
from lottery_tf import cli

train_args, branch_args, ready, others = json.loads(sys.argv[1])
with mock_tfds():
    cli.run(["lottery-tf", *train_args])
    open(ready, "w").close()
    deadline = time.monotonic() + 300
    while not all(os.path.exists(p) for p in others):
        if time.monotonic() > deadline:
            sys.exit("the other job did not finish its trial")
        time.sleep(0.05)
    cli.run(["lottery-tf", "branch", *branch_args])
"""


def _recorded_everywhere(root):
    """Checks every directory's manifest against its files, and that none of
    its files went unrecorded (a lost manifest update would leave one)."""
    checked = 0
    for directory, _, names in os.walk(root):
        if storage.MANIFEST not in names:
            continue
        storage.verify_directory(directory)
        for name in names:
            if name.endswith((".json", ".npz", ".csv")) and name != storage.MANIFEST:
                assert storage.is_recorded(os.path.join(directory, name)), os.path.join(directory, name)
                checked += 1
    return checked


class LockModesTest(tf.test.TestCase):
    def test_entry_writers_share_the_branch_but_not_an_entry_and_exclude_a_whole_writer(self):
        path = os.path.join(self.get_temp_dir(), "branch")
        first, second, whole = BranchDir(path), BranchDir(path), BranchDir(path)
        first.lock(shared=True)
        second.lock(shared=True)
        with self.assertRaisesRegex(errors.LotteryError, f"run directory {path} is in use by process {os.getpid()}"):
            whole.lock()
        entry, other = first.entry("round_001"), first.entry("round_002")
        with first.training(entry):
            with self.assertRaisesRegex(errors.LotteryError, f"run directory {entry.path} is in use by process"):
                with second.training(second.entry("round_001")):
                    pass
            with second.training(other), second.updating():
                pass
        first.unlock()
        second.unlock()
        whole.lock()
        with self.assertRaisesRegex(errors.LotteryError, "is in use by process"):
            BranchDir(path).lock(shared=True)
        whole.unlock()


class JobArrayTest(tf.test.TestCase):
    def test_two_jobs_train_other_trials_and_entries_side_by_side_and_the_report_reads_all(self):
        tmp = self.get_temp_dir()
        out = os.path.join(tmp, "runs")
        trial_flags = [*tiny_flags(iterations=10, eval_every=5), "--trials=3", f"--output_dir={out}"]
        with mock_tfds():
            status, _, err = run_cli([*trial_flags, "--rounds=2", "--trial_index=0"])
        self.assertEqual(status, 0, err)
        trial_0 = RunDir(out).trial(0).path
        branch_flags = [f"--run_dir={trial_0}", "--branch=random_reinit", "--branch_rounds=1,2"]

        ready = [os.path.join(tmp, f"ready{i}") for i in range(2)]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS, REPO]))
        jobs = []
        for i in range(2):
            spec = [[*trial_flags, "--rounds=1", f"--trial_index={i + 1}"],
                    [*branch_flags, f"--entry_index={i}"], ready[i], ready]
            jobs.append(subprocess.Popen([sys.executable, "-c", _JOB, json.dumps(spec)], env=env,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            self.addCleanup(jobs[-1].kill)
        for job in jobs:
            out_text, err_text = job.communicate(timeout=300)
            self.assertEqual(job.returncode, 0, err_text[-3000:])
            self.assertIn("random_reinit_seed1 round_00", out_text)

        run = RunDir(out)
        self.assertEqual([os.path.basename(t.path) for t in run.trials()], ["trial_0", "trial_1", "trial_2"])
        self.assertEqual([t.complete_rounds() for t in run.trials()], [[0, 1], [0], [0]])
        branch = RunDir(trial_0).branch("random_reinit_seed1")
        self.assertEqual([e.name for e in branch.complete_entries()], ["round_001", "round_002"])
        # Whichever job wrote the summary last saw both entries.
        self.assertLen(storage.read_text(branch.summary_path).splitlines(), 3)
        self.assertGreater(_recorded_everywhere(out), 20)

        rows = make_report([out], os.path.join(tmp, "report"))
        series = {(row["series"], row["level"]) for row in rows}
        self.assertContainsSubset({("imp", 0), ("imp", 1), ("random_reinit", 1), ("random_reinit", 2)}, series)
        self.assertEqual([row["trials"] for row in rows if row["series"] == "imp" and row["level"] == 0], [3])

        # A job with an index past the list: one line naming the range, nothing written.
        before = tree_files(out)
        status, _, err = run_cli(["branch", *branch_flags, "--entry_index=2"])
        self.assertEqual(status, 2)
        self.assertEqual(err, f"lottery-tf: error: --entry_index=2 is outside [0, 2): branch random_reinit "
                              f"of {trial_0} has 2 entries (round_001, round_002)\n")
        self.assertEqual(tree_files(out), before)
