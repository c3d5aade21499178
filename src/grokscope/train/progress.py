"""Progress that suits where it goes: tqdm's live bar on a terminal; in a log (stderr not a
terminal) one plain line every `every_s` seconds, so an hour of training is not one huge line of
carriage-return frames."""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm


class LogLines:
    """The part of tqdm's interface the trainer uses, writing whole lines."""

    def __init__(self, total: int, initial: int, every_s: float = 10.0, file=None):
        self.total, self.n, self.every_s = total, initial, every_s
        self.file = file or sys.stderr
        self.postfix = ""
        self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self._last >= self.every_s:
            self._line()

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def _line(self) -> None:
        self._last = time.monotonic()
        print(f"step {self.n}/{self.total} {self.postfix}".rstrip(), file=self.file, flush=True)

    def __enter__(self) -> LogLines:
        return self

    def __exit__(self, *exc) -> None:
        self._line()


def progress_bar(total: int, initial: int, enabled: bool):
    """A live bar on a terminal, whole lines in a log, nothing when not `enabled`."""
    if enabled and not sys.stderr.isatty():
        return LogLines(total, initial)
    return tqdm(total=total, initial=initial, disable=not enabled, dynamic_ncols=True, leave=True)
