"""The command line: `lottery-tf [COMMAND] [--flag=value ...]` (see main.py)."""


def run(argv=None):
    """Console-script entry point (`lottery-tf`)."""
    from lottery_tf.cli.main import run as run_main

    run_main(argv)
