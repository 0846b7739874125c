"""Test set-up: two logical CPU devices, and TFDS mock data helpers.

The logical devices must exist before TensorFlow initializes its runtime, so
they are configured here, before any test module builds a tensor.
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


def real_mnist_dir():
    """The TFDS data dir holding prepared MNIST, from the environment."""
    data_dir = os.environ.get("TFDS_DATA_DIR", "")
    if not os.path.isdir(os.path.join(data_dir, "mnist")):
        pytest.skip("real MNIST needs TFDS_DATA_DIR with mnist prepared (.ci/run sets it)")
    return data_dir


def pytest_collection_modifyitems(config, items):
    # tf.test.TestCase inherits a deprecated `test_session` context manager
    # that pytest collects as a (skipped) test in every class.
    items[:] = [item for item in items if item.name != "test_session"]


def run_absl_main(main, program, args):
    """Runs an absl `main` in-process on `args`; returns (exit status, stdout, stderr)."""
    from absl import flags

    flag_values = flags.FLAGS
    flag_values.unparse_flags()
    out, err = io.StringIO(), io.StringIO()
    status = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(flag_values([program] + list(args)))
        except SystemExit as e:
            status = e.code
        finally:
            flag_values.unparse_flags()
    return status, out.getvalue(), err.getvalue()
