"""The one exception type for user errors; the CLI prints it as one line and exits 1."""


class IAUnetError(Exception):
    """A problem with the user's input (file, layout, checkpoint, argument).

    The message says what was wrong and what was expected, on one line.
    """
