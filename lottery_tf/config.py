"""A run's configuration: validated once, saved in the run directory.

Fields split in two: *hyperparameters*, which define the experiment and so
the run directory (a directory made with other hyperparameters is refused),
and *run options* (where the data is, how fast and where it runs, how many
rounds to go to), which can change between invocations of the same run.
"""

import dataclasses
import hashlib
import json
import math

from lottery_tf import errors

OPTIMIZERS = ("adam", "sgd")
PRUNING_SCOPES = ("layerwise", "global")
DISTRIBUTION_STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "tpu")
GROUP_RATE_FIELDS = {"conv": "conv_rate", "fc": "fc_rate", "output": "output_rate"}

HYPERPARAMETERS = (
    "model",
    "dataset",
    "validation_size",
    "iterations",
    "epochs",
    "batch_size",
    "optimizer",
    "learning_rate",
    "momentum",
    "weight_decay",
    "warmup_iterations",
    "lr_drops",
    "lr_drop_factor",
    "pruning_scope",
    "conv_rate",
    "fc_rate",
    "output_rate",
    "global_rate",
    "global_exclude",
    "one_shot_sparsity",
    "rewind_iteration",
    "seed",
    "eval_every",
)


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything one lottery run needs; see `cli.py` for each flag's help."""

    # Hyperparameters (part of the run's identity).
    model: str = "lenet_300_100"
    dataset: str = "mnist"
    validation_size: int = 5000
    iterations: int = 50000
    epochs: int = 0
    batch_size: int = 60
    optimizer: str = "adam"
    learning_rate: float = 1.2e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    warmup_iterations: int = 0
    lr_drops: str = ""
    lr_drop_factor: float = 0.1
    pruning_scope: str = "layerwise"
    conv_rate: float = 0.1
    fc_rate: float = 0.2
    output_rate: float = 0.1
    global_rate: float = 0.2
    global_exclude: str = "output"
    one_shot_sparsity: float = 0.0
    rewind_iteration: int = 0
    seed: int = 0
    eval_every: int = 500
    # Run options.
    rounds: int = 1
    output_dir: str = ""
    data_dir: str = ""
    manual_dir: str = ""
    distribution_strategy: str = "default"
    jit_compile: bool = True
    steps_per_execution: int = 50
    deterministic: bool = True
    verbose: int = 1
    checkpoint_every: int = 5000
    allow_changed_hyperparameters: bool = False

    def validate(self):
        """Raises `errors.LotteryError` naming the first bad field."""
        _require(self.optimizer in OPTIMIZERS,
                 f"unknown optimizer {self.optimizer!r}; known: {', '.join(OPTIMIZERS)}")
        _require(self.distribution_strategy in DISTRIBUTION_STRATEGIES,
                 f"unknown strategy {self.distribution_strategy!r}; known: "
                 f"{', '.join(DISTRIBUTION_STRATEGIES)}")
        _require(self.pruning_scope in PRUNING_SCOPES,
                 f"unknown pruning scope {self.pruning_scope!r}; known: {', '.join(PRUNING_SCOPES)}")
        for field in list(GROUP_RATE_FIELDS.values()) + ["global_rate"]:
            rate = getattr(self, field)
            _require(_finite(rate) and 0.0 <= rate < 1.0,
                     f"--{field}={rate} is outside [0, 1)")
        _require(self.rounds >= 1, f"--rounds={self.rounds} must be at least 1")
        _require(self.batch_size > 0, f"--batch_size={self.batch_size} must be positive")
        _require(self.iterations >= 0 and self.epochs >= 0
                 and (self.iterations > 0) != (self.epochs > 0),
                 f"give exactly one positive training length: --iterations="
                 f"{self.iterations}, --epochs={self.epochs}")
        _require(self.eval_every > 0, f"--eval_every={self.eval_every} must be positive")
        _require(self.validation_size > 0,
                 f"--validation_size={self.validation_size} must be positive "
                 "(early stopping needs a validation set)")
        _require(_finite(self.learning_rate) and self.learning_rate > 0,
                 f"--learning_rate={self.learning_rate} must be positive")
        _require(_finite(self.momentum) and 0.0 <= self.momentum < 1.0,
                 f"--momentum={self.momentum} is outside [0, 1)")
        _require(_finite(self.weight_decay) and self.weight_decay >= 0.0,
                 f"--weight_decay={self.weight_decay} must not be negative")
        _require(self.warmup_iterations >= 0,
                 f"--warmup_iterations={self.warmup_iterations} must not be negative")
        _require(_finite(self.lr_drop_factor) and 0.0 < self.lr_drop_factor <= 1.0,
                 f"--lr_drop_factor={self.lr_drop_factor} is outside (0, 1]")
        self.lr_drop_iterations()
        _require(self.rewind_iteration >= 0,
                 f"--rewind_iteration={self.rewind_iteration} must not be negative")
        _require(self.iterations == 0 or self.rewind_iteration < self.iterations,
                 f"--rewind_iteration={self.rewind_iteration} must be below "
                 f"--iterations={self.iterations}")
        _require(_finite(self.one_shot_sparsity) and 0.0 <= self.one_shot_sparsity < 1.0,
                 f"--one_shot_sparsity={self.one_shot_sparsity} is outside (0, 1)")
        _require(not (self.one_shot_sparsity and self.rounds != 2),
                 "--one_shot_sparsity runs exactly 2 rounds (dense, then pruned); "
                 f"got --rounds={self.rounds}")
        _require(self.checkpoint_every >= 0,
                 f"--checkpoint_every={self.checkpoint_every} must not be negative")
        _require(self.steps_per_execution >= 1,
                 f"--steps_per_execution={self.steps_per_execution} must be at least 1")
        return self

    def rates(self):
        """Pruning group -> rate."""
        return {group: getattr(self, f) for group, f in GROUP_RATE_FIELDS.items()}

    def lr_drop_iterations(self):
        """--lr_drops as a sorted tuple of positive iterations."""
        try:
            drops = tuple(int(x) for x in self.lr_drops.split(",") if x.strip())
        except ValueError:
            drops = (-1,)
        _require(all(d > 0 for d in drops) and list(drops) == sorted(set(drops)),
                 f"--lr_drops={self.lr_drops} must be increasing positive iterations")
        return drops

    def excluded_from_global(self):
        """Layer names or groups that global pruning leaves alone."""
        return tuple(x.strip() for x in self.global_exclude.split(",") if x.strip())

    def hyperparameters(self):
        return {name: getattr(self, name) for name in HYPERPARAMETERS}

    def hyperparameter_hash(self):
        text = json.dumps(self.hyperparameters(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def default_run_name(self):
        """Run-directory name from the hyperparameters (open_lth style)."""
        return f"{self.model}_{self.dataset}_{self.hyperparameter_hash()}"

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


def _finite(x):
    return isinstance(x, (int, float)) and math.isfinite(x)


def _require(condition, message):
    if not condition:
        raise errors.LotteryError(message)
