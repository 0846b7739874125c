"""TensorBoard scalars for completed rounds (written from saved metrics).

`DIR/tensorboard/rounds`: one step per round (sparsity per layer, accuracy at
early stop and at the end, early-stop iteration, its cost: `cost/...`, see
`cost.py`). `DIR/tensorboard/round_NNN`: the round's learning curve, one step
per evaluated iteration, and an Early-Bird round's mask distances.
"""

import tensorflow as tf

from lottery_tf.lottery import cost, run_dir


def write_round(directory, metrics, step=None, name=None):
    """Logs one completed round (or branch entry) under the directory's tensorboard/.

    Args:
      directory: the `RunDir` (or `BranchDir`).
      metrics: the round's metrics dict.
      step: the step of the per-round scalars; `metrics["round"]` by default.
      name: the learning curve's subdirectory; the round's entry name by default.
    """
    step = metrics["round"] if step is None else step
    name = name or run_dir.round_entry_name(step)
    writer = tf.summary.create_file_writer(directory.tensorboard_path("rounds"))
    with writer.as_default():
        tf.summary.scalar("sparsity/remaining_pct", metrics["remaining_pct"], step=step)
        for layer, pct in metrics["remaining_pct_by_layer"].items():
            tf.summary.scalar(f"sparsity/remaining_pct/{layer}", pct, step=step)
        for key in ("early_stop_test_accuracy", "final_test_accuracy",
                    "early_stop_val_loss", "early_stop_iteration"):
            tf.summary.scalar(f"round/{key}", metrics[key], step=step)
        for key in cost.FIELDS:
            if key in metrics:
                tf.summary.scalar(f"cost/{key}", metrics[key], step=step)
    writer.close()
    writer = tf.summary.create_file_writer(directory.tensorboard_path(name))
    with writer.as_default():
        for point in metrics["curve"]:
            for key in ("val_loss", "val_accuracy", "test_loss", "test_accuracy"):
                tf.summary.scalar(f"curve/{key}", point[key], step=point["iteration"])
        for point in (metrics.get("early_bird") or {}).get("distances", []):
            for norm in ("pruned", "all"):
                tf.summary.scalar(f"early_bird/mask_distance_{norm}", point[norm], step=point["iteration"])
    writer.close()


def write_instability(directory, metrics, name):
    """Logs one instability entry: its barrier by start iteration, and its path.

    `DIR/tensorboard/rounds`: `instability/barrier_pct/round_NNN` at step k.
    `DIR/tensorboard/NAME`: test error along the path, one step per point.
    """
    writer = tf.summary.create_file_writer(directory.tensorboard_path("rounds"))
    with writer.as_default():
        tf.summary.scalar(f"instability/barrier_pct/{run_dir.round_entry_name(metrics['round'])}",
                          metrics["barrier_pct"], step=metrics["start_iteration"])
    writer.close()
    writer = tf.summary.create_file_writer(directory.tensorboard_path(name))
    with writer.as_default():
        for step, error in enumerate(metrics["test_error_pct"]):
            tf.summary.scalar("path/test_error_pct", error, step=step)
    writer.close()
