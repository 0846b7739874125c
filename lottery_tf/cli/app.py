"""One pattern for every lottery-tf command: a `Command` with its own flags.

`lottery-tf [NAME] [--flag=value ...]` runs command NAME (`train` when no
name is given). Each command defines its flags on a fresh `FlagValues` when it
runs, so no library module defines flags on import and commands never clash
over flag names. Start-up is done here once for all of them: TensorFlow's
C++ chatter muted, its oneDNN kernels on (`lottery_tf.onednn`), absl logging
quiet, `-h`/`--help`/`--helpfull`, unexpected arguments refused, and every
user error (`errors.LotteryError`, a bad flag or flagfile) printed as one
line `lottery-tf: error: ...` with exit status 2.

A command is one class:

    class Hello(app.Command):
        name = "hello"
        summary = "Says hello."

        def define_flags(self, fv):
            flags.DEFINE_string("who", "world", "Whom to greet.", flag_values=fv)

        def run(self, fv):
            print(f"hello {fv.who}")

and one entry in `lottery_tf.cli.main.COMMANDS` (or `app.main(Hello())` in a
module's `__main__` block for a stand-alone program such as a benchmark).
"""

import os
import re
import sys

# Quiet TensorFlow's C++ start-up chatter unless the user asked for it; must be
# set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags, logging  # noqa: E402

from lottery_tf import errors, interrupts, onednn  # noqa: E402

onednn.default_on()  # likewise before TensorFlow: its oneDNN CPU kernels

from lottery_tf.quiet import start_tensorflow_quietly  # noqa: E402

PROGRAM = "lottery-tf"
HELP_FLAGS = ("-h", "--help", "-help", "--helpshort")
HELPFULL_FLAGS = ("--helpfull", "-helpfull")


class Command:
    """A lottery-tf command: its name, its flags and what it does.

    Subclasses set `name` and `summary`, define flags in `define_flags` (always
    with `flag_values=fv`) and do their work in `run`, raising
    `errors.LotteryError` for anything the user must fix.
    """

    name = ""
    summary = ""
    # Set to False by commands that never touch TensorFlow.
    needs_tensorflow = True

    def define_flags(self, fv):
        """Defines the command's flags on `fv` (a fresh `flags.FlagValues`)."""

    def refused_flag(self, name):
        """A one-line reason when `--name` is unknown here but known elsewhere."""
        from lottery_tf.cli.train import TRAINING_FLAGS

        if self.name and name in TRAINING_FLAGS:
            return f"--{name} is a training flag; `{self.program()}` does not take it"
        return None

    def run(self, fv):
        """Does the command's work; `fv` holds the parsed flags."""
        raise NotImplementedError

    def program(self):
        return f"{PROGRAM} {self.name}" if self.name else PROGRAM


def fail(message):
    """Ends the program on a user error: one line on stderr, exit status 2."""
    print(f"{PROGRAM}: error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def warn(message):
    """One line on stderr; the program goes on."""
    print(f"{PROGRAM}: warning: {message}", file=sys.stderr, flush=True)


def print_line(line):
    print(line, flush=True)


def default_verbose():
    """Keras progress: a bar on a terminal, one line per round otherwise."""
    return 1 if sys.stdout.isatty() else 2


def quiet_logging():
    """absl logging at ERROR: TFDS logs each file it opens (INFO) and its own
    deprecations (WARNING); the per-round lines and errors say what users need."""
    logging.set_verbosity(logging.ERROR)
    # Nothing parses absl's global flags here; mark them parsed so absl logging
    # does not warn about "logging before flag parsing".
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def flags_help(fv, full):
    """Text listing `fv`'s flags: name, default and help (the full help with `full`)."""
    lines = []
    for name in sorted(fv):
        flag = fv[name]
        if flag.name != name:  # a short name pointing at another flag
            continue
        help_text = flag.help or ""
        if not full:
            help_text = re.split(r"(?<!e\.g)(?<!i\.e)\. ", help_text)[0].rstrip(".") + "."
        default = flag.default_as_str.strip("'") if flag.default_as_str is not None else "none"
        lines.append(f"  --{name}: {help_text} (default: {default or 'empty'})")
    return "\n".join(lines)


def usage(command, fv, full, commands=None):
    name = " [COMMAND]" if commands else ""
    text = [f"usage: {command.program()}{name} [--flag=value ...]", "", command.summary.strip()]
    if commands:
        text += ["", "commands:"]
        text += [f"  {c.name or 'train':<8} {c.summary.splitlines()[0]}" for c in commands]
        text += ["", f"`{PROGRAM} NAME --help` shows a command's flags."]
    text += ["", "flags:" if full else "flags (--helpfull for the whole help of each):", flags_help(fv, full)]
    text += ["  --flagfile: Read flags from a file (one --flag=value a line; # comments)."]
    return "\n".join(text)


def parse(command, argv, commands=None):
    """Defines `command`'s flags on a fresh FlagValues and parses `argv`.

    Returns (flag values, remaining arguments); `--help` prints and exits 0.
    """
    fv = flags.FlagValues()
    command.define_flags(fv)
    wanted = [a for a in argv[1:] if a in HELP_FLAGS + HELPFULL_FLAGS]
    if wanted:
        try:
            print(usage(command, fv, wanted[0] in HELPFULL_FLAGS, commands), flush=True)
        except BrokenPipeError:  # `lottery-tf --help | head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    try:
        remaining = fv(argv)
    except flags.UnrecognizedFlagError as e:
        reason = command.refused_flag(e.flagname)
        fail(reason or str(e).replace("ERROR:: ", ""))
    except flags.Error as e:
        fail(_included_flagfile_hint(argv, str(e).replace("ERROR:: ", "")))
    return fv, remaining


def _included_flagfile_hint(argv, message):
    """Names the flagfile that includes a missing one, and where it is read from.

    absl reads a `--flagfile=` line inside a flagfile relative to the current
    directory, not to the including file: `lottery-tf --flagfile=REPO/flags/quickstart.flags`
    run elsewhere misses the LeNet flagfile it includes.
    """
    missing = re.search(r"Unable to open flagfile: .*No such file or directory: '([^']+)'", message)
    if not missing:
        return message
    for arg in argv[1:]:
        if not arg.startswith("--flagfile="):
            continue
        outer = arg.split("=", 1)[1]
        try:
            with open(os.path.expanduser(outer)) as f:
                includes = any(line.strip() == f"--flagfile={missing.group(1)}" for line in f)
        except OSError:
            continue
        if includes:
            return (f"flagfile {missing.group(1)}, included by {outer}, does not exist here "
                    f"({os.getcwd()}): flagfiles it includes are read relative to the current "
                    "directory; run from the directory they are relative to (for the shipped "
                    "flags/*.flags, the repository root)")
    return message


def main(command, argv=None, commands=None):
    """Runs `command` on `argv` (sys.argv by default) as a program."""
    argv = list(sys.argv if argv is None else argv)
    argv = [command.program()] + argv[1:]
    quiet_logging()
    if command.needs_tensorflow:
        # Before flags are defined: their help lists registries that import TF.
        start_tensorflow_quietly()
    fv, remaining = parse(command, argv, commands)
    if len(remaining) > 1:
        fail(f"unexpected arguments: {' '.join(remaining[1:])}")
    interrupts.watch()
    try:
        command.run(fv)
    except errors.LotteryError as e:
        fail(str(e))
    except (errors.Interrupted, KeyboardInterrupt) as e:
        where = e if isinstance(e, errors.Interrupted) else errors.Interrupted()
        print(f"{PROGRAM}: {where.message()}", file=sys.stderr, flush=True)
        sys.exit(130)
