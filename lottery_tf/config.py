"""A run's configuration: one declaration per hyperparameter.

Each field of `Config` is declared once, with its default and its metadata:
the help text, whether it is a *hyperparameter* (part of the experiment's
identity: the run-directory hash, and a run directory made with other values
is refused) or a *run option* (where the data is, how fast and where it runs,
how many rounds: may change between invocations), its value check, and where
its allowed names come from (a registry). The command-line flags, their help,
validation and the hash are all derived from these declarations, so adding a
hyperparameter is adding one field:

    my_rate: float = hyperparameter(0.0, "What it does.", check=at_least(0.0))

A hyperparameter added after a release passes `since=` with that version:
at its default it is left out of the hash and of the identity check, so every
existing run directory (and its default name) stays valid.
"""

import dataclasses
import hashlib
import importlib
import json
import math

from lottery_tf import errors, sources

HYPERPARAMETER = "hyperparameter"
OPTION = "option"


def _field(role, default, help, check=None, choices=None, flag_type=None, since=None,
           aliases=(), flag_default=dataclasses.MISSING, fixed=False, path=False, implied=None):
    """A Config field with its flag metadata.

    Args:
      role: HYPERPARAMETER or OPTION.
      default: the default value (also the flag's, unless `flag_default`).
      help: the flag's help text; "{choices}" is replaced by the allowed names,
        "{fixed}" by the fixed hyperparameters.
      check: value -> None, or an error message (given the flag name and value).
      choices: "module:REGISTRY" whose names are the allowed values.
      flag_type: "list" for a comma-separated list flag stored as a string.
      since: the version that added a hyperparameter (see the module docstring).
      aliases: deprecated flag names that still set this field, with a notice.
      flag_default: the flag's default when it differs from the field's (None:
        resolved later, e.g. from the terminal).
      fixed: a hyperparameter that no existing run can change, even with
        --allow_changed_hyperparameters (its weights, masks or data would no
        longer fit).
      path: a file-system path (`~` is expanded).
      implied: with `since`, config -> the value other fields already imply
        (an older flag's meaning): left out of the hash at that value too, so
        both spellings name the same run.
    """
    return dataclasses.field(default=default, metadata={
        "role": role, "help": help, "check": check, "choices": choices,
        "flag_type": flag_type, "since": since, "aliases": tuple(aliases),
        "flag_default": default if flag_default is dataclasses.MISSING else flag_default,
        "fixed": fixed, "path": path, "implied": implied,
    })


def hyperparameter(default, help, **kwargs):
    return _field(HYPERPARAMETER, default, help, **kwargs)


def option(default, help, **kwargs):
    return _field(OPTION, default, help, **kwargs)


# --- value checks: each returns a message format (with {flag} and {value}) or None.

def _finite(x):
    return isinstance(x, (int, float)) and math.isfinite(x)


def rate():
    return lambda v: None if _finite(v) and 0.0 <= v < 1.0 else "--{flag}={value} is outside [0, 1)"


def at_least(low, message="--{flag}={value} must be at least " + "{low}"):
    def check(v):
        return None if _finite(v) and v >= low else message.replace("{low}", f"{low}")
    return check


def positive(message="--{flag}={value} must be positive"):
    return lambda v: None if _finite(v) and v > 0 else message


def not_negative():
    return lambda v: None if _finite(v) and v >= 0 else "--{flag}={value} must not be negative"


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything one lottery run needs. Flags: `lottery-tf --helpfull`."""

    # --- Hyperparameters (part of the run's identity). ---
    model: str = hyperparameter(
        "lenet_300_100", "Model: {choices} (input shape and class count come from the dataset), "
        "or your own: package.module:function returning a tf_keras model (docs/OWN_MODEL.md).",
        choices="lottery_tf.nn.models:MODELS", fixed=True)
    dataset: str = hyperparameter(
        "mnist", "TFDS image-classification dataset (mnist, fashion_mnist, cifar10, ...), or "
        "your own: package.module:function returning a lottery_tf.Data (docs/OWN_MODEL.md).",
        fixed=True)
    validation_size: int = hyperparameter(
        5000, "Training examples held out for validation (early stopping).",
        check=positive("--{flag}={value} must be positive (early stopping needs a validation set)"),
        fixed=True)
    iterations: int = hyperparameter(
        50000, "Training iterations per round (paper style); 0 to use --epochs.")
    epochs: int = hyperparameter(0, "Training epochs per round, when --iterations=0.")
    batch_size: int = hyperparameter(60, "Global batch size.", check=positive())
    optimizer: str = hyperparameter("adam", "Optimizer: {choices}.",
                                    choices="lottery_tf.train.optimizers:OPTIMIZERS")
    learning_rate: float = hyperparameter(
        1.2e-3, "Learning rate.", check=positive("--{flag}={value} must be finite and positive"))
    momentum: float = hyperparameter(0.0, "Momentum, for --optimizer=sgd.", check=rate())
    weight_decay: float = hyperparameter(
        0.0, "Decoupled weight decay of the optimizer (0: none).", check=not_negative())
    warmup_iterations: int = hyperparameter(
        0, "Linear learning-rate warmup from 0 over this many iterations.", check=not_negative())
    lr_drops: str = hyperparameter(
        "", "Iterations at which the learning rate is multiplied by --lr_drop_factor.",
        flag_type="list")
    lr_drop_factor: float = hyperparameter(
        0.1, "Learning-rate factor at each of --lr_drops.",
        check=lambda v: None if _finite(v) and 0.0 < v <= 1.0 else "--{flag}={value} is outside (0, 1]")
    pruning_scope: str = hyperparameter(
        "layerwise", "Where pruning ranks scores: {choices} (layerwise: each layer loses its "
        "group's rate; global: one threshold across layers at --global_rate).",
        choices="lottery_tf.pruning.selection:SCOPES")
    criterion: str = hyperparameter(
        "magnitude", "Pruning criterion, what scores the weights: {choices}.",
        choices="lottery_tf.pruning.criteria:CRITERIA", since="0.2")
    block: str = hyperparameter(
        "none", "Prune whole blocks: {choices} (1x4: 4 consecutive inputs of one unit, the "
        "layout of TFLite's sparse float kernel; 1x16: its int8 one; none: single weights). "
        "Rates still count weights.", choices="lottery_tf.pruning.blocks:BLOCKS", since="0.2")
    synflow_iterations: int = hyperparameter(
        100, "Scoring steps of --criterion=synflow (exponential schedule; Tanaka et al. 2020).",
        check=at_least(1), since="0.2")
    conv_rate: float = hyperparameter(
        0.1, "Fraction of surviving conv weights pruned per round.", check=rate())
    fc_rate: float = hyperparameter(
        0.2, "Fraction of surviving fully-connected weights pruned per round.", check=rate())
    output_rate: float = hyperparameter(
        0.1, "Fraction of surviving output-layer weights pruned per round.", check=rate())
    global_rate: float = hyperparameter(
        0.2, "Fraction of surviving weights pruned per round with --pruning_scope=global.",
        check=rate())
    global_exclude: str = hyperparameter(
        "output", "Layer names or groups (conv, fc, output) that global pruning leaves alone.",
        flag_type="list")
    one_shot_sparsity: float = hyperparameter(
        0.0, "If set, in (0, 1): prune to this overall sparsity in one step after the dense "
        "round (2 rounds), with the IMP per-layer profile.",
        check=lambda v: None if _finite(v) and 0.0 <= v < 1.0 else "--{flag}={value} is outside (0, 1)",
        fixed=True)
    rewind_iteration: int = hyperparameter(
        0, "Late resetting: rounds after the first restart from the weights after this many "
        "iterations of round 0 instead of θ0 (0: θ0, the original).", check=not_negative(),
        fixed=True)
    reset: str = hyperparameter(
        "theta0", "Where pruned rounds start: {choices}. theta0: θ0 (the original); rewind: the "
        "weights after --rewind_iteration iterations of round 0; lr_rewind: the previous round's "
        "trained weights, learning-rate schedule replayed from iteration 0; finetune: the same "
        "weights at the schedule's final learning rate (Renda et al. 2020). Every mode restarts "
        "the optimizer (moments zeroed, iteration 0).",
        choices="lottery_tf.lottery.reset:RESETS", since="0.2",
        implied=lambda c: "rewind" if c.rewind_iteration else "theta0")
    early_bird: str = hyperparameter(
        "", "Early-Bird rounds (You et al. 2020), EPSILON,WINDOW (e.g. 0.1,5): at every evaluation "
        "a round computes the mask its pruning would choose now and its distance to the one "
        "before; once the last WINDOW distances are all <= EPSILON the round stops and prunes "
        "with that mask. The run's last mask is then trained for the full round (its `final` "
        "entry, RUN/branches/final). Empty: off.", check=lambda v: _early_bird_error(v),
        since="0.2")
    early_bird_distance: str = hyperparameter(
        "pruned", "How --early_bird normalises the Hamming distance between two masks: pruned "
        "(by twice the weights one pruning removes: the fraction of the pruned set that "
        "changed, comparable across rounds) or all (by every prunable weight, Early-Bird's "
        "convention; later rounds prune ever fewer weights, so it shrinks with sparsity).",
        check=lambda v: None if v in ("pruned", "all") else "--{flag}={value} is not pruned or all",
        since="0.2")
    seed: int = hyperparameter(0, "Seed of θ0 and of the data order.", fixed=True)
    eval_every: int = hyperparameter(
        500, "Evaluate validation and test sets every this many iterations.", check=positive())

    # --- Run options. ---
    rounds: int = option(
        1, "Rounds of training; round 0 is dense, each later one prunes. Raising it on an "
        "existing run extends the run.", check=at_least(1))
    output_dir: str = option(
        "", "Run directory; empty for runs/<model>_<dataset>_<hyperparameter hash>.", path=True)
    data_dir: str = option("", "TFDS data dir; empty for TFDS's default or $TFDS_DATA_DIR.",
                           path=True)
    manual_dir: str = option(
        "", "Directory with the dataset's original files, to prepare it offline.", path=True)
    distribution_strategy: str = option(
        "default", "tf.distribute strategy: {choices}.",
        choices="lottery_tf.train.distribute:STRATEGIES", aliases=("strategy",))
    jit_compile: bool = option(
        None, "Compile training (and evaluation) with XLA; default: where it was measured to "
        "help, per device and model family (on a CPU: LeNet's training and evaluation; also conv "
        "nets' evaluation and ResNet's training step where oneDNN is off; see docs/BENCHMARKS.md).")
    steps_per_execution: int = option(
        50, "Training steps per compiled call (lowered to land on evaluations).",
        check=at_least(1))
    deterministic: bool = option(
        True, "Enable TF op determinism: the same seed gives bitwise-identical runs.")
    verbose: int = option(
        1, "Keras progress: 0 silent, 1 progress bar, 2 one line per round; default 1 on a "
        "terminal, else 2.", flag_default=None)
    checkpoint_every: int = option(
        5000, "Checkpoint the round every this many iterations (model, optimizer, masks, step, "
        "learning curve), so a crash loses at most that much; 0: never.", check=not_negative())
    allow_changed_hyperparameters: bool = option(
        False, "Continue an existing run with other hyperparameters (e.g. a lower learning rate "
        "after a divergence), from its first incomplete round; recorded in "
        "RUN/hyperparameter_changes.json. Not for {fixed}, which the run's weights, masks and "
        "data depend on.")

    # --- Checks -----------------------------------------------------------------------

    def validate(self):
        """Raises `errors.LotteryError` naming the first bad field; returns self.

        Field checks first, in declaration order, then the checks that relate
        fields to each other. Allowed names (models, optimizers, ...) are
        checked by `check_choices`, which imports the registries.
        """
        for field in dataclasses.fields(self):
            check = field.metadata.get("check")
            message = check(getattr(self, field.name)) if check else None
            if message:
                raise errors.LotteryError(
                    message.format(flag=field.name, value=getattr(self, field.name)))
        _require(self.iterations >= 0 and self.epochs >= 0
                 and (self.iterations > 0) != (self.epochs > 0),
                 f"give exactly one positive training length: --iterations="
                 f"{self.iterations}, --epochs={self.epochs}")
        self.lr_drop_iterations()
        _require(self.iterations == 0 or self.rewind_iteration < self.iterations,
                 f"--rewind_iteration={self.rewind_iteration} must be below "
                 f"--iterations={self.iterations}")
        _require(not (self.reset == "rewind" and not self.rewind_iteration),
                 "--reset=rewind needs --rewind_iteration=K > 0: the iteration of round 0 whose "
                 "weights later rounds restart from")
        _require(not (self.reset in ("lr_rewind", "finetune") and self.rewind_iteration),
                 f"--rewind_iteration is for --reset=rewind; --reset={self.reset} restarts from "
                 "the previous round's trained weights: drop --rewind_iteration")
        _require(not (self.early_bird and self.reset in ("lr_rewind", "finetune")),
                 f"--early_bird trains its ticket from θ0 or the rewind point; --reset={self.reset} "
                 "keeps trained weights instead: use --reset=theta0 or rewind")
        _require(self.early_bird or self.early_bird_distance == "pruned",
                 f"--early_bird_distance={self.early_bird_distance} only applies to Early-Bird rounds: "
                 "give --early_bird=EPSILON,WINDOW too, or drop it")
        if self.early_bird:
            self._check_early_bird_criterion()
        _require(not (self.early_bird and self.one_shot_sparsity),
                 "--early_bird stops IMP rounds early; --one_shot_sparsity prunes once: use one")
        _require(not (self.one_shot_sparsity and self.rounds != 2),
                 "--one_shot_sparsity runs exactly 2 rounds (dense, then pruned); "
                 f"got --rounds={self.rounds}")
        return self

    def check_choices(self):
        """Every name-valued field names a registered entry (imports the registries)."""
        for field in dataclasses.fields(self):
            if field.metadata.get("choices"):
                registry_of(field).get(getattr(self, field.name))
        return self

    # --- Derived values ---------------------------------------------------------------

    def rates(self):
        """Pruning group -> rate."""
        return {"conv": self.conv_rate, "fc": self.fc_rate, "output": self.output_rate}

    def lr_drop_iterations(self):
        """--lr_drops as a sorted tuple of positive iterations."""
        try:
            drops = tuple(int(x) for x in self.lr_drops.split(",") if x.strip())
        except ValueError:
            drops = (-1,)
        _require(all(d > 0 for d in drops) and list(drops) == sorted(set(drops)),
                 f"--lr_drops={self.lr_drops} must be increasing positive iterations")
        return drops

    def _check_early_bird_criterion(self):
        # A criterion that never reads the trained weights picks the same mask at
        # every evaluation: its distances are 0 and every round would stop at once.
        from lottery_tf.pruning.criteria import CRITERIA

        if self.criterion not in CRITERIA.names():
            return  # Reported as an unknown choice.
        watching = [name for name in CRITERIA.names() if "trained" in CRITERIA.get(name).reads]
        _require("trained" in CRITERIA.get(self.criterion).reads,
                 f"--early_bird watches the mask change as training goes on; --criterion="
                 f"{self.criterion} does not read the trained weights, so its mask never changes: "
                 f"use one that does ({', '.join(watching)})")

    def early_bird_rule(self):
        """--early_bird as (epsilon, window), or None when off."""
        if not self.early_bird:
            return None
        epsilon, window = self.early_bird.split(",")
        return float(epsilon), int(window)

    def excluded_from_global(self):
        """Layer names or groups that global pruning leaves alone."""
        return tuple(x.strip() for x in self.global_exclude.split(",") if x.strip())

    def fixed_hyperparameters(self):
        """Names of the hyperparameters no existing run can change."""
        return [f.name for f in dataclasses.fields(self) if f.metadata["fixed"]]

    def hyperparameters(self):
        """The values that define the experiment (see the module docstring)."""
        values = {}
        for field in dataclasses.fields(self):
            if field.metadata["role"] != HYPERPARAMETER:
                continue
            value = getattr(self, field.name)
            implied = field.metadata["implied"]
            if field.metadata["since"] and (value == field.default
                                            or (implied and value == implied(self))):
                continue
            values[field.name] = value
        return values

    def hyperparameter_hash(self):
        text = json.dumps(self.hyperparameters(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def default_run_name(self):
        """Run-directory name from the hyperparameters (open_lth style)."""
        return (f"{sources.short_name(self.model)}_{sources.short_name(self.dataset)}_"
                f"{self.hyperparameter_hash()}")

    def train_iterations(self, num_train):
        """Training length in iterations; epochs are whole passes of train."""
        if self.iterations:
            return self.iterations
        return self.epochs * (num_train // self.batch_size)

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def _early_bird_error(value):
    """None, or why --early_bird=VALUE is not EPSILON,WINDOW."""
    if not value:
        return None
    parts = value.split(",")
    try:
        epsilon, window = float(parts[0]), int(parts[1])
        good = len(parts) == 2 and 0.0 <= epsilon < 1.0 and window >= 1
    except (ValueError, IndexError):
        good = False
    return None if good else ("--{flag}={value} is not EPSILON,WINDOW (epsilon in [0, 1), window "
                              "a whole number >= 1; e.g. 0.1,5)")


def registry_of(field):
    """The registry a `choices` field names ("module:ATTRIBUTE")."""
    module, _, attribute = field.metadata["choices"].partition(":")
    return getattr(importlib.import_module(module), attribute)


def _require(condition, message):
    if not condition:
        raise errors.LotteryError(message)
