"""The journal: which phases of the current `up` finished, so a failed run resumes where it stopped.

One JSON file in the cluster directory. It belongs to one cluster spec (a fingerprint of the
loaded cluster): a run with a changed spec starts over. A run that finishes every phase marks the
journal complete, so the next `up` runs every phase again (each is idempotent; that is how a
second `up` confirms that nothing changed).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

from provision.fsutil import PRIVATE_FILE_MODE, atomic_write, ensure_private_dir

FILE = "journal.json"


@dataclass
class Journal:
    path: Path
    fingerprint: str
    completed: dict[str, float] = field(default_factory=dict)  # phase path → seconds it took
    failed: dict[str, str] = field(default_factory=dict)  # phase path → error
    finished: bool = False
    started: str = ""

    @classmethod
    def open(cls, cluster_dir: Path, fingerprint: str, *, fresh: bool = False) -> tuple[Journal, bool]:
        """(journal, resumed): resumed when an unfinished run of the same spec left completed phases."""
        path = Path(cluster_dir) / FILE
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        if not fresh and path.exists():
            try:
                data = json.loads(path.read_text())
            except ValueError:
                data = {}
            if data.get("fingerprint") == fingerprint and not data.get("finished") and data.get("completed"):
                return cls(path, fingerprint, dict(data["completed"]), dict(data.get("failed") or {}), False,
                           data.get("started", now)), True
        return cls(path, fingerprint, started=now), False

    def done(self, phase: str, seconds: float) -> None:
        self.completed[phase] = round(seconds, 3)
        self.failed.pop(phase, None)
        self.save()

    def fail(self, phase: str, error: str) -> None:
        self.failed[phase] = error
        self.save()

    def finish(self) -> None:
        self.finished = True
        self.save()

    def save(self) -> None:
        ensure_private_dir(self.path.parent)
        data = {"fingerprint": self.fingerprint, "started": self.started, "finished": self.finished,
                "completed": self.completed, "failed": self.failed}
        atomic_write(self.path, (json.dumps(data, indent=2) + "\n").encode(), PRIVATE_FILE_MODE, replace=True)

    @staticmethod
    def discard(cluster_dir: Path) -> bool:
        """Forget any interrupted run (True if there was a journal): after hosts were reset, resuming
        would skip the phases that must rebuild them."""
        path = Path(cluster_dir) / FILE
        if not path.exists():
            return False
        path.unlink()
        return True


@dataclass
class HostJournal:
    """Host-granular progress of a rolling change (provision/rolling.py) or an upgrade: per host
    (or named step) "started" with what it still owes (e.g. a kubelet restart), then "done". Tied
    to one key (the change being rolled: a spec fingerprint, a target version); another key starts
    over. Kept until the caller finishes the whole roll, so an interrupted one resumes host by host."""

    path: Path
    key: str
    hosts: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path, key: str) -> HostJournal:
        path = Path(path)
        if path.exists():
            try:
                data = json.loads(path.read_text())
            except ValueError:
                data = {}
            if data.get("key") == key:
                return cls(path, key, dict(data.get("hosts") or {}))
        return cls(path, key)

    @staticmethod
    def unfinished_key(path: Path) -> str | None:
        """The key of the roll journalled at `path` and not finished yet (None: no such roll)."""
        try:
            return json.loads(Path(path).read_text()).get("key")
        except (FileNotFoundError, ValueError, AttributeError):
            return None

    @property
    def resumed(self) -> bool:
        return bool(self.hosts)

    def done(self, name: str) -> bool:
        return self.hosts.get(name, {}).get("state") == "done"

    def owed(self, name: str) -> dict:
        """What an interrupted run had started on `name` and not finished ({} when nothing)."""
        entry = self.hosts.get(name, {})
        return {} if entry.get("state") == "done" else dict(entry)

    def mark(self, name: str, state: str, **data) -> None:
        self.hosts[name] = {**self.hosts.get(name, {}), **data, "state": state}
        self.save()

    def save(self) -> None:
        ensure_private_dir(self.path.parent)
        data = {"key": self.key, "hosts": self.hosts}
        atomic_write(self.path, (json.dumps(data, indent=2) + "\n").encode(), PRIVATE_FILE_MODE, replace=True)

    def finish(self) -> None:
        self.path.unlink(missing_ok=True)
