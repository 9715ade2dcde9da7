"""Where prepare's roles get kubelet, kubectl and crictl: the cluster's artifact source, resolved
on the controller from provision/artifacts' plan (the one list of pins, URLs, sha256s and paths).

  packages  the host adds the Kubernetes apt repository for the minor and installs the pinned
            kubelet/kubectl/cri-tools, held. Nothing is downloaded by the controller.
  release   the controller downloads each file (checked against its published sha256, cached),
            extracts crictl from its tarball, and the role copies the files over SSH, checking
            their sha256 again on the host. Hosts need no route to the release site — the
            common bare-metal case — and a wrong checksum stops prepare before any host is touched.
  bundle    the verified offline bundle's bin/<name>; also containerd (with its shim and ctr),
            runc, the CNI plugins (cni/<plugin>) and external etcd's etcd and etcdctl when the
            bundle carries them, for hosts without package repositories.

What the source does not carry of those comes from the hosts' own Debian repositories: the
container runtime by the node-packages role, etcd by the etcd role.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from provision.ansible.bundle import Bundle
from provision.artifacts.bundle import bundle_path
from provision.artifacts.checksums import sha256_file
from provision.artifacts.download import Cache, Downloader
from provision.artifacts.install import fetch_release, stage
from provision.artifacts.needs import components
from provision.artifacts.plan import ArtifactPlan, Kind, debian_packages, plan_artifacts
from provision.config.models import ArtifactSource, Cluster
from provision.errors import ConfigError

# The node software the Kubernetes project ships (and Debian does not).
KUBERNETES_COMPONENTS = ("kubelet", "kubectl", "crictl")
# Node software Debian packages too: a bundle may carry it (each component whole) for hosts without
# package repositories; what it does not carry comes from the hosts' Debian packages.
DEBIAN_ALTERNATIVES = ("containerd", "runc", "cni-plugins", "etcd")
# Of those, the container runtime every node runs: node-packages installs the Debian packages of
# what the source does not carry. (External etcd's own role installs etcd-server and etcd-client.)
RUNTIME_COMPONENTS = ("containerd", "runc", "cni-plugins")
RUNTIME_DEBIAN_PACKAGES = tuple(package for component in RUNTIME_COMPONENTS for package in debian_packages(component))


@dataclass(frozen=True)
class Sources:
    source: str  # packages | release | bundle
    # component → {"packages": [{name, version}]} (packages) or {"binaries": [{src, dest, sha256}]}
    components: dict[str, dict] = field(default_factory=dict)
    repository: dict | None = None  # packages: the apt repository the hosts add
    # The runtime's Debian packages the hosts install: those of the runtime components the source
    # does not carry as binaries.
    debian_packages: tuple[str, ...] = RUNTIME_DEBIAN_PACKAGES

    def record(self) -> dict:
        """What the applied-state record keeps: a change of any pin, digest or URL re-runs prepare."""
        out: dict = {"source": self.source}
        if self.repository:
            out["repository"] = self.repository["deb_line"]
        for name, entry in sorted(self.components.items()):
            out[name] = entry.get("packages") or [{"dest": b["dest"], "sha256": b["sha256"]} for b in entry.get("binaries", [])]
        out["debian"] = list(self.debian_packages)
        return out

    def to_vars(self) -> dict:
        return {"source": self.source, "repository": self.repository, "components": self.components,
                "debian_packages": list(self.debian_packages)}


def resolve(cluster: Cluster, bundle: Bundle | None, stage_dir: Path, cache: Cache | None = None) -> Sources:
    """The source's data for the roles; a release download is fetched and verified here."""
    if bundle is not None:
        return _from_bundle(cluster, bundle)
    if cluster.artifacts.source is ArtifactSource.PACKAGES:
        return _from_packages(cluster)
    return _from_release(cluster, stage_dir, cache or Cache())


def _kubernetes_only(plan: ArtifactPlan) -> ArtifactPlan:
    return dataclasses.replace(plan, artifacts=tuple(a for a in plan.artifacts if a.component in KUBERNETES_COMPONENTS))


def _from_packages(cluster: Cluster) -> Sources:
    plan = _kubernetes_only(plan_artifacts(cluster, source=ArtifactSource.PACKAGES))
    repo = plan.repositories[0]
    found: dict[str, dict] = {}
    for artifact in plan.of_kind(Kind.PACKAGE):
        found.setdefault(artifact.component, {"packages": []})["packages"].append({"name": artifact.name, "version": artifact.version})
    repository = {"name": repo.name, "url": repo.url, "key_url": repo.key_url, "key_path": repo.key_path, "deb_line": repo.deb_line}
    return Sources("packages", found, repository)


def _from_release(cluster: Cluster, stage_dir: Path, cache: Cache) -> Sources:
    plan = fetch_release(_kubernetes_only(plan_artifacts(cluster, source=ArtifactSource.RELEASE)), Downloader(cache))
    found: dict[str, dict] = {}
    for artifact in plan.artifacts:
        if artifact.kind is Kind.BINARY:  # the verified download itself, from the cache
            binaries = [{"src": str(artifact.path), "dest": artifact.dest, "sha256": artifact.sha256}]
        else:  # a tarball: its members, extracted once per archive digest from the verified archive
            root = stage_dir / artifact.sha256[:16]
            targets = [root / dest.lstrip("/") for _, dest in artifact.members]
            if not all(t.is_file() for t in targets):
                stage(dataclasses.replace(plan, artifacts=(artifact,)), root)
            binaries = [{"src": str(t), "dest": dest, "sha256": sha256_file(t)} for t, (_, dest) in zip(targets, artifact.members)]
        found.setdefault(artifact.component, {"binaries": []})["binaries"] += binaries
    return Sources("release", found)


def _from_bundle(cluster: Cluster, bundle: Bundle) -> Sources:
    found: dict[str, dict] = {}
    from_debian: list[str] = []
    for component in components(cluster):
        if component.name not in KUBERNETES_COMPONENTS + DEBIAN_ALTERNATIVES:
            continue
        paths = {file: bundle_path(component.name, file) for file in component.files}
        carried = {file: path for file, path in paths.items() if path in bundle.binaries}
        if component.name in DEBIAN_ALTERNATIVES:
            if not carried:
                from_debian += debian_packages(component.name) if component.name in RUNTIME_COMPONENTS else []
                continue
            if len(carried) < len(paths):  # half from the bundle, half from Debian: refused
                lacking = ", ".join(p for f, p in paths.items() if f not in carried)
                raise ConfigError(f"the bundle carries part of {component.name} ({', '.join(carried.values())}) "
                                  f"but not {lacking}: carry all of it, or none (the host's Debian package then)",
                                  source=str(bundle.root))
        binaries = [{"src": str(bundle.root.resolve() / path), "dest": component.files[file], "sha256": bundle.binaries[path]}
                    for file, path in carried.items()]
        found[component.name] = {"binaries": binaries}  # empty: the role says the bundle lacks it
    return Sources("bundle", found, debian_packages=tuple(from_debian))
