"""Reset modes: where a pruned round starts (`--reset`, registry `RESETS`).

  theta0     θ0 under the new mask: the lottery ticket (Frankle & Carbin 2019)
  rewind     the weights after --rewind_iteration iterations of round 0
             (late resetting, Frankle et al. 2019)
  lr_rewind  round r-1's trained weights under the new mask; the
             learning-rate schedule is replayed from iteration 0
  finetune   round r-1's trained weights under the new mask, trained at the
             schedule's final learning rate (Renda et al. 2020's baselines)

Every mode, every round, starts the optimizer afresh (`LotteryCallback`):
its moments are zeroed and its iteration count is 0, so Adam's bias
correction starts over and, but for `finetune`, the schedule (warmup,
drops) is replayed from its start (`rewind` too: the schedule restarts at 0,
not at the rewind iteration). `finetune` holds the schedule at its last
iteration (`--iterations` - 1) instead. With a constant learning rate (the
paper's LeNet settings) `lr_rewind` and `finetune` therefore train alike.
Round 0 always starts from θ0. Each round trains --iterations iterations.

`--rewind_iteration=K` alone (the flag before `--reset` existed) means
`--reset=rewind`; both spellings name the same run (config.py leaves
--reset out of the run hash where --rewind_iteration implies it), and
config.py refuses the combinations that mean nothing.
"""

from lottery_tf.lottery.storage import read_arrays
from lottery_tf.registry import Registry

RESETS = Registry("reset mode")


@RESETS.register("theta0")
def theta0(run_dir, r, start):
    del run_dir, r
    return start


@RESETS.register("rewind")
def rewind(run_dir, r, start):
    return read_arrays(run_dir.rewind_path) if r > 0 else start


@RESETS.register("lr_rewind")
def trained(run_dir, r, start):
    return run_dir.read_weights(r - 1) if r > 0 else start


RESETS.register("finetune")(trained)


def mode(config):
    """The reset mode `config` runs: --reset, or rewind when --rewind_iteration is set."""
    return "rewind" if config.rewind_iteration else config.reset


def start_point(config, run_dir, r, theta0_weights):
    """The weights round r of `run_dir` starts from (kernels before masking).

    Args:
      config: the run's `Config`.
      run_dir: its `RunDir` (the rewind point, earlier rounds' weights).
      r: the round.
      theta0_weights: θ0.
    """
    return RESETS.get(mode(config))(run_dir, r, theta0_weights)


def held_rate_step(config, r, iterations):
    """The schedule step round r trains at throughout, or None to follow the schedule."""
    return iterations - 1 if r > 0 and mode(config) == "finetune" else None
