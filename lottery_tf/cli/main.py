"""The `lottery-tf` program: `lottery-tf [COMMAND] [--flag=value ...]`.

Without a command name it trains (`TrainCommand`). A new command is a
`app.Command` subclass in its own module and one entry in `COMMANDS`.
"""

import sys

from lottery_tf.cli import app
from lottery_tf.cli.branch import BranchCommand
from lottery_tf.cli.report import ReportCommand
from lottery_tf.cli.train import TrainCommand


def _export_command():
    from lottery_tf.cli.export import ExportCommand

    return ExportCommand()


# name -> a zero-argument callable making the command.
COMMANDS = {
    "train": TrainCommand,
    "branch": BranchCommand,
    "export": _export_command,
    "report": ReportCommand,
}


def run(argv=None):
    """Console-script entry point."""
    argv = list(sys.argv if argv is None else argv)
    wants_help = any(a in app.HELP_FLAGS + app.HELPFULL_FLAGS for a in argv[1:])
    commands = [make() for make in COMMANDS.values()] if wants_help else None
    if len(argv) > 1 and argv[1] in COMMANDS and argv[1] != "train":
        command = COMMANDS[argv[1]]()
        argv = argv[:1] + argv[2:]
        app.main(command, argv)
    else:
        if len(argv) > 1 and argv[1] == "train":
            argv = argv[:1] + argv[2:]
        elif len(argv) > 1 and not argv[1].startswith("-"):
            app.fail(f"unknown command {argv[1]!r}; commands: {', '.join(COMMANDS)} "
                     f"(`{app.PROGRAM} --help` lists them)")
        app.main(TrainCommand(), argv, commands=commands)


if __name__ == "__main__":
    run()
