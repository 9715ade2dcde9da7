"""`kubeprov up` for real, with real Kubernetes binaries and images: 1 control plane + 2 workers,
and 3 stacked control planes behind a kube-vip VIP, on the nspawn lab.

Needs KUBEPROV_E2E_BUNDLE=DIR: an offline bundle in the artifacts layout (bin/kubelet, kubectl,
kube-proxy…, images/*.tar with the names the manifests reference, SHA256SUMS). Nothing in this
machine's reach provides one, so without it every test here skips, saying so.

Asserted per topology: all nodes Ready; `kubectl get pods -A` shows the control plane and CoreDNS
Running; a test Deployment's pod gets an IP and answers TCP from another node; a second `up`
changes nothing and takes under 10 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from provision.lab.testing import unavailable_reason
from testkit import VENV_BIN, run_cli

BUNDLE = os.environ.get("KUBEPROV_E2E_BUNDLE")

pytestmark = [
    pytest.mark.e2e, pytest.mark.lab,
    pytest.mark.skipif(not BUNDLE, reason="KUBEPROV_E2E_BUNDLE=DIR (an offline bundle with real Kubernetes binaries and images) is not set"),
]


def _bundle_version(bundle: Path) -> str:
    out = subprocess.run([str(bundle / "bin" / "kubelet"), "--version"], capture_output=True, text=True, check=True).stdout
    return out.split()[-1]  # "Kubernetes v1.31.4"


def _image(bundle: Path, name: str) -> str:
    """A reference to an image the bundle carries whose name contains `name` (e.g. coredns)."""
    import tarfile

    for tar in sorted((bundle / "images").glob("*.tar")):
        with tarfile.open(tar) as archive:
            names = archive.getnames()
            if "manifest.json" in names:
                for entry in json.load(archive.extractfile("manifest.json")):
                    for ref in entry.get("RepoTags") or []:
                        if name in ref:
                            return ref
            if "index.json" in names:
                for entry in json.load(archive.extractfile("index.json")).get("manifests", []):
                    ref = entry.get("annotations", {}).get("io.containerd.image.name") or entry.get("annotations", {}).get("org.opencontainers.image.ref.name", "")
                    if name in ref:
                        return ref
    pytest.fail(f"the bundle has no image named like {name!r}")


@pytest.fixture(params=["1cp-2workers", "3-stacked-cps"])
def cluster(request, tmp_path):
    from provision.lab import lifecycle

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    bundle = Path(BUNDLE).resolve()
    control_planes = 1 if request.param == "1cp-2workers" else 3
    name = f"e{os.getpid() % 100000}"
    info = lifecycle.up(name, 3, control_planes=control_planes)
    try:
        doc = yaml.safe_load(info.cluster_file.read_text())
        for host in doc["hosts"]:
            host["ssh"]["knownHosts"] = str(info.known_hosts)
        doc.update({"kubernetesVersion": _bundle_version(bundle), "cni": "bridge", "clusterDir": str(tmp_path / "cluster"),
                    "artifacts": {"source": "bundle", "bundleDir": str(bundle)}})
        if control_planes == 3:
            vip = info.hosts[0].address.rsplit(".", 1)[0] + ".100"
            doc["controlPlaneEndpoint"] = f"{vip}:6443"
        path = tmp_path / "cluster.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        yield path, info, bundle
    finally:
        lifecycle.down(name)


def kubectl(cluster_file: Path, *args: str) -> str:
    admin = Path(yaml.safe_load(cluster_file.read_text())["clusterDir"]) / "kubeconfigs" / "admin.conf"
    proc = subprocess.run([str(VENV_BIN / "kubectl"), f"--kubeconfig={admin}", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_up_builds_a_working_cluster_and_a_second_up_changes_nothing(cluster):
    cluster_file, info, bundle = cluster
    code, out, err = run_cli("up", "--lab", "--bundle", bundle, "--no-merge-kubeconfig", "-c", cluster_file, timeout=1800)
    assert code == 0, out[-4000:] + err

    nodes = json.loads(kubectl(cluster_file, "get", "nodes", "-o", "json"))["items"]
    ready = {n["metadata"]["name"] for n in nodes if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])}
    assert ready == {h.name for h in info.hosts}

    pods = json.loads(kubectl(cluster_file, "get", "pods", "-A", "-o", "json"))["items"]
    running = {p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Running"}
    for host in (h for h in info.hosts if "control-plane" in h.roles):
        for component in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
            assert f"{component}-{host.name}" in running
    assert any(name.startswith("coredns-") for name in running)

    # A test Deployment (CoreDNS's image: it listens on TCP 53 with no config) reachable from another node.
    image = _image(bundle, "coredns")
    kubectl(cluster_file, "create", "deployment", "e2e", f"--image={image}")
    kubectl(cluster_file, "wait", "--for=condition=Available", "deployment/e2e", "--timeout=180s")
    pod = json.loads(kubectl(cluster_file, "get", "pods", "-l", "app=e2e", "-o", "json"))["items"][0]
    ip, node = pod["status"]["podIP"], pod["spec"]["nodeName"]
    assert ip
    other = next(h for h in info.hosts if h.name != node)
    from provision.lab.access import ssh_args

    probe = subprocess.run(ssh_args(other.address, info.key, info.known_hosts) + [f"timeout 5 bash -c 'echo > /dev/tcp/{ip}/53'"],
                           capture_output=True, text=True, timeout=30)
    assert probe.returncode == 0, f"{other.name} cannot reach pod {ip} on {node}: {probe.stderr}"

    started = time.monotonic()
    code, out, err = run_cli("up", "--lab", "--bundle", bundle, "--no-merge-kubeconfig", "-c", cluster_file, timeout=600)
    seconds = time.monotonic() - started
    assert code == 0, err
    assert " changed " not in out, out  # no host line reported a change: files, objects, services
    assert seconds < 10, f"second up took {seconds:.1f} s"
