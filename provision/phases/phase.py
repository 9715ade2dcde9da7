"""A phase is data: a name, one line saying what it does, what it does (run), when it applies
(run_if), what it would do (plan, for --dry-run), and children run in order after it.

Names are paths like kubeadm's workflow phases: `etcd`, `etcd/health`. Skipping a parent skips its
children; running a parent runs its children.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from provision.errors import ConfigError

Context = Any  # what the phase list passes around (provision/phases/up.py: UpContext)


@dataclass(frozen=True)
class Phase:
    name: str
    description: str
    run: Callable[[Context], None] | None = None  # None: a group, its children do the work
    run_if: Callable[[Context], bool] = lambda ctx: True
    plan: Callable[[Context], Iterable[tuple[str | None, str]]] | None = None  # (host or None, what) lines
    children: tuple[Phase, ...] = field(default_factory=tuple)
    why_not: str = ""  # shown when run_if says no, e.g. "etcd is stacked"


@dataclass(frozen=True)
class Step:
    """A phase at its place in the tree: `path` is its full name, `depth` its indentation."""

    path: str
    depth: int
    phase: Phase


def flatten(phases: Iterable[Phase], prefix: str = "", depth: int = 0) -> list[Step]:
    steps: list[Step] = []
    for phase in phases:
        path = f"{prefix}{phase.name}"
        steps.append(Step(path, depth, phase))
        steps += flatten(phase.children, f"{path}/", depth + 1)
    return steps


def select(phases: Iterable[Phase], names: Iterable[str]) -> set[str]:
    """The full paths that `names` cover (a name covers its children); unknown names are errors."""
    steps = flatten(phases)
    paths = [s.path for s in steps]
    chosen: set[str] = set()
    for name in names:
        name = name.strip().strip("/")
        if not name:
            continue
        matched = [p for p in paths if p == name or p.startswith(name + "/")]
        if not matched:
            raise ConfigError(f"no phase named {name!r}; phases: {', '.join(paths)}", field="--skip-phases")
        chosen.update(matched)
    return chosen
