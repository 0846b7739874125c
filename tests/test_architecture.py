"""The recipes of docs/ARCHITECTURE.md, done from outside the package.

Each extension is one declaration or one registered class written here, in
test code, and then used end to end through the same entry points a user has:
a pruning criterion, a branch (control), a hyperparameter and a command. The
README's flag table is checked against the real flags.
"""

import dataclasses
import os
import re

import numpy as np
import tensorflow as tf
from absl import flags

from conftest import mock_tfds, tiny_config
from lottery_tf import config as config_lib
from lottery_tf.cli import app, config_flags
from lottery_tf.cli.train import TrainCommand
from lottery_tf.config import Config, hyperparameter
from lottery_tf.lottery import branches, runner
from lottery_tf.lottery.branches import BRANCHES
from lottery_tf.lottery.branches.base import Branch
from lottery_tf.lottery.run_dir import RunDir
from lottery_tf.nn import models
from lottery_tf.pruning.criteria import CRITERIA
from lottery_tf.pruning.criteria.base import Criterion
from lottery_tf.report import make_report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class LargestFirst(Criterion):
    """A toy criterion: prunes the *largest* trained weights first."""

    reads = ("trained",)

    def scores(self, context):
        return {name: -np.abs(kernel) for name, kernel in context.trained.items()}


class OtherDataOrder(Branch):
    """A toy control: the round's mask and start weights, another data order."""

    label = "other data order"

    def data_seed(self, key):
        return runner.round_seed(self.config.seed + 7919 * self.seed, key)


def mlp_32(input_shape, num_classes, seeds):
    """The ARCHITECTURE.md model recipe, with 32 hidden units."""
    import tf_keras as keras

    from lottery_tf.nn.layers import MaskedDense

    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Flatten()(inputs)
    x = MaskedDense(32, pruning_group="fc", activation="relu",
                    kernel_initializer=seeds.glorot_normal(), name="fc1")(x)
    logits = MaskedDense(num_classes, pruning_group="output",
                         kernel_initializer=seeds.glorot_normal(), name="output")(x)
    return keras.Model(inputs, logits, name="mlp_32")


class ModelRecipeTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        models.register("mlp_32")(mlp_32)
        self.addCleanup(models.MODELS.unregister, "mlp_32")

    def test_registered_model_runs_rounds_and_is_a_flag_choice(self):
        path = os.path.join(self.get_temp_dir(), "run")
        with mock_tfds():
            results = runner.run(tiny_config(iterations=20, rounds=2, model="mlp_32", output_dir=path),
                                 progress=lambda line: None)
        self.assertEqual(sorted(results[1]["remaining_pct_by_layer"]), ["fc1", "output"])
        self.assertAlmostEqual(results[1]["remaining_pct_by_layer"]["fc1"], 80.0, places=2)
        fv = flags.FlagValues()
        config_flags.define(fv)
        self.assertIn("mlp_32", fv["model"].help)


class CriterionRecipeTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        CRITERIA.register("largest_first")(LargestFirst)
        self.addCleanup(CRITERIA.unregister, "largest_first")

    def test_registered_criterion_drives_imp_rounds(self):
        path = os.path.join(self.get_temp_dir(), "run")
        with mock_tfds():
            runner.run(tiny_config(iterations=20, rounds=2, criterion="largest_first", output_dir=path),
                       progress=lambda line: None)
        run = RunDir(path)
        trained, masks = run.read_weights(0), run.load_masks(1)
        for name, mask in masks.items():
            magnitude = np.abs(trained[f"{name}/kernel"])
            self.assertGreater(int((mask == 0).sum()), 0, name)
            # Every pruned weight is at least as large as every survivor.
            self.assertGreaterEqual(magnitude[mask == 0].min(), magnitude[mask == 1].max(), name)
        # Same rates as magnitude pruning: the criterion changes which, not how many.
        self.assertAlmostEqual(run.read_metrics(1)["remaining_pct"], 80.04, places=2)
        self.assertEqual(run.read_config()["criterion"], "largest_first")

    def test_registered_criterion_is_a_flag_choice(self):
        fv = flags.FlagValues()
        config_flags.define(fv)
        self.assertIn("largest_first", fv["criterion"].help)
        fv(["lottery-tf", "--criterion=largest_first"])
        config = config_flags.config_from_flags(fv).validate().check_choices()
        self.assertEqual(config.criterion, "largest_first")
        # A new hyperparameter value gives a new run directory name.
        self.assertNotEqual(config.default_run_name(), Config().default_run_name())


class BranchRecipeTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        BRANCHES.register("other_data_order")(OtherDataOrder)
        self.addCleanup(BRANCHES.unregister, "other_data_order")

    def test_registered_branch_runs_resumes_and_reports(self):
        path = os.path.join(self.get_temp_dir(), "run")
        with mock_tfds():
            runner.run(tiny_config(iterations=20, rounds=2, output_dir=path), progress=lambda line: None)
            first = branches.run_branch(path, "other_data_order", seed=3, progress=lambda line: None)
            again = branches.run_branch(path, "other_data_order", seed=3, progress=lambda line: None)
        self.assertEqual(first, again)  # resumed: nothing retrained
        run = RunDir(path)
        branch = run.branch("other_data_order_seed3")
        self.assertEqual(branch.read_info()["kind"], "other_data_order")
        entry = branch.entry("round_001")
        for name, mask in run.load_masks(1).items():
            self.assertAllEqual(entry.read_masks()[name], mask)
        self.assertNotAllClose(entry.read_weights()["fc1/kernel"], run.read_weights(1)["fc1/kernel"])
        rows = make_report([path], os.path.join(self.get_temp_dir(), "report"))
        self.assertIn("other_data_order", {row["series"] for row in rows})
        with open(os.path.join(self.get_temp_dir(), "report", "results.md")) as f:
            self.assertIn("| other data order | round 1 |", f.read())


@dataclasses.dataclass(frozen=True)
class SmoothedConfig(Config):
    """Config plus one hyperparameter, declared the way a new field is."""

    label_smoothing: float = hyperparameter(
        0.0, "Label smoothing of the loss.", check=config_lib.rate(), since="0.3")


class HyperparameterRecipeTest(tf.test.TestCase):
    def _parse(self, *args):
        fv = flags.FlagValues()
        config_flags.define(fv, SmoothedConfig)
        fv(["lottery-tf", *args])
        return fv, config_flags.config_from_flags(fv, SmoothedConfig)

    def test_one_declaration_gives_flag_help_check_and_hash(self):
        fv, config = self._parse()
        self.assertEqual(fv["label_smoothing"].help, "Label smoothing of the loss.")
        self.assertEqual(config.label_smoothing, 0.0)
        # Added later and at its default: old run directories keep their name.
        self.assertEqual(config.hyperparameter_hash(), Config().hyperparameter_hash())
        _, smoothed = self._parse("--label_smoothing=0.1")
        self.assertEqual(smoothed.validate().hyperparameters()["label_smoothing"], 0.1)
        self.assertNotEqual(smoothed.hyperparameter_hash(), Config().hyperparameter_hash())
        _, bad = self._parse("--label_smoothing=2")
        with self.assertRaisesRegex(Exception, r"^--label_smoothing=2.0 is outside \[0, 1\)$"):
            bad.validate()

    def test_run_directory_refuses_a_changed_new_hyperparameter(self):
        path = os.path.join(self.get_temp_dir(), "run")
        os.makedirs(path)
        run = RunDir(path)
        from lottery_tf.lottery.storage import write_json

        write_json(run.config_path, SmoothedConfig(output_dir=path).to_dict())
        run.check(SmoothedConfig(output_dir=path))  # same: accepted
        with self.assertRaisesRegex(Exception, "label_smoothing=0.0 \\(now 0.1\\)"):
            run.check(SmoothedConfig(output_dir=path, label_smoothing=0.1))


class CommandRecipeTest(tf.test.TestCase):
    def test_a_command_is_one_class(self):
        class Hello(app.Command):
            name = "hello"
            summary = "Says hello."
            needs_tensorflow = False

            def define_flags(self, fv):
                flags.DEFINE_string("who", "world", "Whom to greet.", flag_values=fv)

            def run(self, fv):
                if fv.who == "nobody":
                    from lottery_tf import errors

                    raise errors.LotteryError("--who=nobody: greet somebody")
                print(f"hello {fv.who}")

        import contextlib
        import io

        def run(*args):
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    app.main(Hello(), ["lottery-tf hello", *args])
                    code = 0
                except SystemExit as e:
                    code = e.code
            return code, out.getvalue(), err.getvalue()

        self.assertEqual(run("--who=you"), (0, "hello you\n", ""))
        self.assertEqual(run("--who=nobody"), (2, "", "lottery-tf: error: --who=nobody: greet somebody\n"))
        code, out, _ = run("--help")
        self.assertEqual(code, 0)
        self.assertIn("--who: Whom to greet. (default: world)", out)
        # A training flag is named as such, not just "unknown".
        self.assertEqual(run("--seed=3")[2],
                         "lottery-tf: error: --seed is a training flag; `lottery-tf hello` does not take it\n")


class ReadmeFlagTableTest(tf.test.TestCase):
    """The README's flag table lists exactly the training flags, with their defaults."""

    def _table(self):
        with open(os.path.join(REPO, "README.md")) as f:
            text = f.read()
        section = text[text.index("### Flags"):]
        section = section[:section.index("\n\n", section.index("| flag |"))]
        rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| `--")]
        return [(re.findall(r"`--([a-z_]+)`", cells[0]), cells[1].strip()) for cells in rows]

    def test_every_flag_documented_and_no_other(self):
        fv = flags.FlagValues()
        TrainCommand().define_flags(fv)
        deprecated = {a for f in config_flags.fields() for a in f.metadata["aliases"]}
        real = set(fv) - deprecated
        documented = [name for names, _ in self._table() for name in names]
        self.assertEqual(len(documented), len(set(documented)), "a flag is listed twice")
        self.assertEqual(sorted(set(documented) - real), [], "README lists flags that do not exist")
        self.assertEqual(sorted(real - set(documented)), [], "flags missing from the README table")

    def test_literal_defaults_match(self):
        fv = flags.FlagValues()
        TrainCommand().define_flags(fv)
        checked = 0
        for names, cell in self._table():
            values = [v.strip().strip("`") for v in re.split(r" / |, ", cell)]
            if len(values) != len(names):
                continue
            for name, value in zip(names, values):
                if not re.fullmatch(r"[-\w.]+", value) or fv[name].default is None:
                    continue  # a description ("1 on a terminal, else 2"), not a literal
                default = fv[name].default
                if isinstance(default, bool):
                    self.assertEqual(value, str(default).lower(), name)
                elif isinstance(default, list):
                    self.assertEqual(value, ",".join(default) or "none", name)
                elif isinstance(default, (int, float)):
                    self.assertEqual(float(value), default, name)
                else:
                    self.assertEqual(value, default, name)
                checked += 1
        self.assertGreater(checked, 20)
