"""Compare two renders (DIR/<host>/… trees) the way a reviewer wants to read it.

Secret files (mode without group/other bits: keys, kubeconfigs, encryption config) are reported
as changed but their content is never shown.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from provision.render.tree import File, Tree, read_tree

CLUSTER_DIR = "_cluster"


@dataclass(frozen=True)
class Change:
    host: str
    path: PurePosixPath
    kind: str  # added | removed | changed | mode
    diff: str = ""  # unified diff for readable, non-secret text


def read_render(root: Path) -> dict[str, Tree]:
    """Every host directory (and _cluster) of an earlier render."""
    if not root.is_dir():
        return {}
    return {child.name: read_tree(child) for child in sorted(root.iterdir()) if child.is_dir()}


def diff_renders(old: dict[str, Tree], new: dict[str, Tree]) -> list[Change]:
    changes = []
    for host in sorted(set(old) | set(new)):
        before, after = old.get(host, {}), new.get(host, {})
        for path in sorted(set(before) | set(after)):
            a, b = before.get(path), after.get(path)
            if a == b:
                continue
            if a is None:
                changes.append(Change(host, path, "added"))
            elif b is None:
                changes.append(Change(host, path, "removed"))
            elif a.content == b.content:
                changes.append(Change(host, path, "mode", f"{a.mode:04o} → {b.mode:04o}"))
            else:
                changes.append(Change(host, path, "changed", _text_diff(host, path, a, b)))
    return changes


def _text_diff(host: str, path: PurePosixPath, a: File, b: File) -> str:
    if a.secret or b.secret:
        return "(secret: content not shown)"
    try:
        old, new = a.content.decode(), b.content.decode()
    except UnicodeDecodeError:
        return "(binary)"
    label = f"{host}{path}"
    return "".join(
        difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"a/{label}", f"b/{label}", n=2)
    )
