"""The offline bundle as prepare's roles consume it: binaries by name, image tarballs with the
names containerd will give them.

The checking is provision/artifacts/bundle.py's (every file against SHA256SUMS, nothing unlisted,
image references read from the tarballs); this module only turns its verdict into one error
line — raised before any host is touched — and its contents into what the inventory carries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from provision.artifacts.bundle import BIN_DIR, CNI_DIR, check_integrity, image_index
from provision.artifacts.checksums import DigestCache
from provision.errors import ConfigError


@dataclass(frozen=True)
class Image:
    file: str  # path inside the bundle, e.g. images/pause.tar
    sha256: str
    refs: tuple[str, ...]  # the names containerd gives the image once imported


@dataclass(frozen=True)
class Bundle:
    root: Path
    binaries: dict[str, str] = field(default_factory=dict)  # bin/<name> and cni/<plugin> → sha256
    images: tuple[Image, ...] = ()


def verify(root: Path, digests: DigestCache | None = None) -> Bundle:
    """The bundle, every file checked; ConfigError naming the first bad file otherwise."""
    root = Path(root)
    sums, problems = check_integrity(root, digests)
    index, image_problems = image_index(root, sums) if not problems else ({}, [])
    problems += image_problems
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise ConfigError(f"{problems[0]}{more}; refusing the bundle", source=str(root))
    refs_by_file: dict[str, list[str]] = {}
    for ref, name in index.items():
        refs_by_file.setdefault(name, []).append(ref)
    binaries = {name: digest for name, digest in sums.items() if name.split("/")[0] in (BIN_DIR, CNI_DIR) and name.count("/") == 1}
    images = tuple(Image(name, sums[name], tuple(sorted(refs))) for name, refs in sorted(refs_by_file.items()))
    return Bundle(root, dict(sorted(binaries.items())), images)
