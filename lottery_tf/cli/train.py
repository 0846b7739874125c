"""absl entry point: `lottery-tf --flagfile=flags/quickstart.flags`.

Every flag maps one to one onto a `Config` field; `Config.validate` and the
runner check them, and any problem ends the run with one line on stderr and
exit status 2, before anything is written.
"""

import dataclasses
import importlib
import os
import sys

# Quiet TensorFlow's C++ start-up chatter unless the user asked for it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from lottery_tf import config as config_lib  # noqa: E402
from lottery_tf import errors  # noqa: E402
from lottery_tf.cli import app as startup  # noqa: E402  (interim)
from lottery_tf.lottery.run_dir import RunDir  # noqa: E402

_DEFAULTS = config_lib.Config()

# Experiment.
flags.DEFINE_string("model", _DEFAULTS.model,
                    "Model name: lenet_300_100, conv2, conv4, conv6.")
flags.DEFINE_string("dataset", _DEFAULTS.dataset,
                    "TFDS image-classification dataset (mnist, fashion_mnist, cifar10, ...).")
flags.DEFINE_integer("validation_size", _DEFAULTS.validation_size,
                     "Training examples held out for validation (early stopping).")
flags.DEFINE_integer("rounds", _DEFAULTS.rounds,
                     "Rounds of training; round 0 is dense, each later one prunes. "
                     "Raising it on an existing run extends the run.")
flags.DEFINE_integer("iterations", _DEFAULTS.iterations,
                     "Training iterations per round (paper style); 0 to use --epochs.")
flags.DEFINE_integer("epochs", _DEFAULTS.epochs,
                     "Training epochs per round, when --iterations=0.")
flags.DEFINE_integer("batch_size", _DEFAULTS.batch_size, "Global batch size.")
flags.DEFINE_string("optimizer", _DEFAULTS.optimizer, "Optimizer: adam or sgd.")
flags.DEFINE_float("learning_rate", _DEFAULTS.learning_rate, "Learning rate.")
flags.DEFINE_float("momentum", _DEFAULTS.momentum, "Momentum, for --optimizer=sgd.")
flags.DEFINE_float("weight_decay", _DEFAULTS.weight_decay,
                   "Decoupled weight decay of the optimizer (0: none).")
flags.DEFINE_integer("warmup_iterations", _DEFAULTS.warmup_iterations,
                     "Linear learning-rate warmup from 0 over this many iterations.")
flags.DEFINE_list("lr_drops", [],
                  "Iterations at which the learning rate is multiplied by --lr_drop_factor.")
flags.DEFINE_float("lr_drop_factor", _DEFAULTS.lr_drop_factor,
                   "Learning-rate factor at each of --lr_drops.")
flags.DEFINE_integer("seed", _DEFAULTS.seed, "Seed of θ0 and of the data order.")
flags.DEFINE_integer("trials", 1,
                     "Independent trials: trial t uses --seed + t and the run directory "
                     "OUTPUT_DIR/trial_t (with 1 trial, OUTPUT_DIR itself).")
flags.DEFINE_integer("trial_index", -1,
                     "With --trials: run only this trial (e.g. one per machine); -1 runs all.")
flags.DEFINE_integer("eval_every", _DEFAULTS.eval_every,
                     "Evaluate validation and test sets every this many iterations.")
# Pruning.
flags.DEFINE_string("pruning_scope", _DEFAULTS.pruning_scope,
                    "Magnitude pruning per layer (layerwise, each group at its rate) or "
                    "across layers (global, one threshold at --global_rate).")
flags.DEFINE_float("global_rate", _DEFAULTS.global_rate,
                   "Fraction of surviving weights pruned per round with --pruning_scope=global.")
flags.DEFINE_list("global_exclude", _DEFAULTS.global_exclude.split(","),
                  "Layer names or groups (conv, fc, output) that global pruning leaves alone.")
flags.DEFINE_integer("rewind_iteration", _DEFAULTS.rewind_iteration,
                     "Late resetting: rounds after the first restart from the weights after "
                     "this many iterations of round 0 instead of θ0 (0: θ0, the original).")
flags.DEFINE_float("fc_rate", _DEFAULTS.fc_rate,
                   "Fraction of surviving fully-connected weights pruned per round.")
flags.DEFINE_float("conv_rate", _DEFAULTS.conv_rate,
                   "Fraction of surviving conv weights pruned per round.")
flags.DEFINE_float("output_rate", _DEFAULTS.output_rate,
                   "Fraction of surviving output-layer weights pruned per round.")
flags.DEFINE_float("one_shot_sparsity", _DEFAULTS.one_shot_sparsity,
                   "If set, in (0, 1): prune to this overall sparsity in one step after "
                   "the dense round (2 rounds), with the IMP per-layer profile.")
# Data and output.
flags.DEFINE_string("data_dir", _DEFAULTS.data_dir,
                    "TFDS data dir; empty for TFDS's default or $TFDS_DATA_DIR.")
flags.DEFINE_string("manual_dir", _DEFAULTS.manual_dir,
                    "Directory with the dataset's original files, to prepare it offline.")
flags.DEFINE_string("output_dir", _DEFAULTS.output_dir,
                    "Run directory; empty for runs/<model>_<dataset>_<hyperparameter hash>.")
# Speed and scale.
flags.DEFINE_string("strategy", _DEFAULTS.distribution_strategy,
                    "tf.distribute strategy: default, mirrored, multi_worker_mirrored, tpu.")
flags.DEFINE_boolean("jit_compile", _DEFAULTS.jit_compile, "Compile training steps with XLA.")
flags.DEFINE_integer("steps_per_execution", _DEFAULTS.steps_per_execution,
                     "Training steps per compiled call (lowered to land on evaluations).")
flags.DEFINE_boolean("deterministic", _DEFAULTS.deterministic,
                     "Enable TF op determinism: the same seed gives bitwise-identical runs.")
flags.DEFINE_integer("checkpoint_every", _DEFAULTS.checkpoint_every,
                     "Checkpoint the round every this many iterations (model, optimizer, masks, "
                     "step, learning curve), so a crash loses at most that much; 0: never.")
flags.DEFINE_boolean("allow_changed_hyperparameters", False,
                     "Continue an existing run with other hyperparameters (e.g. after a divergence); "
                     "the change is recorded in RUN/hyperparameter_changes.json.")
flags.DEFINE_integer("verbose", None,
                     "Keras progress: 0 silent, 1 progress bar, 2 one line per round; "
                     "default 1 on a terminal, else 2.")

FLAGS = flags.FLAGS


def config_from_flags():
    return config_lib.Config(
        model=FLAGS.model,
        dataset=FLAGS.dataset,
        validation_size=FLAGS.validation_size,
        iterations=FLAGS.iterations,
        epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size,
        optimizer=FLAGS.optimizer,
        learning_rate=FLAGS.learning_rate,
        momentum=FLAGS.momentum,
        weight_decay=FLAGS.weight_decay,
        warmup_iterations=FLAGS.warmup_iterations,
        lr_drops=",".join(FLAGS.lr_drops),
        lr_drop_factor=FLAGS.lr_drop_factor,
        pruning_scope=FLAGS.pruning_scope,
        global_rate=FLAGS.global_rate,
        global_exclude=",".join(FLAGS.global_exclude),
        rewind_iteration=FLAGS.rewind_iteration,
        conv_rate=FLAGS.conv_rate,
        fc_rate=FLAGS.fc_rate,
        output_rate=FLAGS.output_rate,
        one_shot_sparsity=FLAGS.one_shot_sparsity,
        seed=FLAGS.seed,
        eval_every=FLAGS.eval_every,
        # A one-shot run is two rounds (dense, pruned) unless --rounds says otherwise.
        rounds=FLAGS.rounds if FLAGS["rounds"].present or not FLAGS.one_shot_sparsity else 2,
        output_dir=FLAGS.output_dir,
        data_dir=FLAGS.data_dir,
        manual_dir=FLAGS.manual_dir,
        distribution_strategy=FLAGS.strategy,
        jit_compile=FLAGS.jit_compile,
        steps_per_execution=FLAGS.steps_per_execution,
        deterministic=FLAGS.deterministic,
        checkpoint_every=FLAGS.checkpoint_every,
        allow_changed_hyperparameters=FLAGS.allow_changed_hyperparameters,
        verbose=FLAGS.verbose if FLAGS.verbose is not None else (1 if sys.stdout.isatty() else 2),
    )


def trial_configs(config, trials, trial_index=-1):
    """One config per trial: seeds seed + t, run dirs OUTPUT_DIR/trial_t."""
    if trials < 1:
        raise errors.LotteryError(f"--trials={trials} must be at least 1")
    if not -1 <= trial_index < trials:
        raise errors.LotteryError(f"--trial_index={trial_index} is outside [0, --trials={trials})")
    if trials == 1:
        return [config]
    base = RunDir.for_config(config).path
    indices = range(trials) if trial_index < 0 else [trial_index]
    return [
        dataclasses.replace(config, seed=config.seed + t, output_dir=os.path.join(base, f"trial_{t}"))
        for t in indices
    ]


def _print_line(line):
    print(line, flush=True)


def main(argv):
    if len(argv) > 1:
        startup.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    startup.quiet_logging()
    try:
        trials = trial_configs(config_from_flags().validate(), FLAGS.trials, FLAGS.trial_index)
        startup.start_tensorflow_quietly()
        from lottery_tf.lottery import runner  # noqa: E402

        for config in trials:
            if FLAGS.trials > 1:
                _print_line(f"trial seed {config.seed}: {config.output_dir}")
            runner.run(config, progress=_print_line)
    except errors.LotteryError as e:
        startup.fail(str(e))


# `lottery-tf NAME ...` runs the absl app in module SUBCOMMANDS[NAME]. Its flags
# must not reuse this module's flag names (tests import both in one process).
SUBCOMMANDS = {
    "branch": "lottery_tf.cli.branch",
    "export": "lottery_tf.export.export",
    "report": "lottery_tf.report.report",
}


def _parse_flags(argv):
    """absl's parsing, with a bad flag or flagfile as one line, exit 2."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        startup.fail(str(e).replace("ERROR:: ", ""))


def _subcommand_flags_parser(name):
    """Parses a subcommand's flags, refusing the training flags (defined here)."""
    training_flags = {f.name for f in FLAGS.get_key_flags_for_module(sys.modules[__name__])}

    def parse(argv):
        remaining = _parse_flags(argv)
        given = sorted(n for n in training_flags if FLAGS[n].present)
        if given:
            startup.fail(f"--{given[0]} is a training flag; `lottery-tf {name}` does not take it")
        return remaining

    return parse


def run(argv=None):
    """Console-script entry point: training, or a subcommand."""
    argv = list(sys.argv if argv is None else argv)
    if len(argv) > 1 and argv[1] in SUBCOMMANDS:
        module = importlib.import_module(SUBCOMMANDS[argv[1]])
        app.run(module.main, argv=[f"{argv[0]} {argv[1]}"] + argv[2:],
                flags_parser=_subcommand_flags_parser(argv[1]))
    else:
        app.run(main, argv=argv, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
