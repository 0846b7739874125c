"""Probe images: the batch an export is verified on (dataset test images, random images)."""

import dataclasses

import numpy as np

from lottery_tf import errors, sources

PROBES = ("auto", "dataset", "random")
RANDOM_PROBE_SIZE = 64


def check_mode(mode):
    """Refuses a --probe value that is not one of PROBES."""
    if mode not in PROBES:
        raise errors.LotteryError(f"--probe={mode} is not one of {', '.join(PROBES)}")


@dataclasses.dataclass
class Probe:
    """Images to verify an export on: `real` dataset images first, then random ones."""

    images: np.ndarray
    labels: np.ndarray  # of the real images
    description: str

    @property
    def real(self):
        return len(self.labels)


def random_probe(input_shape, size=RANDOM_PROBE_SIZE, seed=0):
    images = np.random.default_rng(seed).random((size,) + tuple(input_shape), dtype=np.float32)
    return Probe(images, np.zeros(0, np.int64), f"{size} random images")


def probe_images(ticket, mode="auto", data_dir="", size=1000, seed=0):
    """The `Probe` to verify `ticket`'s export on.

    'dataset': the first `size` test images of the run's dataset plus
    RANDOM_PROBE_SIZE uniform random images (random pixels reach inputs the
    dataset leaves at 0, e.g. MNIST's border); 'random': `size` random images;
    'auto': 'dataset' when the dataset is prepared in the data dir, else 'random'.
    """
    check_mode(mode)
    shape = tuple(int(d) for d in ticket.dataset["input_shape"])
    name = ticket.config.get("dataset", ticket.dataset.get("name", ""))
    data_dir = data_dir or ticket.config.get("data_dir") or None
    real = None
    if mode in ("auto", "dataset"):
        real, labels, why = _dataset_images(name, data_dir, size, shape)
        if real is None and mode == "dataset":
            raise errors.LotteryError(f"--probe=dataset: {why}")
    if real is None:
        return random_probe(shape, size, seed)
    extra = random_probe(shape, RANDOM_PROBE_SIZE, seed).images
    return Probe(np.concatenate([real, extra]), labels,
                 f"{len(real)} {name} test images + {RANDOM_PROBE_SIZE} random images")


def _dataset_images(name, data_dir, size, shape):
    """The first `size` test images (scaled as in training) and labels, or (None, None, why)."""
    import tensorflow_datasets as tfds

    from lottery_tf.train import data

    try:
        if not sources.is_own(name) and not tfds.builder(name, data_dir=data_dir).is_prepared():
            where = data_dir or "the TFDS data dir"
            return None, None, f"dataset {name!r} is not prepared in {where}"
        dataset = data.load(name, data_dir=data_dir, validation_size=1)
        images, labels, count = [], [], 0
        for batch, batch_labels in dataset.test:
            images.append(batch.numpy())
            labels.append(batch_labels.numpy())
            count += len(images[-1])
            if count >= size:
                break
    except errors.LotteryError as e:
        return None, None, str(e)
    except Exception as e:  # noqa: BLE001 - TFDS raises many types; fall back to random
        return None, None, f"dataset {name!r} unavailable ({type(e).__name__}: {e})"
    if not images:
        return None, None, f"dataset {name!r} has no test images"
    images = np.concatenate(images)[:size].astype(np.float32)
    if images.shape[1:] != shape:
        return None, None, f"dataset {name!r} images are {images.shape[1:]}, the model's {shape}"
    return images, np.concatenate(labels)[:size].astype(np.int64), ""
