"""What a PKI step did to one file: the row `certs generate`, `certs renew` and `up` print.

Its own module because both the store and the secrets module (which the store imports) return it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Outcome:
    label: str
    path: Path
    action: str  # created | kept | stale | renewed | external
    detail: str = ""
