"""Turning a plan into files: fetch release downloads, then lay verified files out under a root.

`stage` is what puts artifacts on a host's filesystem (a lab host's root, or a directory the
node roles push from). It checks every source's sha256 before it writes anything, so a bad
file stops the whole set, and it writes each file atomically with its mode.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tarfile
from pathlib import Path, PurePosixPath

from provision.artifacts.checksums import sha256_file
from provision.artifacts.download import Downloader
from provision.artifacts.errors import ArtifactError
from provision.artifacts.plan import ArtifactPlan, Kind

_EXECUTABLE, _DATA = 0o755, 0o644


def fetch_release(plan: ArtifactPlan, downloader: Downloader) -> ArtifactPlan:
    """The plan with every download fetched and verified: `path` (in the cache) and `sha256` set."""
    fetched = []
    for artifact in plan.artifacts:
        if artifact.kind in (Kind.BINARY, Kind.ARCHIVE) and artifact.url and artifact.sha256_url:
            path = downloader.fetch(artifact.url, artifact.sha256_url)
            artifact = dataclasses.replace(artifact, path=path, sha256=path.name)
        fetched.append(artifact)
    return dataclasses.replace(plan, artifacts=tuple(fetched))


def _under(root: Path, dest: str) -> Path:
    return Path(root) / PurePosixPath(dest).relative_to("/")


def _write(target: Path, source, mode: int) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.kubeprov-{os.getpid()}")
    try:
        with open(tmp, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _member(archive: tarfile.TarFile, name: str) -> tarfile.TarInfo:
    wanted = name.removeprefix("./")
    for info in archive.getmembers():
        if info.name.removeprefix("./") == wanted and info.isfile():
            return info
    raise ArtifactError(f"{archive.name}: has no file {name}")


def stage(plan: ArtifactPlan, root: Path, host: str | None = None) -> list[Path]:
    """Write the plan's files (for one host, or all) under `root` at their host paths; returns them.

    Every local source is re-hashed first; one mismatch raises before anything is written.
    Packages and registry images have no local file and are left to the node roles.
    """
    chosen = [a for a in plan.artifacts if a.path is not None and (host is None or host in a.hosts)]
    for artifact in chosen:
        if artifact.sha256 is None:
            raise ArtifactError(f"{artifact.path}: no sha256 recorded for {artifact.name}; refusing to use it")
        actual = sha256_file(artifact.path)
        if actual != artifact.sha256:
            raise ArtifactError(f"{artifact.path}: sha256 mismatch: expected {artifact.sha256}, got {actual}; nothing was copied")
    written: list[Path] = []
    for artifact in chosen:
        if artifact.kind is Kind.ARCHIVE:
            with tarfile.open(artifact.path) as archive:
                for member, dest in artifact.members:
                    handle = archive.extractfile(_member(archive, member))
                    target = _under(root, dest)
                    _write(target, handle, _EXECUTABLE)
                    written.append(target)
        else:
            target = _under(root, artifact.dest)
            with open(artifact.path, "rb") as handle:
                _write(target, handle, _EXECUTABLE if artifact.kind is Kind.BINARY else _DATA)
            written.append(target)
    return written
