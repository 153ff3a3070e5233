"""The one exception type that means "bad input": its message says what was wrong and what to do."""


class SeglocError(Exception):
    """A user-facing error: bad input, a corrupt file, a configuration mistake.

    The CLI prints the message on one line and exits non-zero; nodes log it and publish a
    diagnostic. Programming errors are not wrapped in this type.
    """
