"""Where a run's own model or data comes from: an import path, or a Python object.

`--model` and `--dataset` take a registry or TFDS name, or the user's own
function as `package.module:function` (the module imported from PYTHONPATH or
the current directory). That string is what config.json records, so a rerun,
a branch and an export find the function again by importing it.

From Python, `lottery_tf.run(config, model=..., data=...)` also takes the
function itself (recorded by its import path when it has one, `__main__`
included), or an object without one (a built model, a `Data`, a lambda):
that is kept in this process under `python:NAME`, which config.json records;
another process must hand the same object over again.
"""

import inspect
import importlib
import os
import re
import sys

from lottery_tf import errors

PYTHON = "python:"

# name ("python:NAME") -> the object handed over in this process.
_OBJECTS = {}


def is_own(name):
    """Whether a --model / --dataset value names the user's own code, not a registry entry."""
    return ":" in str(name)


def short_name(name):
    """The part of an own name that goes into a default run-directory name."""
    if not is_own(name):
        return name
    return re.sub(r"[^\w.-]", "_", name.rpartition(":")[2]) or "own"


def resolve(name, flag):
    """The object `name` ("module:attribute" or "python:NAME") stands for.

    Args:
      name: the recorded --model / --dataset value.
      flag: "model" or "dataset", for the messages.

    Raises:
      errors.LotteryError: the module cannot be imported, lacks the attribute,
        or a Python object is not in this process (one line, what to do).
    """
    if name.startswith(PYTHON):
        if name not in _OBJECTS:
            raise errors.LotteryError(
                f"--{flag}={name} was handed to lottery_tf.run() as a Python object in another "
                f"process; pass it again (lottery_tf.run(config, {_keyword(flag)}=...) or "
                f"lottery_tf.run_branch(..., {_keyword(flag)}=...)), or give a function by import "
                f"path (--{flag}=package.module:function)")
        return _OBJECTS[name]
    module_name, _, attribute = name.partition(":")
    if not module_name or not attribute:
        raise errors.LotteryError(
            f"--{flag}={name} is not an import path package.module:function")
    module = _import(module_name, name, flag)
    target = module
    for part in attribute.split("."):
        if not hasattr(target, part) and module_name == "__main__":
            raise errors.LotteryError(
                f"--{flag}={name}: {attribute!r} was defined in the script that made the run, "
                "which this program is not; move it into a module and use that import path")
        if not hasattr(target, part):
            raise errors.LotteryError(f"--{flag}={name}: module {module_name!r} has no {attribute!r}")
        target = getattr(target, part)
    return target


def _import(module_name, name, flag):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        # Like `python -m`, find the user's module in the current directory too
        # (the `lottery-tf` script's own directory is on sys.path instead).
        if e.name != module_name.split(".")[0] or os.getcwd() in sys.path:
            raise _import_error(module_name, name, flag, e) from None
        sys.path.append(os.getcwd())
        try:
            return importlib.import_module(module_name)
        except Exception as again:  # noqa: BLE001 - the user's module: any error, one line
            raise _import_error(module_name, name, flag, again) from None
    except Exception as e:  # noqa: BLE001
        raise _import_error(module_name, name, flag, e) from None


def _import_error(module_name, name, flag, e):
    return errors.LotteryError(
        f"--{flag}={name}: cannot import {module_name!r} ({errors.one_line(e)}); put it on "
        "PYTHONPATH or run from its directory")


def _keyword(flag):
    return "model" if flag == "model" else "data"


def name_for(obj, flag):
    """The --model / --dataset value that records `obj` (a string is kept as it is).

    A module-level function is recorded by its import path; anything else is
    kept in this process as `python:NAME`.
    """
    if isinstance(obj, str):
        return obj
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", "")
    if inspect.isfunction(obj) and module and "<" not in qualname:
        path = f"{module}:{qualname}"
        try:
            if resolve(path, flag) is obj:
                return path
        except errors.LotteryError:
            pass
    label = getattr(obj, "name", "") or getattr(obj, "__name__", "") or type(obj).__name__
    name = PYTHON + re.sub(r"[^\w.-]", "_", str(label))
    _OBJECTS[name] = obj
    return name


def call(fn, name, flag, **available):
    """Calls the user's function with those of `available`'s keywords it declares."""
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn(**available)
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return fn(**available)
    unknown = [n for n, p in parameters.items() if n not in available and p.default is p.empty
               and p.kind not in (p.VAR_POSITIONAL,)]
    if unknown:
        raise errors.LotteryError(
            f"--{flag}={name}: its parameter {unknown[0]!r} is not one lottery-tf passes "
            f"(it passes {', '.join(available)}, by keyword); give it a default or remove it")
    return fn(**{n: v for n, v in available.items() if n in parameters})
