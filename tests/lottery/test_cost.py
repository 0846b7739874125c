"""The price of a ticket: cost fields per entry add up, and older runs still report."""

import csv
import glob
import os

import numpy as np
import tensorflow as tf

from conftest import mock_tfds, tiny_config
from lottery_tf import report
from lottery_tf.lottery import branches, cost, runner
from lottery_tf.lottery.run_dir import RunDir
from lottery_tf.lottery.storage import read_json, write_json


class CostTest(tf.test.TestCase):
    def test_cost_fields_add_up_over_rounds_branches_and_older_metrics(self):
        path = os.path.join(self.get_temp_dir(), "run")
        with mock_tfds():
            runner.run(tiny_config(iterations=20, rounds=3, output_dir=path), progress=lambda line: None)
            branches.run_branch(path, "random_reinit", rounds=[2], progress=lambda line: None)
            branches.run_branch(path, "one_shot", targets=[0.5], progress=lambda line: None)
        run = RunDir(path)
        rounds = [run.read_metrics(r) for r in range(3)]
        for r, m in enumerate(rounds):
            self.assertEqual(m["train_iterations"], 20)
            self.assertEqual(m["cumulative_iterations"], 20 * (r + 1))
            self.assertNotIn("cumulative_wall_time_s", m)  # differs between runs: summed when read
        walls = [m["cumulative_wall_time_s"] for m in cost.main_line(dict(enumerate(rounds))).values()]
        self.assertAllClose(walls, np.cumsum([m["wall_time_s"] for m in rounds]))
        # A branch entry: its parent round's cost (round 1 chose round 2's mask) plus its own.
        reinit = run.branch("random_reinit_seed1").entry("round_002").read_metrics()
        self.assertEqual(reinit["cumulative_iterations"], 40 + 20)
        one_shot = run.branch("one_shot").complete_entries()[0].read_metrics()
        self.assertEqual(one_shot["cumulative_iterations"], 20 + 20)  # pruned from round 0
        with open(run.summary_path) as f:
            rows = list(csv.DictReader(f))
        self.assertEqual([row["cumulative_iterations"] for row in rows], ["20", "40", "60"])
        tags = {}
        for event_file in glob.glob(os.path.join(path, "tensorboard", "rounds", "events.*")):
            for event in tf.compat.v1.train.summary_iterator(event_file):
                for value in event.summary.value:
                    tags.setdefault(value.tag, {})[event.step] = tf.make_ndarray(value.tensor)
        self.assertEqual(tags["cost/cumulative_iterations"], {0: 20, 1: 40, 2: 60})

        # A run written before the cost fields: the report computes them.
        for metrics_path in [run.metrics_path(r) for r in range(3)] + [
                run.branch("random_reinit_seed1").entry("round_002").metrics_path]:
            old = {k: v for k, v in read_json(metrics_path).items()
                   if k not in cost.FIELDS}
            write_json(metrics_path, old)
        rows = report.make_report([path], os.path.join(self.get_temp_dir(), "report"))
        by_series = {(row["series"], row["level"]): row for row in rows}
        self.assertEqual(by_series[("imp", 2)]["cumulative_iterations"], 60)
        self.assertEqual(by_series[("random_reinit", 2)]["cumulative_iterations"], 60)
        self.assertEqual(by_series[("one_shot", 0.5)]["cumulative_iterations"], 40)
        self.assertAlmostEqual(by_series[("random_reinit", 2)]["cumulative_wall_time_s"],
                               walls[1] + reinit["wall_time_s"], places=6)
        self.assertTrue(os.path.exists(os.path.join(self.get_temp_dir(), "report", "price_of_a_ticket.png")))
        # Resuming the older run completes its summary's cost columns.
        with mock_tfds():
            runner.run(tiny_config(iterations=20, rounds=3, output_dir=path), progress=lambda line: None)
        with open(run.summary_path) as f:
            self.assertEqual([row["cumulative_iterations"] for row in csv.DictReader(f)], ["20", "40", "60"])
