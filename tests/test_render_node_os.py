"""Kernel modules and sysctls on kubelet hosts, and golden files for every node file of a control
plane and a worker (kubelet, containerd, OS). KUBEPROV_UPDATE_GOLDEN=1 rewrites the golden files."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

from provision.config.loader import cluster_from_data
from provision.pki.store import Material
from provision.render.containerd import render_containerd
from provision.render.kubelet import render_kubelet
from provision.render.node_os import render_node_os
from provision.render.tree import merge

NO_PKI = Material(cas={}, sa=(b"", b""), leaves={}, kubeconfigs={})
GOLDEN = Path(__file__).parent / "golden_node"


def cluster(**overrides):
    data = {
        "apiVersion": "kubeprov.io/v1alpha1",
        "kind": "Cluster",
        "kubernetesVersion": "v1.31.4",
        "hosts": [
            {"name": "cp1", "address": "192.0.2.11", "internalAddress": "10.0.0.11", "roles": ["control-plane"]},
            {"name": "w1", "address": "192.0.2.21", "internalAddress": "10.0.0.21", "roles": ["worker"]},
        ],
    }
    data.update(overrides)
    return cluster_from_data(data, "cluster.yaml")


def os_files(c, host: str = "w1") -> tuple[list[str], dict[str, str]]:
    tree = {str(p): f.content.decode() for p, f in render_node_os(c, c.host(host), NO_PKI).items()}
    modules = [line for line in tree["/etc/modules-load.d/k8s.conf"].splitlines() if line and not line.startswith("#")]
    sysctls = {}
    for line in tree["/etc/sysctl.d/99-kubernetes.conf"].splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            sysctls[key.strip()] = value.strip()
    return modules, sysctls


def test_iptables_mode_modules_and_sysctls():
    modules, sysctls = os_files(cluster())
    assert modules == ["overlay", "br_netfilter"]
    for key in ("net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables"):
        assert sysctls[key] == "1"
    assert "net.ipv6.conf.all.forwarding" not in sysctls


def test_ipvs_mode_loads_ipvs_modules():
    modules, _ = os_files(cluster(kubeProxy={"mode": "ipvs"}))
    assert {"overlay", "br_netfilter", "ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh", "nf_conntrack"} == set(modules)


def test_ipv6_pods_get_ipv6_forwarding():
    c = cluster(
        networking={"podSubnet": "fd00:10:244::/56", "serviceSubnet": "fd00:10:96::/112"},
        hosts=[{"name": "w1", "address": "fd00::21", "roles": ["control-plane", "worker"]}],
    )
    _, sysctls = os_files(c)
    assert sysctls["net.ipv6.conf.all.forwarding"] == "1"


def test_sysctls_satisfy_protect_kernel_defaults():
    """With protectKernelDefaults the kubelet refuses to start unless these hold (values from
    kubelet's setupKernelTunables: overcommit always, OOM killer not panic, reboot 10 s after a
    panic, panic on oops, root key quota 1e6 keys / 25e6 bytes)."""
    _, sysctls = os_files(cluster())
    assert {k: sysctls[k] for k in (
        "vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
        "kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes",
    )} == {"vm.overcommit_memory": "1", "vm.panic_on_oom": "0", "kernel.panic": "10",
           "kernel.panic_on_oops": "1", "kernel.keys.root_maxkeys": "1000000", "kernel.keys.root_maxbytes": "25000000"}


def test_every_sysctl_names_a_real_kernel_setting():
    """Each key exists under /proc/sys on this kernel (the bridge ones only once br_netfilter is
    loaded, which a test must not do to the machine)."""
    _, sysctls = os_files(cluster(kubeProxy={"mode": "ipvs"}))
    bridge_loaded = Path("/proc/sys/net/bridge").exists()
    for key in sysctls:
        if key.startswith("net.bridge.") and not bridge_loaded:
            continue
        assert Path("/proc/sys", *key.split(".")).exists(), key


def test_etcd_only_host_is_left_alone():
    c = cluster(
        etcd={"topology": "external"},
        hosts=[
            {"name": "cp1", "address": "10.0.0.11", "roles": ["control-plane"]},
            {"name": "e1", "address": "10.0.0.31", "roles": ["etcd"]},
        ],
    )
    assert render_node_os(c, c.host("e1"), NO_PKI) == {}


# --- golden files ---------------------------------------------------------------------------------


def node_tree(c, host: str):
    h = c.host(host)
    return merge(*(r(c, h, NO_PKI) for r in (render_kubelet, render_containerd, render_node_os)))


GOLDEN_CLUSTER = dict(
    kubeProxy={"mode": "ipvs"},
    containerd={"registryMirrors": {"docker.io": ["https://mirror.example.net"]}, "restrictOOMScoreAdj": True},
    kubelet={"serverTLSBootstrap": True, "extraArgs": {"v": "2"}},
)


@pytest.mark.parametrize("host", ["cp1", "w1"])
def test_golden_node_files(host):
    tree = node_tree(cluster(**GOLDEN_CLUSTER), host)
    root = GOLDEN / host
    if os.environ.get("KUBEPROV_UPDATE_GOLDEN") == "1":
        for path, file in tree.items():
            target = root / str(path).lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(file.content)
    expected = {"/" + p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert {str(p) for p in tree} == expected, "files differ from golden_node/ (KUBEPROV_UPDATE_GOLDEN=1 rewrites)"
    problems = []
    for path, file in sorted(tree.items()):
        want = (root / str(path).lstrip("/")).read_text()
        got = file.content.decode()
        if got != want:
            problems.append("".join(difflib.unified_diff(
                want.splitlines(keepends=True), got.splitlines(keepends=True), f"golden{path}", f"rendered{path}")))
    assert not problems, "\n" + "\n".join(problems) + "\n(KUBEPROV_UPDATE_GOLDEN=1 rewrites the golden files)"
