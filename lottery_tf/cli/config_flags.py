"""Command-line flags derived from `Config`'s field declarations.

One flag per field, named like it, with the declared help (allowed names
filled in from the registries), default and type; deprecated aliases still
work, with a one-line notice.
"""

import dataclasses
import os

from absl import flags

from lottery_tf import config as config_lib, errors
from lottery_tf.cli import app


_DEFINE = {bool: flags.DEFINE_boolean, int: flags.DEFINE_integer,
           float: flags.DEFINE_float, str: flags.DEFINE_string}


def _help(field):
    text = field.metadata["help"]
    if field.metadata["choices"]:
        text = text.replace("{choices}", ", ".join(config_lib.registry_of(field).names()))
    return text.replace("{fixed}", ", ".join(config_lib.Config().fixed_hyperparameters()))


def fields(config_class=config_lib.Config):
    return dataclasses.fields(config_class)


def define(fv, config_class=config_lib.Config):
    """Defines a flag for every field of `config_class` (a `Config`) on `fv`."""
    for field in fields(config_class):
        default = field.metadata["flag_default"]
        help_text = _help(field)
        kind = field.metadata["flag_type"]
        if kind == "list":
            define_fn = flags.DEFINE_list
            default = [x for x in default.split(",") if x] if default is not None else None
        else:
            define_fn = _DEFINE[field.type]
        define_fn(field.name, default, help_text, flag_values=fv)
        for alias in field.metadata["aliases"]:
            define_fn(alias, None, f"Deprecated: use --{field.name}.", flag_values=fv)


def names(config_class=config_lib.Config):
    """Every flag name `define` defines (aliases included)."""
    found = fields(config_class)
    return {f.name for f in found} | {a for f in found for a in f.metadata["aliases"]}


def config_from_flags(fv, config_class=config_lib.Config):
    """The `config_class` the parsed flags `fv` describe (not yet validated)."""
    values = {}
    for field in fields(config_class):
        value = fv[field.name].value
        for alias in field.metadata["aliases"]:
            if fv[alias].present:
                app.warn(f"--{alias} is deprecated; use --{field.name}")
                if not fv[field.name].present:
                    value = fv[alias].value
        if field.metadata["flag_type"] == "list":
            value = ",".join(value or [])
        if field.metadata["path"] and value:
            value = os.path.expanduser(value)
        values[field.name] = value
    if values["verbose"] is None:
        values["verbose"] = app.default_verbose()
    # Inside Config, --reset=theta0 with --rewind_iteration reads as rewind (what
    # --rewind_iteration alone has always meant); said explicitly, it is a contradiction.
    if fv["reset"].present and values["reset"] == "theta0" and values["rewind_iteration"]:
        raise errors.LotteryError(
            f"--reset=theta0 restarts from θ0, but --rewind_iteration={values['rewind_iteration']} "
            "asks for a rewind point: use --reset=rewind, or drop --rewind_iteration")
    # A one-shot run is two rounds (dense, pruned) unless --rounds says otherwise.
    if values["one_shot_sparsity"] and not fv["rounds"].present:
        values["rounds"] = 2
    return config_class(**values)
