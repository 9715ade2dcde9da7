"""Run one function over many hosts at once, with a bound, keeping every host's outcome.

One host failing never hides another's result: each host gets an Outcome holding either its value
or its error, in the order the hosts were given.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Generic, Sequence, TypeVar

from provision.config.models import Host
from provision.errors import KubeprovError

T = TypeVar("T")

DEFAULT_PARALLEL = 20


@dataclass(frozen=True)
class Outcome(Generic[T]):
    host: str
    value: T | None
    error: Exception | None
    duration: float

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def error_text(self) -> str:
        """The error as one line; kubeprov's own errors already read well, others get their type."""
        if self.error is None:
            return ""
        if isinstance(self.error, KubeprovError):
            text = str(self.error)
            return text.removeprefix(f"{self.host}: ")
        return f"{type(self.error).__name__}: {self.error}"


def fan_out(hosts: Sequence[Host], work: Callable[[Host], T], *, parallel: int = DEFAULT_PARALLEL) -> list[Outcome[T]]:
    """`work(host)` for every host, at most `parallel` at a time."""

    def one(host: Host) -> Outcome[T]:
        start = time.monotonic()
        try:
            value = work(host)
        except Exception as exc:  # noqa: BLE001 - reported per host, never lost
            return Outcome(host.name, None, exc, time.monotonic() - start)
        return Outcome(host.name, value, None, time.monotonic() - start)

    if not hosts:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(hosts))), thread_name_prefix="kubeprov-ssh") as pool:
        return list(pool.map(one, hosts))
