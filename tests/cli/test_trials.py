"""--trials: one config per trial (from test_extensions)."""

import tensorflow as tf

from lottery_tf.cli import train as cli_train
from lottery_tf.config import Config


class TrialsTest(tf.test.TestCase):
    def test_trials_get_distinct_recorded_seeds_and_dirs(self):
        base = Config(seed=5, output_dir="/x/run")
        trials = cli_train.trial_configs(base, 3)
        self.assertEqual([c.seed for c in trials], [5, 6, 7])
        self.assertEqual([c.output_dir for c in trials], ["/x/run/trial_0", "/x/run/trial_1", "/x/run/trial_2"])
        self.assertEqual([c.seed for c in cli_train.trial_configs(base, 3, trial_index=1)], [6])
        self.assertEqual(cli_train.trial_configs(base, 1), [base])
