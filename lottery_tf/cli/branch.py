"""`lottery-tf branch`: controls for an existing run (see lottery/branches/).

    lottery-tf branch --run_dir=runs/x --branch=random_reinit [--branch_rounds=1,2] [--branch_seed=1]
    lottery-tf branch --run_dir=runs/x --branch=random_pruning
    lottery-tf branch --run_dir=runs/x --branch=one_shot --targets=0.5,0.8,0.9,0.964
    lottery-tf branch --run_dir=runs/x --branch=at_init --branch_criterion=snip [--ablation=shuffle]
    lottery-tf branch --run_dir=runs/x --branch=tfmot_gradual
    lottery-tf branch --run_dir=runs/x --branch=instability --branch_rounds=0,12 [--instability_k=0,500]
    lottery-tf branch --run_dir=runs/x --branch=instability --branch_rounds=12 --find_rewind=0,100,500,2000
    lottery-tf branch --run_dir=runs/x --branch=final            # an Early-Bird run's ticket, in full
    lottery-tf branch --run_dir=runs/x --branch=random_pruning --branch_rounds=1,2,3 --entry_index=$I
"""

from absl import flags

from lottery_tf import errors
from lottery_tf.cli import app


def parse_numbers(values, kind, name):
    try:
        return [kind(v) for v in values]
    except ValueError:
        raise errors.LotteryError(f"--{name}={','.join(values)} is not a list of numbers") from None


class BranchCommand(app.Command):
    name = "branch"
    summary = ("Runs a control (a branch) of an existing run: reinit, random pruning, one-shot, at init, "
               "tfmot, instability.")

    def define_flags(self, fv):
        from lottery_tf.lottery.branches import BRANCHES, instability

        flags.DEFINE_string("run_dir", None, "The run directory to branch from.", flag_values=fv)
        flags.DEFINE_string("branch", None, f"The control: {', '.join(BRANCHES.names())}.",
                            flag_values=fv)
        flags.DEFINE_list("branch_rounds", ["all"],
                          "Main-line rounds to retrain (branches keyed by round); 'all' for every "
                          "round >= 1 whose mask exists now.", flag_values=fv)
        flags.DEFINE_integer("branch_seed", 1, "Seed of the random reinit or the random masks.",
                             flag_values=fv)
        flags.DEFINE_list("targets", [], "one_shot: overall sparsities in (0, 1).", flag_values=fv)
        flags.DEFINE_string("branch_criterion", "", "at_init: the at-initialization criterion "
                            "(snip, grasp, synflow, magnitude_at_init, random).", flag_values=fv)
        flags.DEFINE_string("ablation", "", "at_init: none, shuffle (masks permuted within each "
                            "layer), reinit (fresh init), invert (highest scores pruned).",
                            flag_values=fv)
        flags.DEFINE_string("branch_scope", "", "at_init: layerwise (the rounds' per-layer counts) "
                            "or global (the rounds' overall count); default: the run's.",
                            flag_values=fv)
        flags.DEFINE_list("instability_k", [], "instability: start iterations k (θk: θ0 for 0, "
                          "else round 0 after k iterations); default 0.", flag_values=fv)
        flags.DEFINE_list("find_rewind", [], "instability: start iterations to probe; reports the "
                          "earliest whose error barrier is below --barrier_threshold.", flag_values=fv)
        flags.DEFINE_float("barrier_threshold", instability.DEFAULT_THRESHOLD, "instability: the "
                           "error barrier (percentage points of test error) below which a start "
                           "point is stable.", flag_values=fv)
        flags.DEFINE_integer("entry_index", -1,
                             "Train only this entry of the branch (0-based, of --branch_rounds or "
                             "--targets in increasing order; e.g. one per job of an array, "
                             "docs/SCALING.md); -1 trains all.", flag_values=fv)
        flags.DEFINE_string("branch_data_dir", "", "TFDS data dir, if not the run's.", flag_values=fv)
        flags.DEFINE_integer("branch_verbose", None, "Keras progress, if not the run's.",
                             flag_values=fv)

    def run(self, fv):
        from lottery_tf.lottery import branches

        if not fv.run_dir or not fv.branch:
            raise errors.LotteryError("--run_dir and --branch are required")
        rounds = None if fv.branch_rounds == ["all"] else parse_numbers(fv.branch_rounds, int, "branch_rounds")
        targets = parse_numbers(fv.targets, float, "targets")
        options = {name: value for name, value in (
            ("criterion", fv.branch_criterion), ("ablation", fv.ablation), ("scope", fv.branch_scope),
            ("start_iterations", parse_numbers(fv.instability_k, int, "instability_k")),
            ("find_rewind", parse_numbers(fv.find_rewind, int, "find_rewind")),
            ("barrier_threshold", fv.barrier_threshold if fv["barrier_threshold"].present else None),
        ) if value not in (None, "", [])}
        verbose = fv.branch_verbose
        if verbose is None and app.default_verbose() == 2:
            verbose = 2
        branches.run_branch(
            fv.run_dir, fv.branch, rounds=rounds, seed=fv.branch_seed, targets=targets,
            progress=app.print_line, data_dir=fv.branch_data_dir or None, verbose=verbose,
            options=options,
            entry_index=None if fv.entry_index == -1 else fv.entry_index,
        )
