"""`lottery-tf` on TFDS mock data, for tests that need a real process."""

from conftest import mock_tfds
from lottery_tf import cli

if __name__ == "__main__":
    with mock_tfds():
        cli.run()
