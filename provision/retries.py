"""Bounded retries with exponential backoff for what fails transiently on the way to a mirror or a
host — a release download (a mirror's 503, a dropped connection, a body cut short) and an SSH
connect (a host rebooting, sshd restarting) — each retry said as one line.

tenacity does the retrying; this module holds the one policy shape both use (`Backoff`), the line
they print, and where that line goes. The caller says which errors are transient; any other error
fails at once, and the last transient one, once the attempts are spent, is raised as the caller's
one-line error.

Where lines go: a Downloader or Transport given `on_retry` calls it (tests do); otherwise `say`
hands the line to this process's sink — stderr, unless a command routes it into its own progress
display with `saying_to` (`up` does, into its phase reporter). A process-wide sink rather than a
callback threaded through every layer, because a download happens deep inside prepare's planning
and a connect inside any transport call, and the command that owns the display is far above both.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Callable, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """At most `attempts` tries (1: no retry); the first retry waits `first` seconds, each next one
    twice as long, none longer than `maximum`. The defaults wait 0.5, 1, 2, 4 s: 7.5 s in all."""

    attempts: int = 5
    first: float = 0.5
    maximum: float = 8.0

    def __post_init__(self):
        if self.attempts < 1 or self.first < 0 or self.maximum < self.first:
            raise ValueError(f"a backoff needs attempts ≥ 1 and 0 ≤ first ≤ maximum, not {self}")

    @property
    def retries(self) -> int:
        return self.attempts - 1


NO_RETRY = Backoff(attempts=1)

Sink = Callable[[str | None, str], None]  # (host, or None for the controller's own work; the line)

_stderr_lock = threading.Lock()


def to_stderr(host: str | None, line: str) -> None:
    """The default sink: stderr, one whole line at a time (fan-out threads retry at once), never
    stdout, whose text may be piped into another command."""
    with _stderr_lock:
        print(f"{host}: {line}" if host else line, file=sys.stderr, flush=True)


_sink: Sink = to_stderr


def say(host: str | None, line: str) -> None:
    """Hand a retry line to the current sink."""
    _sink(host, line)


@contextlib.contextmanager
def saying_to(sink: Sink) -> Iterator[None]:
    """Route every retry line of this process to `sink` while the block runs."""
    global _sink
    previous, _sink = _sink, sink
    try:
        yield
    finally:
        _sink = previous


def seconds(delay: float) -> str:
    return f"{delay:.1f}s" if delay >= 0.1 or delay == 0 else f"{delay * 1000:.0f}ms"


def call(
    fn: Callable[[], T],
    backoff: Backoff,
    *,
    transient: Callable[[BaseException], bool],
    reason: Callable[[BaseException], str],
    tell: Callable[[str], None],
    gave_up: Callable[[BaseException, int], BaseException],
) -> T:
    """fn(), tried again after each transient error while attempts remain. Before each retry,
    `tell("retry N/R in Ds: <reason(error)>")`. When the last attempt fails transiently, raises
    `gave_up(error, attempts)`; a permanent error is raised as it is, at once."""

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception()
        tell(f"retry {state.attempt_number}/{backoff.retries} in {seconds(state.next_action.sleep)}: {reason(error)}")

    retrying = Retrying(
        stop=stop_after_attempt(backoff.attempts),
        wait=wait_exponential(multiplier=backoff.first, min=backoff.first, max=backoff.maximum),
        retry=retry_if_exception(transient),
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        return retrying(fn)
    except Exception as error:
        if transient(error) and backoff.attempts > 1:
            raise gave_up(error, backoff.attempts) from None
        raise
