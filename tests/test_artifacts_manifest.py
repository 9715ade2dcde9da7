"""The air-gap manifest against what kubeprov really renders.

Clusters of v1.28 and v1.35 in every optional shape go through the real CLI (`certs generate`,
`render`); every `image:` anywhere in the rendered static pods and _cluster objects is collected
by a plain walk of the YAML, plus the sandbox (pause) image from each node's rendered containerd
config, and must be exactly the images `artifacts` lists — per cluster, per host, and for
`artifacts list --version` as the union of the shapes.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from testkit import run_cli
from provision.artifacts import Kind, plan_artifacts
from provision.config import load_cluster
from provision.config.models import ArtifactSource, LoadBalancer

VERSIONS = ["v1.28.15", "v1.35.0"]
VIP = "10.0.0.100:6443"
WORKER_LOCAL_LB = LoadBalancer.model_fields["worker_local_lb"].alias  # the file's spelling


def _hosts(cps: int, workers: int, etcd: int = 0) -> list[dict]:
    hosts = [{"name": f"cp{i}", "address": f"10.0.0.{10 + i}", "roles": ["control-plane"]} for i in range(1, cps + 1)]
    hosts += [{"name": f"w{i}", "address": f"10.0.0.{20 + i}", "roles": ["worker"]} for i in range(1, workers + 1)]
    hosts += [{"name": f"e{i}", "address": f"10.0.0.{30 + i}", "roles": ["etcd"]} for i in range(1, etcd + 1)]
    return hosts


SHAPES = {
    "stacked-flannel-kubevip": {"hosts": _hosts(3, 1), "controlPlaneEndpoint": VIP, "cni": "flannel"},
    "external-calico-haproxy": {
        "hosts": _hosts(3, 2, 3), "controlPlaneEndpoint": VIP, "cni": "calico", "etcd": {"topology": "external"},
        "loadBalancer": {"mode": "haproxy-keepalived", "workerLocalLB": True},
    },
    "single-bridge": {"hosts": _hosts(1, 0), "cni": "bridge"},
    "mirror-repository": {"hosts": _hosts(1, 1), "imageRepository": "mirror.example.internal/k8s"},
}


def all_images(value) -> set[str]:
    """Every string under an `image` key, anywhere."""
    if isinstance(value, dict):
        found = {v for k, v in value.items() if k == "image" and isinstance(v, str)}
        return found.union(*(all_images(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(all_images(v) for v in value))
    return set()


def sandbox_image(host_dir: Path) -> set[str]:
    """The pause image a node's containerd runs every pod sandbox with."""
    config = host_dir / "etc/containerd/config.toml"
    if not config.exists():
        return set()
    return {tomllib.loads(config.read_text())["plugins"]["io.containerd.grpc.v1.cri"]["sandbox_image"]}


def rendered(tmp_path: Path, version: str, shape: dict) -> tuple[Path, dict[str, set[str]], set[str]]:
    """Render a cluster through the CLI: (cluster file, host → static pod images, _cluster images)."""
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump({
        "apiVersion": "kubeprov.io/v1alpha1", "kind": "Cluster", "kubernetesVersion": version,
        "certificates": {"keyAlgorithm": "ECDSA-P256"}, **shape,
    }))
    for args in (["certs", "generate"], ["render", "-o", tmp_path / "out"]):
        code, out, err = run_cli(*args, "-c", config)
        assert code == 0, err
    out_dir = tmp_path / "out"
    static = {
        host.name: set().union(*(all_images(yaml.safe_load(p.read_text())) for p in (out_dir / host.name).glob("etc/kubernetes/manifests/*.yaml")))
        | sandbox_image(out_dir / host.name)
        for host in load_cluster(config).hosts
    }
    objects = set().union(*(all_images(doc) for p in (out_dir / "_cluster").glob("*.yaml") for doc in yaml.safe_load_all(p.read_text())))
    return config, static, objects


@pytest.fixture(scope="module")
def renders(tmp_path_factory):
    return {
        (version, name): rendered(tmp_path_factory.mktemp(f"{name}-{version}"), version, shape)
        for version in VERSIONS
        for name, shape in SHAPES.items()
    }


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("shape", SHAPES)
def test_plan_images_are_exactly_the_rendered_ones(renders, version, shape):
    config, static, objects = renders[version, shape]
    cluster = load_cluster(config)
    plan = plan_artifacts(cluster)
    planned = {a.name for a in plan.of_kind(Kind.IMAGE)}
    assert planned == objects | set().union(*static.values())
    node_names = {h.name for h in cluster.nodes}
    for host in cluster.hosts:
        mine = {a.name for a in plan.for_host(host.name) if a.kind is Kind.IMAGE}
        # a host needs its own static pods' (and sandbox) images, and a node also every pod image the API may place on it
        assert mine == static[host.name] | (objects if host.name in node_names else set()), host.name


@pytest.mark.parametrize("version", VERSIONS)
def test_version_list_is_the_union_of_every_shape(renders, version):
    code, out, err = run_cli("artifacts", "list", "--version", version)
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()[2:-1]]
    listed = {row[0] for row in rows if row[1] == "image"}
    expected = set()
    for (v, shape), (_, static, objects) in renders.items():
        if v == version and shape != "mirror-repository":  # --version means the default registry
            expected |= objects | set().union(*static.values())
    assert listed == expected


@pytest.mark.parametrize("version", VERSIONS)
def test_binaries_land_where_the_rendered_units_look(renders, version):
    config, _, _ = renders[version, "external-calico-haproxy"]
    out_dir = config.parent / "out"
    plan = plan_artifacts(load_cluster(config))
    dest = {a.component or a.name: a for a in plan.artifacts}
    executables = set()
    for unit in [*out_dir.glob("*/etc/systemd/system/**/*"), *out_dir.glob("*/usr/lib/systemd/system/**/*")]:
        if unit.is_file():
            executables |= set(re.findall(r"^ExecStart=(/\S+)", unit.read_text(), re.M))
    assert "/usr/bin/kubelet" in executables and "/usr/bin/etcd" in executables
    release = plan_artifacts(load_cluster(config), source=ArtifactSource.RELEASE)
    places = {d for a in release.artifacts for d in ([a.dest] if a.dest else [m[1] for m in a.members])}
    assert {"/usr/bin/kubelet", "/usr/bin/etcd"} <= places
    containerd = (out_dir / "cp1/etc/containerd/config.toml").read_text()
    cni_dir = re.search(r'bin_dir = "([^"]+)"', containerd).group(1)
    assert {f"{cni_dir}/{p}" for p in ("bridge", "host-local", "loopback", "portmap")} <= places
    assert dest["kubelet"].kind is Kind.PACKAGE  # the default source


def test_packages_source_facts():
    """pkgs.k8s.io's layout as the Kubernetes install docs give it: one repository per minor at
    https://pkgs.k8s.io/core:/stable:/v1.31/deb/ with its Release.key, packages versioned 1.31.4-1.1."""
    from provision.config.loader import cluster_from_data

    c = cluster_from_data({"apiVersion": "kubeprov.io/v1alpha1", "kind": "Cluster", "kubernetesVersion": "v1.31.4",
                           "etcd": {"topology": "external"}, "hosts": _hosts(1, 1, 1)}, "test")
    plan = plan_artifacts(c)
    (repo,) = plan.repositories
    assert repo.url == "https://pkgs.k8s.io/core:/stable:/v1.31/deb/"
    assert repo.key_url == "https://pkgs.k8s.io/core:/stable:/v1.31/deb/Release.key"
    assert repo.deb_line.endswith("https://pkgs.k8s.io/core:/stable:/v1.31/deb/ /")
    pins = {(a.name, a.version): a.hosts for a in plan.of_kind(Kind.PACKAGE)}
    assert pins == {
        ("kubelet", "1.31.4-1.1"): ("cp1", "w1"),
        ("kubectl", "1.31.4-1.1"): ("cp1",),
        ("cri-tools", "1.31.1-1.1"): ("cp1", "w1"),
        ("containerd", ""): ("cp1", "w1"),
        ("runc", ""): ("cp1", "w1"),
        ("containernetworking-plugins", ""): ("cp1", "w1"),
        ("etcd-server", ""): ("e1",),
        ("etcd-client", ""): ("e1",),
    }
    assert all(a.path is None for a in plan.artifacts)  # nothing for the controller to download


def test_release_urls_as_upstream_publishes_them():
    from provision.config.loader import cluster_from_data

    c = cluster_from_data({"apiVersion": "kubeprov.io/v1alpha1", "kind": "Cluster", "kubernetesVersion": "v1.35.0",
                           "etcd": {"topology": "external"}, "hosts": _hosts(1, 1, 1), "artifacts": {"source": "release"}}, "test")
    urls = {a.name: (a.url, a.sha256_url) for a in plan_artifacts(c).artifacts if a.kind is not Kind.IMAGE}
    gh = "https://github.com"
    assert urls["kubelet"] == ("https://dl.k8s.io/release/v1.35.0/bin/linux/amd64/kubelet", "https://dl.k8s.io/release/v1.35.0/bin/linux/amd64/kubelet.sha256")
    assert urls["etcd"] == (f"{gh}/etcd-io/etcd/releases/download/v3.6.6/etcd-v3.6.6-linux-amd64.tar.gz", f"{gh}/etcd-io/etcd/releases/download/v3.6.6/SHA256SUMS")
    assert urls["cni-plugins"][0] == f"{gh}/containernetworking/plugins/releases/download/v1.6.2/cni-plugins-linux-amd64-v1.6.2.tgz"
    assert urls["crictl"][0] == f"{gh}/kubernetes-sigs/cri-tools/releases/download/v1.35.0/crictl-v1.35.0-linux-amd64.tar.gz"


def test_cli_errors_are_one_line(tmp_path):
    code, _, err = run_cli("artifacts", "list")
    assert code == 2 and err.strip() == "error: give a cluster file (-c FILE) or --version V"
    code, _, err = run_cli("artifacts", "list", "--version", "v1.27.3")
    assert code == 2 and err.count("\n") == 1 and "kubernetesVersion: v1.27.3 is not supported" in err
    code, _, err = run_cli("artifacts", "bundle", "--from", tmp_path / "nowhere", "--version", "v1.31.4")
    assert code == 1 and f"{tmp_path / 'nowhere'}: no such directory" in err
    bad = tmp_path / "c.yaml"
    bad.write_text(yaml.safe_dump({"apiVersion": "kubeprov.io/v1alpha1", "kind": "Cluster", "kubernetesVersion": "v1.31.4",
                                   "hosts": _hosts(1, 0), "artifacts": {"source": "bundle"}}))
    code, _, err = run_cli("artifacts", "list", "-c", bad)
    assert code == 2 and err.count("\n") == 1 and "artifacts" in err and "bundleDir" in err
