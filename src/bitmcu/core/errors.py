"""The one exception type users see: a message in their words, printed without a traceback."""


class BitmcuError(Exception):
    """A user-facing error: bad input, missing file, model that does not fit.

    The CLI prints ``bitmcu: error: <message>`` and exits with status 2.
    """


def choices(values) -> str:
    """Format allowed values for an error message: ``'a', 'b' or 'c'``."""
    vals = [repr(v) for v in values]
    if len(vals) <= 1:
        return "".join(vals)
    return ", ".join(vals[:-1]) + " or " + vals[-1]
