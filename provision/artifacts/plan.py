"""The artifact plan: every file, image and package a cluster's hosts need, and where each comes from.

`plan_artifacts(cluster)` is the one entry point the node roles use. Each `Artifact` says what it
is, which hosts need it, where it lands on them, and — by source —
  packages  the apt repository and the pinned package (nothing is downloaded by the controller)
  release   the upstream URL and the URL of its published sha256 (`fetch_release` downloads them)
  bundle    the verified file in the offline bundle, with its sha256 from SHA256SUMS
Images come from the registry (packages, release: containerd pulls them) or from the bundle's
tarballs (imported into containerd's k8s.io namespace from IMAGE_DIR).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from pathlib import Path

from provision.artifacts import bundle as bundle_layout
from provision.artifacts import pins
from provision.artifacts.errors import ArtifactError
from provision.artifacts.images import normalise
from provision.artifacts.needs import Component, ImageNeed, components, images
from provision.config.models import ArtifactSource, Cluster

ARCH = "amd64"
IMAGE_DIR = "/var/lib/kubeprov/images"  # image tarballs are staged here, then imported
DEB_DIR = "/var/lib/kubeprov/debs"


class Kind(str, enum.Enum):
    BINARY = "binary"  # one file → dest
    ARCHIVE = "archive"  # a tarball; `members` say which files go where
    IMAGE = "image"
    PACKAGE = "package"  # apt: `name`=`version` from `url`
    DEB = "deb"  # a .deb carried in a bundle


@dataclass(frozen=True)
class AptRepository:
    name: str
    url: str  # the deb line's URI
    suite: str  # "/" for pkgs.k8s.io's flat repositories
    key_url: str  # ASCII-armoured signing key

    @property
    def key_path(self) -> str:
        """Where hosts keep the key: armoured, named .asc, which apt (≥ 1.4) reads as is — no gpg needed."""
        return f"/etc/apt/keyrings/{self.name}.asc"

    @property
    def deb_line(self) -> str:
        return f"deb [signed-by={self.key_path}] {self.url} {self.suite}"


@dataclass(frozen=True)
class Artifact:
    name: str  # kubelet, cni-plugins, registry.k8s.io/pause:3.10, cri-tools …
    kind: Kind
    version: str  # "" for a package left to the distribution's version
    hosts: tuple[str, ...]  # the hosts that need it
    dest: str | None = None  # the path on the host (binary, deb, image tarball staging)
    url: str | None = None  # release: the download; package: the repository; image: the registry reference
    sha256: str | None = None  # known: from SHA256SUMS, or from a verified download
    sha256_url: str | None = None  # release: where the checksum is published
    path: Path | None = None  # a local, verified copy (bundle file, or download cache after fetch)
    members: tuple[tuple[str, str], ...] = ()  # archive: (member path in the tarball, dest on the host)
    when: str = ""  # the setting that makes the cluster need it
    component: str = ""  # the piece of software it belongs to (kubelet, containerd, …)

    @property
    def source(self) -> str:
        if self.path is not None and self.url is None:
            return str(self.path)
        return self.url or "-"


@dataclass(frozen=True)
class ArtifactPlan:
    cluster: str
    kubernetes_version: str
    source: ArtifactSource
    artifacts: tuple[Artifact, ...]
    repositories: tuple[AptRepository, ...] = ()
    bundle_dir: Path | None = None

    def for_host(self, name: str) -> list[Artifact]:
        return [a for a in self.artifacts if name in a.hosts]

    def of_kind(self, kind: Kind) -> list[Artifact]:
        return [a for a in self.artifacts if a.kind is kind]

    def to_dict(self) -> dict:
        """Plain data for Ansible (extra vars / JSON)."""

        def one(a: Artifact) -> dict:
            d = dataclasses.asdict(a)
            d["kind"] = a.kind.value
            d["path"] = str(a.path) if a.path else None
            d["members"] = [{"member": m, "dest": dest} for m, dest in a.members]
            d["hosts"] = list(a.hosts)
            return d

        return {
            "cluster": self.cluster,
            "kubernetes_version": self.kubernetes_version,
            "source": self.source.value,
            "bundle_dir": str(self.bundle_dir) if self.bundle_dir else None,
            "repositories": [dataclasses.asdict(r) | {"deb_line": r.deb_line, "key_path": r.key_path} for r in self.repositories],
            "artifacts": [one(a) for a in self.artifacts],
        }


# --- release --------------------------------------------------------------------------------


def _gh(cluster: Cluster, repo: str, version: str, file: str) -> str:
    return f"{cluster.artifacts.github_base_url}/{repo}/releases/download/{version}/{file}"


def _release(cluster: Cluster, c: Component, arch: str) -> Artifact:
    """Upstream's download for a component, and where its checksum is published."""
    base = dict(version=c.version, hosts=c.hosts, when=c.when, component=c.name)
    v = c.version
    if c.name in ("kubelet", "kubectl"):
        url = f"{cluster.artifacts.release_base_url}/{v}/bin/linux/{arch}/{c.name}"
        return Artifact(c.name, Kind.BINARY, dest=c.files[c.name], url=url, sha256_url=f"{url}.sha256", **base)
    if c.name == "runc":
        url = _gh(cluster, "opencontainers/runc", v, f"runc.{arch}")
        return Artifact("runc", Kind.BINARY, dest=c.files["runc"], url=url, sha256_url=_gh(cluster, "opencontainers/runc", v, "runc.sha256sum"), **base)
    if c.name == "crictl":
        url = _gh(cluster, "kubernetes-sigs/cri-tools", v, f"crictl-{v}-linux-{arch}.tar.gz")
        members = (("crictl", c.files["crictl"]),)
        suffix = ".sha256"
    elif c.name == "containerd":
        url = _gh(cluster, "containerd/containerd", v, f"containerd-{v.removeprefix('v')}-linux-{arch}.tar.gz")
        members = tuple((f"bin/{f}", dest) for f, dest in c.files.items())
        suffix = ".sha256sum"
    elif c.name == "cni-plugins":
        url = _gh(cluster, "containernetworking/plugins", v, f"cni-plugins-linux-{arch}-{v}.tgz")
        members = tuple((f"./{f}", dest) for f, dest in c.files.items())
        suffix = ".sha256"
    elif c.name == "etcd":
        top = f"etcd-{v}-linux-{arch}"
        url = _gh(cluster, "etcd-io/etcd", v, f"{top}.tar.gz")
        members = tuple((f"{top}/{f}", dest) for f, dest in c.files.items())
        return Artifact("etcd", Kind.ARCHIVE, url=url, sha256_url=_gh(cluster, "etcd-io/etcd", v, "SHA256SUMS"), members=members, **base)
    else:  # a new component needs its URL here
        raise ArtifactError(f"no release URL known for {c.name}")
    return Artifact(c.name, Kind.ARCHIVE, url=url, sha256_url=url + suffix, members=members, **base)


# --- packages -------------------------------------------------------------------------------

# Component → (package, from pkgs.k8s.io?). Debian ships no kubelet/kubectl/crictl for 1.28+.
_PACKAGES = {
    "kubelet": (("kubelet", True),),
    "kubectl": (("kubectl", True),),
    "crictl": (("cri-tools", True),),
    "containerd": (("containerd", False),),
    "runc": (("runc", False),),
    # Debian installs the plugins in /usr/lib/cni: the role links CNI_BIN_DIR's plugins there.
    "cni-plugins": (("containernetworking-plugins", False),),
    "etcd": (("etcd-server", False), ("etcd-client", False)),
}


def debian_packages(component: str) -> list[str]:
    """The host's own Debian packages that provide a component (pkgs.k8s.io's are not Debian's)."""
    return [package for package, upstream in _PACKAGES[component] if not upstream]


def kubernetes_repository(cluster: Cluster) -> AptRepository:
    url = f"{cluster.artifacts.package_repo}/v1.{cluster.minor}/deb/"
    return AptRepository("kubernetes", url, "/", f"{url}Release.key")


def _packages(cluster: Cluster, c: Component, repo: AptRepository) -> list[Artifact]:
    found = []
    for package, upstream in _PACKAGES[c.name]:
        # pkgs.k8s.io pins the exact build; Debian's own packages follow the host's release and its updates.
        version = c.version.removeprefix("v") + pins.PKGS_K8S_IO_REVISION if upstream else ""
        url = repo.url if upstream else "the host's Debian repositories"
        found.append(Artifact(package, Kind.PACKAGE, version, c.hosts, url=url, when=c.when, component=c.name))
    return found


# --- the plan -------------------------------------------------------------------------------


def _registry_image(need: ImageNeed) -> Artifact:
    tag = need.ref.rpartition(":")[2]
    return Artifact(need.ref, Kind.IMAGE, tag, need.hosts, url=need.ref, when=need.when)


def plan_artifacts(cluster: Cluster, *, arch: str = ARCH, source: ArtifactSource | None = None) -> ArtifactPlan:
    """Every binary, package and image the cluster's hosts need, from the cluster's artifact source.

    For a bundle the bundle is verified first (see `verify_bundle`); any problem raises
    ArtifactError naming the first file at fault and how many more there are.
    """
    source = source or cluster.artifacts.source
    parts, needs = components(cluster), images(cluster)
    repositories: tuple[AptRepository, ...] = ()
    if source is ArtifactSource.BUNDLE:
        return _bundle_plan(cluster, parts, needs)
    if source is ArtifactSource.PACKAGES:
        repo = kubernetes_repository(cluster)
        repositories = (repo,)
        artifacts = [a for c in parts for a in _packages(cluster, c, repo)]
    else:
        artifacts = [_release(cluster, c, arch) for c in parts]
    artifacts += [_registry_image(n) for n in needs]
    return ArtifactPlan(cluster.name, cluster.kubernetes_version, source, tuple(artifacts), repositories)


def verify_bundle(directory: Path, cluster: Cluster | None = None) -> list[bundle_layout.Problem]:
    """Everything wrong with a bundle: SHA256SUMS integrity, and (with a cluster) what it lacks."""
    directory = Path(directory)
    sums, problems = bundle_layout.check_integrity(directory)
    if cluster is not None and not any(p.path == bundle_layout.SUMS for p in problems):
        problems += bundle_layout.check_contents(directory, sums, components(cluster), images(cluster))
    return problems


def _refuse(directory: Path, problems: list) -> ArtifactError:
    more = f" (and {len(problems) - 1} more; `kubeprov artifacts bundle --from {directory}` lists them)" if len(problems) > 1 else ""
    return ArtifactError(f"bundle {directory} refused: {problems[0]}{more}")


def _bundle_plan(cluster: Cluster, parts: list[Component], needs: list[ImageNeed]) -> ArtifactPlan:
    root = cluster.artifacts.bundle_dir
    if root is None:
        raise ArtifactError("artifacts.source is bundle but artifacts.bundleDir is not set")
    root = Path(root)
    problems = verify_bundle(root, cluster)
    if problems:
        raise _refuse(root, problems)
    sums, _ = bundle_layout.read_sums(root)
    artifacts: list[Artifact] = []
    for c in parts:
        for file, dest in c.files.items():
            rel = bundle_layout.bundle_path(c.name, file)
            artifacts.append(
                Artifact(file, Kind.BINARY, c.version, c.hosts, dest=dest, sha256=sums[rel], path=root / rel, when=c.when, component=c.name)
            )
    index, _ = bundle_layout.image_index(root, sums)
    for need in needs:
        rel = index[normalise(need.ref)]
        tag = need.ref.rpartition(":")[2]
        artifacts.append(
            Artifact(need.ref, Kind.IMAGE, tag, need.hosts, dest=f"{IMAGE_DIR}/{Path(rel).name}", sha256=sums[rel], path=root / rel, when=need.when)
        )
    every_host = tuple(h.name for h in cluster.hosts)
    for rel in sorted(n for n in sums if n.startswith(f"{bundle_layout.DEBS_DIR}/") and n.endswith(".deb")):
        artifacts.append(Artifact(Path(rel).name, Kind.DEB, "-", every_host, dest=f"{DEB_DIR}/{Path(rel).name}", sha256=sums[rel], path=root / rel))
    return ArtifactPlan(cluster.name, cluster.kubernetes_version, ArtifactSource.BUNDLE, tuple(artifacts), bundle_dir=root)
