"""Where prepare's roles get kubelet, kubectl and crictl: the cluster's artifact source, resolved
on the controller from provision/artifacts' plan (the one list of pins, URLs, sha256s and paths).

  packages  the host adds the Kubernetes apt repository for the minor and installs the pinned
            kubelet/kubectl/cri-tools, held. Nothing is downloaded by the controller.
  release   the controller downloads each file (checked against its published sha256, cached),
            extracts crictl from its tarball, and the role copies the files over SSH, checking
            their sha256 again on the host. Hosts need no route to the release site — the
            common bare-metal case — and a wrong checksum stops prepare before any host is touched.
  bundle    the verified offline bundle's bin/<name>, as before.

Everything else on a node (containerd, runc, CNI plugins, etcd) comes from the host's own
Debian repositories whatever the source.
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
from provision.artifacts.plan import ArtifactPlan, Kind, plan_artifacts
from provision.config.models import ArtifactSource, Cluster

# The node software the Kubernetes project ships (and Debian does not).
KUBERNETES_COMPONENTS = ("kubelet", "kubectl", "crictl")


@dataclass(frozen=True)
class Sources:
    source: str  # packages | release | bundle
    # component → {"packages": [{name, version}]} (packages) or {"binaries": [{src, dest, sha256}]}
    components: dict[str, dict] = field(default_factory=dict)
    repository: dict | None = None  # packages: the apt repository the hosts add

    def record(self) -> dict:
        """What the applied-state record keeps: a change of any pin, digest or URL re-runs prepare."""
        out: dict = {"source": self.source}
        if self.repository:
            out["repository"] = self.repository["deb_line"]
        for name, entry in sorted(self.components.items()):
            out[name] = entry.get("packages") or [{"dest": b["dest"], "sha256": b["sha256"]} for b in entry.get("binaries", [])]
        return out

    def to_vars(self) -> dict:
        return {"source": self.source, "repository": self.repository, "components": self.components}


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
    for component in components(cluster):
        if component.name not in KUBERNETES_COMPONENTS:
            continue
        binaries = [
            {"src": str(bundle.root.resolve() / bundle_path(component.name, file)), "dest": dest, "sha256": bundle.binaries[file]}
            for file, dest in component.files.items() if file in bundle.binaries
        ]
        found[component.name] = {"binaries": binaries}  # empty: the role says the bundle lacks it
    return Sources("bundle", found)
