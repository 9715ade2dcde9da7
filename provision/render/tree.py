"""A host's desired files: absolute path on the host → content and mode. Renderers build these;
`write_trees` lays them out under DIR/<host>/<path> for people and tests to read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from provision.fsutil import PRIVATE_FILE_MODE, atomic_write, ensure_private_dir


@dataclass(frozen=True)
class File:
    content: bytes
    mode: int = 0o644

    @property
    def secret(self) -> bool:
        return not self.mode & 0o077


Tree = dict[PurePosixPath, File]


def merge(*trees: Tree) -> Tree:
    """Union of trees; two renderers claiming one path is a bug, so it raises."""
    out: Tree = {}
    for tree in trees:
        for path, file in tree.items():
            if path in out and out[path] != file:
                raise ValueError(f"two renderers disagree on {path}")
            out[path] = file
    return out


def write_trees(out_dir: Path, trees: dict[str, Tree]) -> list[Path]:
    """Write each host's tree under out_dir/<host>/; returns the files written or changed.

    The directory holds private keys, so it is created 0700 and keys keep their 0600. A file whose
    content and mode already match is left alone, so rendering twice touches nothing.
    """
    ensure_private_dir(out_dir)
    written = []
    for host, tree in sorted(trees.items()):
        for path, file in sorted(tree.items()):
            target = out_dir / host / path.relative_to("/")
            if target.exists() and target.read_bytes() == file.content and (target.stat().st_mode & 0o777) == file.mode:
                continue
            ensure_private_dir(target.parent)
            atomic_write(target, file.content, file.mode, replace=True)
            written.append(target)
    return written


def read_tree(root: Path) -> Tree:
    """The inverse of `write_trees` for one host directory (used by `render --diff`)."""
    return {
        PurePosixPath("/") / p.relative_to(root).as_posix(): File(p.read_bytes(), p.stat().st_mode & 0o777)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


__all__ = ["File", "PRIVATE_FILE_MODE", "Tree", "merge", "read_tree", "write_trees"]
