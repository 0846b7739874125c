"""No lottery_tf module defines flags on absl's global FLAGS.

Each command defines its flags on its own `flags.FlagValues` when it runs
(`lottery_tf.cli.app`), so importing the library never touches the process's
global flags (and commands never clash over flag names).
"""

import json
import os
import subprocess
import sys
import textwrap

import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# In a fresh process: absl's own flags (and those of the libraries lottery_tf
# builds on, which define theirs on import) first, then every lottery_tf module,
# noting the flags each import adds to FLAGS and the module defining each.
_PROBE = textwrap.dedent("""
    import importlib, json, pkgutil, sys
    import absl.app, absl.logging, absl.testing.absltest
    from absl import flags
    import tensorflow, tensorflow_datasets, tf_keras, tensorflow_model_optimization
    import lottery_tf

    before = set(flags.FLAGS)
    imported, failed, added = [], {}, {}
    for info in pkgutil.walk_packages(lottery_tf.__path__, "lottery_tf.",
                                      onerror=lambda name: failed.setdefault(name, "walk")):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue
        known = set(flags.FLAGS)
        try:
            importlib.import_module(info.name)
        except Exception as e:
            failed[info.name] = repr(e)
            continue
        imported.append(info.name)
        for name in sorted(set(flags.FLAGS) - known):
            added[name] = [info.name, flags.FLAGS.find_module_defining_flag(name)]
    print(json.dumps({"before": sorted(before), "imported": imported, "failed": failed,
                      "added": added}))
""")


class NoGlobalFlagsTest(tf.test.TestCase):
    def test_importing_every_module_defines_no_flag_on_absl_flags(self):
        env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
        result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                                cwd=self.get_temp_dir(), env=env, timeout=300)
        self.assertEqual(result.returncode, 0, result.stderr)
        found = json.loads(result.stdout.strip().splitlines()[-1])
        self.assertEqual(found["failed"], {})
        # The walk did reach the command line and every package.
        for module in ("lottery_tf.cli.main", "lottery_tf.cli.app", "lottery_tf.cli.config_flags",
                       "lottery_tf.cli.train", "lottery_tf.cli.branch", "lottery_tf.cli.report",
                       "lottery_tf.bench.train_bench",
                       "lottery_tf.lottery.runner", "lottery_tf.report.tables"):
            self.assertIn(module, found["imported"])
        self.assertNotIn("lottery_tf.__main__", found["imported"])
        # Flags TensorFlow or TFDS define lazily, when a lottery_tf module first
        # imports one of their submodules, are theirs; any flag a lottery_tf
        # module defines (or one whose definer is unknown) is a failure.
        ours = {name: where for name, where in found["added"].items()
                if where[1] is None or where[1].split(".")[0] == "lottery_tf"}
        if ours:
            self.fail("importing lottery_tf defines flags on absl.flags.FLAGS "
                      "({flag: [imported module, defining module]}): " + json.dumps(ours, sort_keys=True))
