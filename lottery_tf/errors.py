"""The one error type users see: a problem with what they asked for."""


class LotteryError(Exception):
    """Bad input or an unusable run directory; the CLI prints it as one line."""


class Interrupted(Exception):
    """The user stopped the program (Ctrl-C); what was complete is kept.

    Not a `LotteryError`: the command line ends with exit status 130, as a
    shell does for SIGINT, and says where it stopped.
    """

    def __init__(self, where=""):
        super().__init__(where)
        self.where = where

    def message(self):
        at = f" at {self.where}" if self.where else ""
        return f"interrupted{at}; rerun the same command to resume"


def one_line(error, limit=200):
    """`error` as 'Type: message' on one line, for a message about someone else's code."""
    text = " ".join(str(error).split())
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
