"""`tf.distribute` strategies by flag name."""

import tensorflow as tf

from lottery_tf import errors


def make(name):
    """The strategy `name` (see `config.DISTRIBUTION_STRATEGIES`).

    `mirrored` mirrors over all GPUs, or over all logical CPU devices when
    there is no GPU (which is how the tests run it on two logical CPUs).
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu="")
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.OpError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise errors.LotteryError(f"--strategy=tpu: no TPU found ({first})") from None
        return tf.distribute.TPUStrategy(resolver)
    raise errors.LotteryError(f"unknown strategy {name!r}")
