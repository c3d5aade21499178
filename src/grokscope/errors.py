"""One exception type for every mistake a user can fix; the CLI prints it without a traceback."""


class GrokscopeError(Exception):
    """A user-facing error: the message says what is wrong and what to do."""
