"""The offline bundle: a directory an air-gapped site carries in, checked before any use.

    bin/<name>       kubelet, kubectl, crictl, containerd, containerd-shim-runc-v2, runc,
                     etcd, etcdctl (external etcd); kubeadm, kube-proxy, ctr … may ride along
    cni/<plugin>     bridge, host-local, loopback, portmap (more are fine)
    images/*.tar     OCI layout or docker-archive tarballs; their references are read from them
    debs/*.deb       optional, for the package roles
    SHA256SUMS       `sha256sum` output covering every other file, paths relative to the bundle

A bundle is trusted only as a whole: a listed file missing, a file nobody listed, or one digest
wrong, and it is refused with the file named — before a single byte is copied anywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from provision.artifacts.checksums import DigestCache, parse_sums, sha256_file
from provision.artifacts.images import image_refs, normalise

SUMS = "SHA256SUMS"
BIN_DIR, CNI_DIR, IMAGES_DIR, DEBS_DIR = "bin", "cni", "images", "debs"
_CNI_COMPONENT = "cni-plugins"


@dataclass(frozen=True)
class Problem:
    path: str  # relative to the bundle
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def bundle_path(component: str, file: str) -> str:
    """Where a component's file sits in a bundle: cni/<plugin> for CNI plugins, else bin/<file>."""
    return f"{CNI_DIR}/{file}" if component == _CNI_COMPONENT else f"{BIN_DIR}/{file}"


def _unsafe(name: str) -> bool:
    path = PurePosixPath(name)
    return path.is_absolute() or ".." in path.parts or name != str(path) or name.startswith("./")


def read_sums(root: Path) -> tuple[dict[str, str], list[Problem]]:
    """SHA256SUMS as {relative path: digest}, or the problem that makes it unusable."""
    sums_file = root / SUMS
    if not root.is_dir():
        return {}, [Problem(str(root), "no such directory")]
    if not sums_file.is_file():
        return {}, [Problem(SUMS, "missing: the bundle must list every file's sha256 (sha256sum format)")]
    try:
        sums = parse_sums(sums_file.read_text(errors="replace"), SUMS)
    except ValueError as exc:
        return {}, [Problem(SUMS, str(exc).removeprefix(f"{SUMS} "))]
    bad = [Problem(name, f"unsafe path in {SUMS} (absolute, .. or not normalised)") for name in sums if _unsafe(name)]
    return ({} if bad else sums), bad


def check_integrity(root: Path, digests: DigestCache | None = None) -> tuple[dict[str, str], list[Problem]]:
    """Every listed file present with its digest, and no file unlisted. `digests` remembers the
    digests of files unchanged since they were last hashed."""
    sums, problems = read_sums(root)
    if problems:
        return sums, problems
    for name, digest in sorted(sums.items()):
        path = root / name
        if path.is_symlink():
            problems.append(Problem(name, "is a symbolic link; a bundle holds regular files only"))
        elif not path.is_file():
            problems.append(Problem(name, f"missing (listed in {SUMS})"))
        else:
            actual = digests.sha256(path) if digests else sha256_file(path)
            if actual != digest:
                problems.append(Problem(name, f"sha256 mismatch: {SUMS} says {digest}, the file has {actual}"))
    for dirpath, dirnames, filenames in os.walk(root):
        for file in filenames:
            name = (Path(dirpath) / file).relative_to(root).as_posix()
            if name != SUMS and name not in sums:
                problems.append(Problem(name, f"not listed in {SUMS}"))
    if digests and not problems:
        digests.save()
    return sums, sorted(problems, key=lambda p: p.path)


def image_index(root: Path, sums: dict[str, str]) -> tuple[dict[str, str], list[Problem]]:
    """{normalised image reference: tarball path} over the listed images/*.tar."""
    found: dict[str, str] = {}
    problems: list[Problem] = []
    for name in sorted(n for n in sums if n.startswith(f"{IMAGES_DIR}/") and n.endswith(".tar")):
        try:
            refs = image_refs(root / name)
        except ValueError as exc:
            problems.append(Problem(name, str(exc)))
            continue
        if not refs:
            problems.append(Problem(name, "names no image (no io.containerd.image.name, ref.name or RepoTags)"))
        for ref in refs:
            found.setdefault(ref, name)
    return found, problems


def check_contents(root: Path, sums: dict[str, str], components, images) -> list[Problem]:
    """What the cluster needs and the bundle lacks, each named with who needs it."""
    problems = []
    for component in components:
        if component.optional:
            continue  # prepare's role installs it only when the bundle has it
        for file in component.files:
            name = bundle_path(component.name, file)
            if name not in sums:
                problems.append(Problem(name, f"missing: {component.name} {component.version} for {', '.join(component.hosts)}"))
    index, image_problems = image_index(root, sums)
    problems += image_problems
    for need in images:
        if normalise(need.ref) not in index:
            problems.append(Problem(f"{IMAGES_DIR}/", f"no tarball holds {need.ref} (needed on {', '.join(need.hosts)})"))
    return problems


def seal(root: Path) -> Path:
    """Write SHA256SUMS for every file under root (for whoever assembles a bundle).

    Refuses when SHA256SUMS exists: re-sealing a bundle would bless whatever changed in it.
    """
    from provision.fsutil import atomic_write

    sums_file = Path(root) / SUMS
    if sums_file.exists():
        raise FileExistsError(f"{sums_file} exists; a bundle is sealed once (remove it deliberately to re-seal)")
    lines = []
    for dirpath, _, filenames in sorted(os.walk(root)):
        for file in sorted(filenames):
            path = Path(dirpath) / file
            lines.append(f"{sha256_file(path)}  {path.relative_to(root).as_posix()}\n")
    atomic_write(sums_file, "".join(sorted(lines, key=lambda line: line[66:])).encode(), 0o644)
    return sums_file
