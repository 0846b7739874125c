"""`lottery-tf [train]`: run (or resume) an IMP experiment.

    lottery-tf --flagfile=flags/quickstart.flags

Every flag but --trials and --trial_index is a `Config` field (see
config.py); bad input ends the run with one line on stderr and exit status 2,
before anything is written.
"""

import dataclasses

from absl import flags

from lottery_tf import errors
from lottery_tf.cli import app, config_flags
from lottery_tf.lottery.run_dir import RunDir


def trial_configs(config, trials, trial_index=-1):
    """One config per trial: seeds seed + t, run dirs OUTPUT_DIR/trial_t."""
    if trials < 1:
        raise errors.LotteryError(f"--trials={trials} must be at least 1")
    if not -1 <= trial_index < trials:
        raise errors.LotteryError(f"--trial_index={trial_index} is outside [0, --trials={trials})")
    if trials == 1:
        return [config]
    base = RunDir.for_config(config)
    indices = range(trials) if trial_index < 0 else [trial_index]
    return [dataclasses.replace(config, seed=config.seed + t, output_dir=base.trial(t).path)
            for t in indices]


class TrainCommand(app.Command):
    name = ""
    summary = ("Finds lottery tickets (the default command): rounds of model.fit with "
               "iterative magnitude pruning, in a run directory that a rerun resumes.")

    def define_flags(self, fv):
        config_flags.define(fv)
        flags.DEFINE_integer("trials", 1,
                             "Independent trials: trial t uses --seed + t and the run directory "
                             "OUTPUT_DIR/trial_t (with 1 trial, OUTPUT_DIR itself).", flag_values=fv)
        flags.DEFINE_integer("trial_index", -1,
                             "With --trials: run only this trial (e.g. one per machine); -1 runs all.",
                             flag_values=fv)

    def run(self, fv):
        from lottery_tf.lottery import runner

        config = config_flags.config_from_flags(fv).validate().check_choices()
        for trial in trial_configs(config, fv.trials, fv.trial_index):
            if fv.trials > 1:
                app.print_line(f"trial seed {trial.seed}: {trial.output_dir}")
            runner.run(trial, progress=app.print_line)


TRAINING_FLAGS = frozenset(config_flags.names() | {"trials", "trial_index"})
