"""The offline bundle as prepare consumes it: bin/<name>, images/*.tar, SHA256SUMS over every file.

Verified completely on the controller before any host is touched: a file whose sha256 differs
from SHA256SUMS, a file SHA256SUMS does not cover, or a listed file that is missing refuses the
whole bundle. (provision/artifacts/ owns fetching and building bundles; this module only reads
the documented layout, so prepare works with any bundle that follows it.)
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from provision.errors import ConfigError

SUMS = "SHA256SUMS"


@dataclass(frozen=True)
class Image:
    file: str  # path inside the bundle, e.g. images/pause.tar
    sha256: str
    refs: tuple[str, ...]  # the names containerd gives the image once imported


@dataclass(frozen=True)
class Bundle:
    root: Path
    binaries: dict[str, str] = field(default_factory=dict)  # name → sha256
    images: tuple[Image, ...] = ()

    def path(self, relative: str) -> Path:
        return self.root / relative


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_sums(root: Path) -> dict[str, str]:
    sums_file = root / SUMS
    try:
        text = sums_file.read_text()
    except FileNotFoundError:
        raise ConfigError(f"no {SUMS}: a bundle must list the sha256 of every file", source=str(root)) from None
    sums = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        name = name.removeprefix("*").removeprefix("./")
        if len(digest) != 64 or not name or ".." in Path(name).parts or name.startswith("/"):
            raise ConfigError(f"line {number} is not '<sha256>  <relative path>'", source=str(sums_file))
        sums[name] = digest.lower()
    return sums


def verify(root: Path) -> Bundle:
    """Check every file against SHA256SUMS; return what the bundle offers. Raises ConfigError naming
    the first bad file — before anything is copied anywhere."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError("bundle directory does not exist", source=str(root))
    sums = _read_sums(root)
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != SUMS}
    for name in sorted(present - set(sums)):
        raise ConfigError(f"{name} is not listed in {SUMS}; refusing an unverifiable file", source=str(root))
    for name in sorted(set(sums) - present):
        raise ConfigError(f"{SUMS} lists {name} but the file is missing", source=str(root))
    for name, expected in sorted(sums.items()):
        actual = sha256_file(root / name)
        if actual != expected:
            raise ConfigError(
                f"{name}: sha256 {actual} does not match {SUMS} ({expected}); refusing the bundle", source=str(root)
            )
    binaries = {name.removeprefix("bin/"): digest for name, digest in sums.items() if name.startswith("bin/") and name.count("/") == 1}
    images = tuple(
        Image(name, digest, image_refs(root / name))
        for name, digest in sorted(sums.items())
        if name.startswith("images/") and name.endswith(".tar")
    )
    return Bundle(root, binaries, images)


def normalize_ref(name: str) -> str:
    """The name containerd stores for a short reference, as its docker-style normalisation does."""
    first, _, rest = name.partition("/")
    if not rest:
        return f"docker.io/library/{name}"
    if "." not in first and ":" not in first and first != "localhost":
        return f"docker.io/{name}"
    return name


def image_refs(path: Path) -> tuple[str, ...]:
    """Names in a docker-archive (manifest.json RepoTags) or OCI archive (index.json annotations)."""
    try:
        with tarfile.open(path) as tar:
            names = set(tar.getnames())
            if "manifest.json" in names:
                manifest = json.load(tar.extractfile("manifest.json"))
                refs = [tag for entry in manifest for tag in entry.get("RepoTags") or []]
            elif "index.json" in names:
                index = json.load(tar.extractfile("index.json"))
                refs = []
                for entry in index.get("manifests", []):
                    notes = entry.get("annotations", {})
                    ref = notes.get("io.containerd.image.name") or notes.get("org.opencontainers.image.ref.name")
                    if ref and ("/" in ref or ":" in ref):  # a bare OCI tag like "1" names nothing
                        refs.append(ref)
            else:
                raise ConfigError("neither a docker-archive (manifest.json) nor an OCI archive (index.json)", source=str(path))
    except (tarfile.TarError, OSError, ValueError) as exc:
        raise ConfigError(f"cannot read image archive: {exc}", source=str(path)) from None
    if not refs:
        raise ConfigError("the image archive names no image (no RepoTags / ref.name annotation)", source=str(path))
    return tuple(sorted({normalize_ref(ref) for ref in refs}))


def write_sums(root: Path) -> None:
    """SHA256SUMS for every file under root (for tests and hand-made bundles)."""
    lines = [
        f"{sha256_file(p)}  {p.relative_to(root).as_posix()}"
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != SUMS
    ]
    (root / SUMS).write_text("\n".join(lines) + "\n")
