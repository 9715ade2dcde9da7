"""What a lab is made of, on disk: <state dir>/<lab>/state.json, written before anything is made.

The state names the lab's subnet and hosts; the names of everything else follow from `Layout`.
Teardown also finds things by name, so a lost or half-written state still leaves nothing behind.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from provision.fsutil import PRIVATE_FILE_MODE, atomic_write, ensure_private_dir
from provision.lab.errors import LabError
from provision.lab.layout import Layout, check_name, state_root


@dataclass
class LabState:
    name: str
    index: int
    hosts: list[int] = field(default_factory=list)  # host numbers: 1 → <lab>-1
    control_planes: int = 1

    @property
    def layout(self) -> Layout:
        return Layout(self.name, self.index)

    @property
    def path(self) -> Path:
        return self.layout.state_dir / "state.json"

    def save(self) -> None:
        ensure_private_dir(self.layout.state_dir)
        atomic_write(self.path, (json.dumps(asdict(self), indent=2) + "\n").encode(), PRIVATE_FILE_MODE, replace=True)


def load(name: str) -> LabState | None:
    path = state_root() / check_name(name) / "state.json"
    try:
        data = json.loads(path.read_text())
        return LabState(name=data["name"], index=int(data["index"]), hosts=[int(n) for n in data["hosts"]],
                        control_planes=int(data.get("control_planes", 1)))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LabError(f"{path}: unreadable lab state ({exc}); `kubeprov lab down --name {name}` removes the lab") from None


def all_labs() -> list[LabState]:
    root = state_root()
    if not root.is_dir():
        return []
    labs = []
    for path in sorted(root.glob("*/state.json")):
        state = load(path.parent.name)
        if state:
            labs.append(state)
    return labs
