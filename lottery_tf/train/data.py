"""TFDS image-classification datasets as train / validation / test pipelines.

The validation set is the first `validation_size` examples of TFDS's `train`
split, read in file order (the paper holds 5,000 MNIST training images out):
the same examples in every run, on any machine. Images are kept as uint8 in
the cache and scaled to float32 in [0, 1] a whole batch at a time.
"""

import contextlib
import dataclasses
import io
import os
import re
import socket
import urllib.parse

import tensorflow as tf
import tensorflow_datasets as tfds

from lottery_tf import errors, sources

EVAL_BATCH_SIZE = 1000
_PROBE_TIMEOUT_S = 3.0


@dataclasses.dataclass(frozen=True)
class Dataset:
    """What a run needs of a dataset. `train` is built per round (seeded)."""

    name: str
    input_shape: tuple
    num_classes: int
    num_train: int
    validation: tf.data.Dataset
    test: tf.data.Dataset
    _train_examples: tf.data.Dataset
    # The training examples as (uint8 images, labels) tensors, read on first use.
    _in_memory: list = dataclasses.field(default_factory=list, repr=False, compare=False)

    def train(self, batch_size, seed):
        """Endless, shuffled (by `seed`) batches of training examples.

        Only example *indices* go through tf.data's shuffle and batch; each
        batch of images is then one gather from the examples held in memory.
        Shuffling the indices 0..n-1 yields the very order that shuffling the
        examples themselves did (the permutation does not depend on what is
        shuffled), without copying every image through the shuffle buffer
        and the batcher element by element (a profile of a LeNet round put
        that at a quarter of its CPU time).
        """
        images, labels = self._examples()
        indices = tf.data.Dataset.range(self.num_train).shuffle(
            self.num_train, seed=seed, reshuffle_each_iteration=True
        )
        indices = indices.repeat().batch(batch_size, drop_remainder=True)
        return indices.map(
            lambda i: _scale(tf.gather(images, i), tf.gather(labels, i)),
            num_parallel_calls=tf.data.AUTOTUNE,
        ).prefetch(tf.data.AUTOTUNE)

    def _examples(self):
        if not self._in_memory:
            images, labels = [], []
            with tf.device("/CPU:0"):  # host memory: the input pipeline runs there
                for x, y in self._train_examples.batch(10000):
                    images.append(x)
                    labels.append(y)
                self._in_memory.extend([tf.concat(images, 0), tf.concat(labels, 0)])
        return self._in_memory


def _scale(images, labels):
    return tf.cast(images, tf.float32) / 255.0, labels


def _eval_pipeline(examples):
    ds = examples.batch(EVAL_BATCH_SIZE).map(
        _scale, num_parallel_calls=tf.data.AUTOTUNE
    )
    return ds.cache().prefetch(tf.data.AUTOTUNE)


def _builder(name, data_dir):
    try:
        return tfds.builder(name, data_dir=data_dir or None)
    except tfds.core.registered.DatasetNotFoundError:
        raise errors.LotteryError(
            f"unknown dataset {name!r}: not a TFDS dataset name "
            "(see tfds.list_builders())"
        ) from None


def _unreachable_hosts(builder):
    """Download hosts that do not answer now; empty when all of them do.

    TFDS retries each URL ten times with backoff (minutes offline), so a quick
    look first lets an offline machine fail in seconds.
    """
    hosts = set()
    for url in getattr(builder, "url_infos", None) or {}:
        parsed = urllib.parse.urlsplit(url)
        if parsed.hostname:
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            hosts.add((parsed.hostname, port))
    down = []
    for host, port in sorted(hosts):
        try:
            socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S).close()
        except OSError:
            down.append(host)
    return down


def _prepare(builder, data_dir, manual_dir):
    where = data_dir or "TFDS's default data dir (TFDS_DATA_DIR)"
    if manual_dir:
        config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    else:
        down = _unreachable_hosts(builder)
        if down:
            raise errors.LotteryError(
                f"dataset {builder.name!r} is not prepared in {where} and cannot be "
                f"downloaded ({', '.join(down)} unreachable): pass --data_dir with "
                "the prepared data, or --manual_dir with the original files"
            )
        config = tfds.download.DownloadConfig()
    created = _missing_dirs(data_dir or builder.data_dir_root)
    try:
        with _no_progress_bars():
            builder.download_and_prepare(download_config=config)
    except tfds.core.download.download_manager.NonMatchingChecksumError as e:
        _remove_empty(created)
        raise errors.LotteryError(_checksum_message(builder.name, manual_dir, e)) from None
    except (OSError, AssertionError, ValueError) as e:
        _remove_empty(created)
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise errors.LotteryError(
            f"could not prepare dataset {builder.name!r} in {where} "
            f"(--data_dir) from {manual_dir or 'the network'} (--manual_dir): "
            f"{first_line}"
        ) from None


def _checksum_message(name, manual_dir, error):
    """One line: which file, which checksums, what to do."""
    text = str(error)
    path = re.search(r"downloaded to (\S+?), has wrong checksum", text)
    expected = re.search(r"Expected: UrlInfo\(size=([^,]+), checksum='(\w+)'", text)
    got = re.search(r"Got: UrlInfo\(size=([^,]+), checksum='(\w+)'", text)
    if not (path and expected and got):
        return f"could not prepare dataset {name!r}: {text.strip().splitlines()[0]}"
    return (
        f"{path.group(1)} is not the file TFDS registered for dataset {name!r}: SHA-256 "
        f"{got.group(2)} ({got.group(1)}), expected {expected.group(2)} ({expected.group(1)}); "
        f"put the original, unmodified download in --manual_dir={manual_dir} (recompressed "
        "or re-exported archives differ byte for byte)"
    )


@contextlib.contextmanager
def _no_progress_bars():
    """TFDS draws progress bars per file and split on stderr, and prints what
    it prepares: kept only when preparing succeeds (a failure is one line)."""
    tfds.disable_progress_bar()
    said = io.StringIO()
    try:
        with contextlib.redirect_stdout(said):
            yield
        print(said.getvalue(), end="", flush=True)
    finally:
        tfds.enable_progress_bar()


def _missing_dirs(root):
    """`root` and the directories above it that do not exist yet (deepest first)."""
    missing = []
    path = os.path.abspath(root)
    while not os.path.exists(path):
        missing.append(path)
        path = os.path.dirname(path)
    return missing


def _remove_empty(created):
    """After a failed prepare: removes the directories it left empty.

    TFDS makes `downloads/extracted` and the dataset's directory before it
    reads a file; a failure leaves nothing else behind, so empty trees go.
    Directories that existed before (`created` lists the new roots) stay.
    """
    for root in created[:1]:
        for directory, _, _ in sorted(os.walk(root, topdown=False), reverse=True):
            try:
                os.rmdir(directory)
            except OSError:
                pass


def _image_label_keys(builder):
    features = builder.info.features
    keys = builder.info.supervised_keys
    if (
        not keys
        or len(keys) != 2
        or not isinstance(features[keys[0]], tfds.features.Image)
        or not isinstance(features[keys[1]], tfds.features.ClassLabel)
    ):
        raise errors.LotteryError(
            f"dataset {builder.name!r} is not image classification "
            "(needs an (image, class label) supervised pair)"
        )
    return features[keys[0]].shape, features[keys[1]].num_classes


def load(name, data_dir=None, manual_dir=None, validation_size=5000):
    """Loads TFDS dataset `name`, preparing it first if needed.

    Args:
      name: a TFDS image-classification dataset (`mnist`, `cifar10`, ...), or
        your own as `package.module:function` (see `own_data`).
      data_dir: TFDS data dir; None for TFDS's default (or `TFDS_DATA_DIR`).
      manual_dir: directory with the dataset's original files, for preparing
        it offline (TFDS's manual-download route).
      validation_size: examples held out of `train` for validation.

    Raises:
      errors.LotteryError: unknown dataset, not image classification, not
        available offline, or too small for the holdout.
    """
    if sources.is_own(name):
        from lottery_tf.train import own_data  # which builds on this module

        return own_data.load(name, data_dir, validation_size)
    builder = _builder(name, data_dir)
    if not builder.is_prepared():
        _prepare(builder, data_dir, manual_dir)
    image_shape, num_classes = _image_label_keys(builder)

    read_config = tfds.ReadConfig(shuffle_seed=0)
    train_all = builder.as_dataset(
        split="train", as_supervised=True, shuffle_files=False, read_config=read_config
    )
    test = builder.as_dataset(
        split="test", as_supervised=True, shuffle_files=False, read_config=read_config
    )
    total = int(train_all.cardinality())
    if total < 0:  # Unknown to TFDS: count once (cheap next to training).
        total = int(train_all.reduce(0, lambda n, _: n + 1))
    if total <= validation_size:
        raise errors.LotteryError(
            f"dataset {name!r} has {total} training examples: too few to hold "
            f"out --validation_size={validation_size}"
        )
    train_examples = train_all.skip(validation_size)
    return Dataset(
        name=name,
        input_shape=tuple(image_shape),
        num_classes=int(num_classes),
        num_train=total - validation_size,
        validation=_eval_pipeline(train_all.take(validation_size)),
        test=_eval_pipeline(test),
        _train_examples=train_examples,
    )
