"""`lottery-tf branch`: controls for an existing run (see branches.py).

    lottery-tf branch --run_dir=runs/x --branch=random_reinit [--branch_rounds=1,2] [--branch_seed=1]
    lottery-tf branch --run_dir=runs/x --branch=random_pruning
    lottery-tf branch --run_dir=runs/x --branch=one_shot --targets=0.5,0.8,0.9,0.964
"""

import sys

from absl import flags

from lottery_tf import errors
from lottery_tf.cli import app as startup  # interim

flags.DEFINE_string("run_dir", None, "The run directory to branch from.")
flags.DEFINE_string("branch", None, "random_reinit, random_pruning or one_shot.")
flags.DEFINE_list("branch_rounds", ["all"],
                  "Main-line rounds to retrain (random_reinit, random_pruning); 'all' for every "
                  "round >= 1 whose mask exists now.")
flags.DEFINE_integer("branch_seed", 1, "Seed of the random reinit or the random masks.")
flags.DEFINE_list("targets", [], "one_shot: overall sparsities in (0, 1).")
flags.DEFINE_string("branch_data_dir", "", "TFDS data dir, if not the run's.")
flags.DEFINE_integer("branch_verbose", None, "Keras progress, if not the run's.")
FLAGS = flags.FLAGS


def _parse(values, kind, name):
    try:
        return [kind(v) for v in values]
    except ValueError:
        raise errors.LotteryError(f"--{name}={','.join(values)} is not a list of numbers") from None


def main(argv):
    if len(argv) > 1:
        startup.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    startup.quiet_logging()
    try:
        if not FLAGS.run_dir or not FLAGS.branch:
            raise errors.LotteryError("--run_dir and --branch are required")
        rounds = None if FLAGS.branch_rounds == ["all"] else _parse(FLAGS.branch_rounds, int, "branch_rounds")
        targets = _parse(FLAGS.targets, float, "targets")
        startup.start_tensorflow_quietly()
        from lottery_tf.lottery import branches  # noqa: E402

        verbose = FLAGS.branch_verbose
        if verbose is None and not sys.stdout.isatty():
            verbose = 2
        branches.run_branch(
            FLAGS.run_dir, FLAGS.branch, rounds=rounds, seed=FLAGS.branch_seed, targets=targets,
            progress=lambda line: print(line, flush=True),
            data_dir=FLAGS.branch_data_dir or None, verbose=verbose,
        )
    except errors.LotteryError as e:
        startup.fail(str(e))
