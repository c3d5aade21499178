"""One exception type for every mistake a user can fix; the CLI prints it without a traceback."""


class GrokscopeError(Exception):
    """A user-facing error: the message says what is wrong and what to do."""


def require(ok: bool, message: str) -> None:
    """Raise a 'bad config' GrokscopeError with `message` unless `ok` (config validators use it)."""
    if not ok:
        raise GrokscopeError(f"bad config: {message}")
