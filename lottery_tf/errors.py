"""The one error type users see: a problem with what they asked for."""


class LotteryError(Exception):
    """Bad input or an unusable run directory; the CLI prints it as one line."""
