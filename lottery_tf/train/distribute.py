"""`tf.distribute` strategies by name (the registry behind --distribution_strategy)."""

import tensorflow as tf

from lottery_tf import errors
from lottery_tf.registry import Registry

STRATEGIES = Registry("strategy")


def make(name):
    """The registered strategy `name`."""
    return STRATEGIES.get(name)()


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
def multi_worker_mirrored():
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
