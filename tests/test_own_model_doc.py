"""docs/OWN_MODEL.md, done as written: its files and commands, on small data.

The page's Python blocks that start with `# NAME.py` are written to a
working directory, and its `sh` blocks are run there in order, in-process:
`python NAME.py ...` with runpy, `lottery-tf ...` through the dispatcher.
Training commands get a few iterations on a tiny MNIST-format file set
(random images) appended; everything else runs as printed. A refusal the
page shows must be the one line the command prints; every other command
must succeed.
"""

import contextlib
import gzip
import io
import os
import re
import runpy
import shlex
import sys
from unittest import mock

import numpy as np
import tensorflow as tf

from conftest import run_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, "docs", "OWN_MODEL.md")
SMALL = ["--iterations=10", "--eval_every=5", "--validation_size=40", "--batch_size=16",
         "--rounds=2", "--verbose=0"]


def _page():
    with open(DOC) as f:
        text = f.read()
    files, commands = {}, []
    for kind, body in re.findall(r"```(\w*)\n(.*?)```", text, re.S):
        first = body.splitlines()[0]
        if kind == "python" and re.fullmatch(r"# \w+\.py", first):
            files[first[2:]] = body
        elif kind == "sh":
            commands += [line for line in body.replace("\\\n", " ").splitlines()
                         if line.strip() and not line.startswith("#")]
    refusals = re.findall(r"^lottery-tf: error: .*$", text, re.M)
    return files, commands, refusals


def _write_mnist_format(directory, train=200, test=60):
    """MNIST's four original files (idx, gzipped), of random images."""
    rng = np.random.default_rng(0)
    os.makedirs(directory)
    for prefix, count in (("train", train), ("t10k", test)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, count, dtype=np.uint8)
        for kind, array, magic in (("images-idx3", images, 3), ("labels-idx1", labels, 1)):
            header = bytes([0, 0, 8, magic]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
            with gzip.open(os.path.join(directory, f"{prefix}-{kind}-ubyte.gz"), "wb") as f:
                f.write(header + array.tobytes())


@contextlib.contextmanager
def _in_directory(path):
    cwd, modules = os.getcwd(), set(sys.modules)
    os.chdir(path)
    try:
        with mock.patch.object(sys, "path", [path] + sys.path):
            yield
    finally:
        os.chdir(cwd)
        for name in set(sys.modules) - modules:
            if name in ("my_project", "check"):
                del sys.modules[name]


class TutorialTest(tf.test.TestCase):
    def test_the_tutorial_commands_run_as_written(self):
        files, commands, refusals = _page()
        self.assertIn("my_project.py", files)
        self.assertTrue(any(c.startswith("lottery-tf export") for c in commands))
        work = self.get_temp_dir()
        _write_mnist_format(os.path.join(work, "mnist"))
        for name, body in files.items():
            with open(os.path.join(work, name), "w") as f:
                f.write(body)
        with _in_directory(work), mock.patch.dict(os.environ, {"MNIST_DIR": os.path.join(work, "mnist")}):
            for command in commands:
                argv = [os.path.expandvars(a) for a in shlex.split(command)]
                if argv[0] == "python":
                    out = io.StringIO()
                    with mock.patch.object(sys, "argv", argv[1:]), contextlib.redirect_stdout(out):
                        runpy.run_path(argv[1], run_name="__main__")
                    if argv[1] == "check.py":
                        self.assertIn("same outputs: True", out.getvalue())
                    continue
                self.assertEqual(argv[0], "lottery-tf", command)
                training = len(argv) > 1 and argv[1].startswith("--")
                status, out, err = run_cli(argv[1:] + (SMALL if training else []))
                if err.strip() in refusals:
                    self.assertEqual(status, 2, command)
                    refusals.remove(err.strip())
                else:
                    self.assertEqual(status, 0, f"{command}: {err}")
        self.assertEqual(refusals, [], "the refusal the page shows was not printed")
        self.assertTrue(os.path.exists(os.path.join(work, "saved_models")))
