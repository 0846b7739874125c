"""`tf.distribute` strategies by name (the registry behind --distribution_strategy),
and what a run needs to know about its strategy beyond building the model in it."""

import contextlib
import functools
import re

import tensorflow as tf

from lottery_tf import errors
from lottery_tf.registry import Registry

STRATEGIES = Registry("strategy")


def make(name):
    """The registered strategy `name`."""
    return STRATEGIES.get(name)()


def is_chief(name):
    """Whether this process writes the run's files.

    Every process does, except the non-chief workers of
    `multi_worker_mirrored` (TF_CONFIG names the chief: task `chief`, or
    worker 0 when the cluster has no `chief` job).
    """
    return name != "multi_worker_mirrored" or make(name).extended.should_checkpoint


def agree(strategy, values=()):
    """Whether every worker of `strategy` called this with the same small integers.

    Returns once all have called it (a barrier). One all-reduce of
    (1, v, v²) per value: the values are equal iff n·Σv² = (Σv)².
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    local = tf.constant([1.0] + [float(v) for v in values] + [float(v) ** 2 for v in values], tf.float64)
    # In a tf.function: run eagerly, the strategy warns of its overhead on every call.
    total = tf.function(lambda: strategy.reduce(
        tf.distribute.ReduceOp.SUM, strategy.run(lambda: local), axis=None))().numpy()
    n, sums, squares = total[0], total[1:1 + len(values)], total[1 + len(values):]
    return all(n * sq == s * s for s, sq in zip(sums, squares))


@contextlib.contextmanager
def lost_workers_explained():
    """A worker that stopped (its peers' collective ops fail) as one line."""
    try:
        yield
    except tf.errors.UnavailableError as e:
        # "{{function_node ...}} Collective ops is aborted by: Socket closed": the last part says it.
        first = re.sub(r"\{\{.*?\}\}\s*", "", (str(e).strip().splitlines() or [""])[0])
        raise errors.LotteryError(
            f"another worker stopped ({first[:200] or type(e).__name__}): see its output; what was "
            "complete before is intact: fix the cause and start every worker again with the same command") from None


def split_by_example(dataset):
    """`dataset`, split between workers batch by batch, not file by file.

    With several workers, each runs the whole (seeded) pipeline and keeps its
    share of every global batch, so a step trains on the same examples as
    one worker at the same --batch_size. Sharding by file (what TensorFlow
    tries first) would give each worker other examples in another order.
    Without several workers the option does nothing.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


@STRATEGIES.register("default")
def default():
    return tf.distribute.get_strategy()


@STRATEGIES.register("mirrored")
def mirrored():
    """Mirrors over all GPUs, or over all logical CPU devices when there is no
    GPU (which is how the tests run it on two logical CPUs)."""
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([d.name for d in devices])


@STRATEGIES.register("multi_worker_mirrored")
@functools.cache
def multi_worker_mirrored():
    """Synchronous training over the workers TF_CONFIG lists (docs/SCALING.md).

    One per process: it configures the runtime's collective ops, which
    TensorFlow allows only before the runtime starts (its first op).
    """
    return tf.distribute.MultiWorkerMirroredStrategy()


@STRATEGIES.register("tpu")
def tpu():
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu="")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise errors.LotteryError(f"--distribution_strategy=tpu: no TPU found ({first})") from None
    return tf.distribute.TPUStrategy(resolver)
