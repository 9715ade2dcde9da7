"""Which image references an image tarball holds, read from the tarball itself.

OCI image layout (index.json): each manifest's `io.containerd.image.name` annotation (ctr export,
skopeo), else `org.opencontainers.image.ref.name` when it is a full reference. docker-archive
(manifest.json): each entry's RepoTags. References are normalised the way containerd does
(`haproxy:2.8` is `docker.io/library/haproxy:2.8`), so the bundle's names and the manifests' match.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

_DOCKER_HUB = "docker.io"


def normalise(ref: str) -> str:
    """containerd's full form of a reference: registry host, and library/ for Docker Hub's own."""
    first, sep, rest = ref.partition("/")
    if not sep or not ("." in first or ":" in first or first == "localhost"):
        ref = f"{_DOCKER_HUB}/{ref}"
        first, _, rest = ref.partition("/")
    if first == _DOCKER_HUB and "/" not in rest:
        ref = f"{_DOCKER_HUB}/library/{rest}"
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last:
        ref += ":latest"
    return ref


def _member_json(archive: tarfile.TarFile, name: str):
    for candidate in (name, f"./{name}"):
        try:
            member = archive.getmember(candidate)
        except KeyError:
            continue
        handle = archive.extractfile(member)
        if handle is None:
            return None
        return json.loads(handle.read(4 << 20))
    return None


def image_refs(tarball: Path) -> set[str]:
    """The normalised references an OCI or docker-archive tarball carries. Raises ValueError if it is neither."""
    try:
        with tarfile.open(tarball) as archive:
            refs: set[str] = set()
            index = _member_json(archive, "index.json")
            manifest = _member_json(archive, "manifest.json")
    except (tarfile.TarError, OSError, ValueError) as exc:
        raise ValueError(f"not a readable image tarball: {exc}") from None
    if isinstance(index, dict):
        for entry in index.get("manifests") or []:
            annotations = entry.get("annotations") or {}
            name = annotations.get("io.containerd.image.name") or annotations.get("org.opencontainers.image.ref.name")
            if name and ("/" in name or ":" in name.split("@")[0]):  # a bare tag ('v1.0') names no image
                refs.add(normalise(name))
    if isinstance(manifest, list):
        for entry in manifest:
            refs.update(normalise(tag) for tag in (entry.get("RepoTags") or []))
    if index is None and manifest is None:
        raise ValueError("neither an OCI layout (index.json) nor a docker-archive (manifest.json)")
    return refs
