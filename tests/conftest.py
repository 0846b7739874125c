"""Test set-up: two logical CPU devices, TFDS mock data, the tiny configuration
every training test shares, and an in-process runner for the `lottery-tf` CLI.

The logical devices must exist before TensorFlow initializes its runtime, so
they are configured here, before any test module builds a tensor.

Tests live in one directory per package (tests/nn, tests/pruning, ...);
`from conftest import ...` works from each of them (pytest puts this
directory on sys.path), and test file basenames are unique across them.
"""

import contextlib
import io
import os
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)


@contextlib.contextmanager
def mock_tfds(num_examples=300):
    """TFDS mock data, with datasets reported as already prepared.

    `tfds.testing.mock_data` makes `download_and_prepare` a no-op but leaves
    `is_prepared` asking the disk; lottery-tf checks it first (to fail fast
    offline), so the mock has to answer it too.
    """
    with tfds.testing.mock_data(num_examples=num_examples), mock.patch.object(
        tfds.core.DatasetBuilder, "is_prepared", return_value=True
    ):
        yield


@pytest.fixture
def mock_data():
    with mock_tfds():
        yield


# Set (to 1) by .ci/run: a real-data test whose data is missing FAILS instead
# of skipping, so a CI machine without ../shared cannot pass by skipping them.
REQUIRE_REAL_DATA = "LOTTERY_TF_REQUIRE_REAL_DATA"


def skip_without_real_data(reason):
    """Skips the calling test for lack of real data, or fails it under LOTTERY_TF_REQUIRE_REAL_DATA."""
    if os.environ.get(REQUIRE_REAL_DATA, "") not in ("", "0"):
        pytest.fail(f"{reason}, and {REQUIRE_REAL_DATA} is set: real-data tests must run", pytrace=False)
    pytest.skip(reason)


def real_mnist_dir():
    """The TFDS data dir holding prepared MNIST, from the environment."""
    data_dir = os.environ.get("TFDS_DATA_DIR", "")
    if not os.path.isdir(os.path.join(data_dir, "mnist")):
        skip_without_real_data("real MNIST needs TFDS_DATA_DIR with mnist prepared (.ci/run sets it)")
    return data_dir


def real_mnist_manual_dir():
    """The directory holding the original MNIST files, from the environment."""
    manual_dir = os.environ.get("LOTTERY_TF_MNIST_MANUAL_DIR", "")
    if not os.path.exists(os.path.join(manual_dir, "train-images-idx3-ubyte.gz")):
        skip_without_real_data(
            "needs LOTTERY_TF_MNIST_MANUAL_DIR with the original MNIST files (.ci/run sets it)")
    return manual_dir


def pytest_collection_modifyitems(config, items):
    # tf.test.TestCase inherits a deprecated `test_session` context manager
    # that pytest collects as a (skipped) test in every class.
    items[:] = [item for item in items if item.name != "test_session"]


# --- The tiny configuration ---------------------------------------------------------

# Small enough for seconds per run on two cores, big enough to prune. Training
# length, rounds and anything else a test depends on are passed explicitly.
TINY = dict(eval_every=10, validation_size=60, batch_size=16, steps_per_execution=5, verbose=0)


def tiny_config(**overrides):
    """A `Config` of TINY's values updated with `overrides` (iterations, rounds, ...)."""
    from lottery_tf.config import Config

    return Config(**{**TINY, **overrides})


def tiny_flags(**overrides):
    """TINY (updated with `overrides`) as `lottery-tf` command-line flags."""
    return [f"--{name}={value}" for name, value in {**TINY, **overrides}.items()]


TINY_FLAGS = tiny_flags()


# --- The command line, in-process -----------------------------------------------------


def run_cli(args, program="lottery-tf"):
    """Runs `lottery-tf ARGS` in-process through the dispatcher (`lottery_tf.cli.main.run`).

    Returns (exit status, stdout, stderr). The dispatcher starts TensorFlow
    with C++ stderr (fd 2) briefly muted; Python-level output is captured here.
    """
    from lottery_tf.cli import main as cli_main

    out, err = io.StringIO(), io.StringIO()
    status = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli_main.run([program] + list(args))
        except SystemExit as e:
            status = 0 if e.code is None else e.code
    return status, out.getvalue(), err.getvalue()


def tree_files(path, skip=(".lock",)):
    """{relative path: bytes} of every file under `path` but the `skip` names.

    `.lock` holds the last writer's process id, so it is skipped by default.
    """
    found = {}
    for root, _, files in os.walk(path):
        for name in files:
            if name not in skip:
                full = os.path.join(root, name)
                with open(full, "rb") as f:
                    found[os.path.relpath(full, path)] = f.read()
    return found
