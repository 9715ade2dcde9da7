"""A host's desired files: absolute path on the host → content and mode. Renderers build these;
`write_trees` lays them out under DIR/<host>/<path> for people and tests to read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from provision.errors import KubeprovError
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


MARKER = ".kubeprov-render"


def write_trees(out_dir: Path, trees: dict[str, Tree]) -> list[Path]:
    """Make out_dir/<host>/ hold exactly each host's tree; returns the files written or removed.

    The directory holds private keys, so it is created 0700 and keys keep their 0600. A file whose
    content and mode already match is left alone, so rendering twice touches nothing. Files an
    earlier render left that are no longer rendered are removed — only in a directory that carries
    our marker, so pointing --out at the wrong place cannot delete anyone's files.
    """
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MARKER).exists():
        raise KubeprovError(f"{out_dir} is not empty and is not a kubeprov render directory (no {MARKER}); choose another --out")
    ensure_private_dir(out_dir)
    if not (out_dir / MARKER).exists():
        atomic_write(out_dir / MARKER, b"written by kubeprov render; files here are regenerated\n", 0o644)
    written = []
    for host_dir in sorted(p for p in out_dir.iterdir() if p.is_dir()):
        wanted = trees.get(host_dir.name, {})
        for stale in sorted(p for p in host_dir.rglob("*") if p.is_file()):
            if PurePosixPath("/") / stale.relative_to(host_dir).as_posix() not in wanted:
                stale.unlink()
                written.append(stale)
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
