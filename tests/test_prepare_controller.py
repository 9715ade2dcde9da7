"""prepare's controller side: the bundle check, what each role places, the generated inventory,
the applied-state fingerprint, error wording, and the preflight module run by real Ansible on
this machine. The lab test (tests/lab/test_prepare.py) runs the roles on real hosts."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import tarfile
from pathlib import Path, PurePosixPath

import pytest
import yaml

from provision.ansible.bundle import verify
from provision.artifacts.bundle import seal
from provision.ansible.inventory import PLAYBOOKS, applied_record, inventory, roles_for
from provision.ansible.nodefiles import render_for_prepare, role_of
from provision.ansible.runner import ansible_playbook_binary, plain_error
from provision.config.loader import load_cluster
from provision.errors import ConfigError
from provision.pki import PKIStore
from provision.pki.store import read_material
from provision.render import render_hosts


def _tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    root = tmp_path / "bundle"
    (root / "bin").mkdir(parents=True)
    (root / "images").mkdir()
    (root / "bin" / "kubelet").write_bytes(b"#!/bin/sh\n# STAND-IN kubelet\n")
    _tar(root / "images" / "pause.tar", {"manifest.json": json.dumps([{"RepoTags": ["registry.k8s.io/pause:3.10"]}]).encode()})
    _tar(root / "images" / "tiny-oci.tar", {"oci-layout": b"{}", "index.json": json.dumps(
        {"manifests": [{"annotations": {"io.containerd.image.name": "kubeprov.local/tiny:1"}}]}).encode()})
    seal(root)
    return root


def test_bundle_verified_lists_binaries_and_image_names(bundle: Path):
    found = verify(bundle)
    assert set(found.binaries) == {"bin/kubelet"}
    assert {image.file: image.refs for image in found.images} == {
        "images/pause.tar": ("registry.k8s.io/pause:3.10",),
        "images/tiny-oci.tar": ("kubeprov.local/tiny:1",),
    }


@pytest.mark.parametrize("damage, message", [
    (lambda root: (root / "bin/kubelet").write_bytes(b"other"), "bin/kubelet: sha256 mismatch"),
    (lambda root: (root / "bin/extra").write_bytes(b"x"), "bin/extra: not listed in SHA256SUMS"),
    (lambda root: (root / "images/pause.tar").unlink(), "images/pause.tar: missing"),
    (lambda root: (root / "SHA256SUMS").unlink(), "SHA256SUMS: missing"),
])
def test_bundle_refused_naming_the_file(bundle: Path, damage, message):
    damage(bundle)
    with pytest.raises(ConfigError) as caught:
        verify(bundle)
    assert message in str(caught.value) and str(bundle) in str(caught.value)


CLUSTER = """
apiVersion: kubeprov.io/v1alpha1
kind: Cluster
name: prep
kubernetesVersion: v1.31.0
clusterDir: {dir}
cni: bridge
etcd: {{topology: external}}
hosts:
- {{name: cp1, address: 192.0.2.11, roles: [control-plane], ssh: {{knownHosts: /k/known_hosts, key: /k/id}}}}
- {{name: w1, address: 192.0.2.12, roles: [worker]}}
- {{name: e1, address: 192.0.2.21, roles: [etcd], ssh: {{user: admin}}}}
"""


@pytest.fixture
def cluster(tmp_path: Path):
    path = tmp_path / "cluster.yaml"
    path.write_text(CLUSTER.format(dir=tmp_path / "cd"))
    cluster = load_cluster(path, None)
    PKIStore(cluster).generate()
    return cluster


def _bundle_with(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    seal(root)
    return root


RUNTIME = {"bin/containerd": b"c", "bin/containerd-shim-runc-v2": b"s", "bin/ctr": b"t", "bin/runc": b"r",
           "bin/etcd": b"e", "bin/etcdctl": b"ec",
           **{f"cni/{p}": p.encode() for p in ("bridge", "host-local", "loopback", "portmap")}}


def test_a_bundle_carrying_the_runtime_replaces_its_debian_packages(cluster, tmp_path: Path):
    from provision.ansible.sources import resolve

    # STAND-IN bytes: only placement data is checked here (tests/lab/test_prepare.py runs real ones).
    carried = resolve(cluster, verify(_bundle_with(tmp_path / "full", {"bin/kubelet": b"k", **RUNTIME})), tmp_path)
    assert carried.debian_packages == ()
    dests = {c: {b["dest"] for b in carried.components[c]["binaries"]} for c in ("containerd", "runc", "cni-plugins")}
    assert dests == {"containerd": {"/usr/bin/containerd", "/usr/bin/containerd-shim-runc-v2", "/usr/bin/ctr"},
                     "runc": {"/usr/sbin/runc"},
                     "cni-plugins": {f"/opt/cni/bin/{p}" for p in ("bridge", "host-local", "loopback", "portmap")}}
    assert carried.to_vars()["debian_packages"] == [] and carried.record()["debian"] == []
    assert {b["dest"] for b in carried.components["etcd"]["binaries"]} == {"/usr/bin/etcd", "/usr/bin/etcdctl"}
    # Without them, the host's Debian packages provide the runtime, named for node-packages.
    bare = resolve(cluster, verify(_bundle_with(tmp_path / "bare", {"bin/kubelet": b"k"})), tmp_path)
    assert bare.debian_packages == ("containerd", "runc", "containernetworking-plugins")
    assert not {"containerd", "runc", "cni-plugins", "etcd"} & set(bare.components)  # etcd: the etcd role's packages


def test_a_bundle_carrying_half_a_runtime_component_is_refused(cluster, tmp_path: Path):
    from provision.ansible.sources import resolve

    half = {k: v for k, v in RUNTIME.items() if k != "bin/ctr"}
    with pytest.raises(ConfigError, match=r"part of containerd .* but not bin/ctr"):
        resolve(cluster, verify(_bundle_with(tmp_path / "half", {"bin/kubelet": b"k", **half})), tmp_path)


def test_roles_place_exactly_the_rendered_bytes_and_nothing_of_later_phases(cluster):
    material = read_material(PKIStore(cluster))
    full = render_hosts(cluster, material)
    for host in cluster.hosts:
        placed = render_for_prepare(cluster, host, material)
        for path, file in placed.items():
            assert full[host.name][path] == file, f"{host.name}:{path} differs from the renderer's"
        left = {p for p in full[host.name] if p not in placed}
        assert not any(str(p).startswith("/etc/kubernetes/manifests") for p in placed)
        # What prepare leaves to sync: manifests, kubeconfigs, the control plane's PKI (a control
        # plane's etcd trust files included, when it is not an etcd member itself).
        assert all(role_of(p) is None or (role_of(p) == "etcd" and host not in cluster.etcd_members) for p in left)
    etcd_host = cluster.host("e1")
    placed = render_for_prepare(cluster, etcd_host, material)
    assert {role_of(p) for p in placed} == {"etcd"}
    assert PurePosixPath("/etc/kubernetes/pki/etcd/peer.key") in placed and placed[PurePosixPath("/etc/kubernetes/pki/etcd/peer.key")].mode == 0o600
    assert PurePosixPath("/etc/kubernetes/pki/ca.key") not in placed  # prepare ships no cluster CA key anywhere


def test_inventory_groups_ssh_and_roles(cluster, tmp_path: Path):
    from provision.prepare import Options, plan

    plans, _, path = plan(cluster, Options(known_hosts=tmp_path / "default_known_hosts"))
    data = yaml.safe_load(path.read_text())["all"]
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    children = data["children"]
    assert list(children["k8s_cluster"]["children"]["kube_control_plane"]["hosts"]) == ["cp1"]
    assert list(children["k8s_cluster"]["children"]["kube_node"]["hosts"]) == ["w1"]
    assert list(children["etcd"]["hosts"]) == ["e1"]
    cp1, e1 = data["hosts"]["cp1"], data["hosts"]["e1"]
    assert "UserKnownHostsFile=/k/known_hosts" in cp1["ansible_ssh_common_args"]
    assert "StrictHostKeyChecking=yes" in cp1["ansible_ssh_common_args"]
    assert f"UserKnownHostsFile={tmp_path / 'default_known_hosts'}" in e1["ansible_ssh_common_args"]
    assert cp1["ansible_ssh_private_key_file"] == "/k/id" and e1["ansible_become"] is True
    assert roles_for(cluster, cluster.host("e1")) == ["preflight", "etcd"]
    assert "kubectl" in roles_for(cluster, cluster.host("cp1")) and "kubectl" not in roles_for(cluster, cluster.host("w1"))
    # The os role reads the wanted modules and sysctls from the rendered directory the inventory names.
    render_dir = Path(data["vars"]["kubeprov_render_dir"])
    for name in ("cp1", "w1"):
        assert (render_dir / name / "etc/modules-load.d/k8s.conf").is_file()
        assert (render_dir / name / "etc/sysctl.d/99-kubernetes.conf").is_file()


def test_fingerprint_follows_the_rendered_files(cluster):
    host = cluster.host("w1")
    tree = render_for_prepare(cluster, host, None)
    roles = roles_for(cluster, host)
    same = applied_record(cluster, host, roles, tree, None, lab=False)
    assert same == applied_record(cluster, host, roles, tree, None, lab=False)
    more_pods = cluster.model_copy(update={"kubelet": cluster.kubelet.model_copy(update={"max_pods": 50})})
    other = applied_record(more_pods, host, roles, render_for_prepare(more_pods, host, None), None, lab=False)
    assert other["fingerprint"] != same["fingerprint"]
    assert [k for k in same if same[k] != other[k]] == ["files", "fingerprint"]


def test_plain_error_picks_the_cause():
    apt = {"stderr": "W: something\nE: Failed to fetch http://x/Packages 404\nE: Some index files failed", "rc": 100,
           "msg": "non-zero return code"}
    assert plain_error(apt) == "E: Failed to fetch http://x/Packages 404"
    loop = {"msg": "One or more items failed", "results": [
        {"failed": False, "item": {"path": "/a"}},
        {"failed": True, "item": {"path": "/b"}, "msg": "Destination directory /c does not exist"},
    ]}
    assert plain_error(loop) == "/b: Destination directory /c does not exist"


def test_site_playbook_passes_ansible_syntax_check(cluster, tmp_path: Path):
    from provision.prepare import Options, plan

    _, _, path = plan(cluster, Options())
    proc = subprocess.run(
        [ansible_playbook_binary(), "--syntax-check", "-i", str(path), str(PLAYBOOKS / "site.yml")],
        capture_output=True, text=True, env={**os.environ, "ANSIBLE_CONFIG": str(PLAYBOOKS / "ansible.cfg")}, cwd=PLAYBOOKS,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.integration
def test_preflight_module_names_a_taken_port_and_its_process(tmp_path: Path):
    """The real module through real Ansible, on this machine (connection local)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        proc = subprocess.run(
            [str(Path(ansible_playbook_binary()).parent / "ansible"), "localhost", "-c", "local", "-i", "localhost,",
             "-M", str(PLAYBOOKS / "roles/preflight/library"), "-m", "kubeprov_preflight",
             "-a", json.dumps({"ports": {str(port): "kubelet"}, "modules": ["surely_no_such_module"]}), "-o"],
            capture_output=True, text=True, env={**os.environ, "ANSIBLE_CONFIG": str(PLAYBOOKS / "ansible.cfg")},
        )
    finally:
        listener.close()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.split("=>", 1)[1])
    problems = result["problems"]
    # ss names the process holding the socket: this test process, by its comm and pid.
    me = f"{Path('/proc/self/comm').read_text().strip()} (pid {os.getpid()})"
    assert f"port {port} is in use by {me} (needed by kubelet)" in problems
    assert any(p.startswith("kernel module surely_no_such_module is neither loaded nor installable") for p in problems)
    pid1 = Path("/proc/1/comm").read_text().strip()
    assert any("cgroup driver mismatch" in p for p in problems) == (pid1 != "systemd")


def test_each_node_gets_the_images_its_pods_run_and_every_unreferenced_one(cluster, tmp_path: Path):
    """A worker carries no API server image; an etcd-only host none; an image of a component this
    cluster does not use (haproxy without a load balancer) goes nowhere; an image no renderer names
    (the operator's workload) goes to every node."""
    from provision.ansible.inventory import images_for
    from provision.render.control_plane import image as control_plane_image
    from provision.render.ha import HAPROXY_IMAGE

    root = tmp_path / "images-bundle"
    (root / "bin").mkdir(parents=True)
    (root / "images").mkdir()
    (root / "bin" / "kubelet").write_bytes(b"#!/bin/sh\n# STAND-IN kubelet\n")
    assert cluster.load_balancer_mode.value == "none"  # the fixture's cluster runs no haproxy
    refs = {"apiserver": control_plane_image(cluster, "kube-apiserver"), "workload": "example.test/app:1", "haproxy": HAPROXY_IMAGE}
    for name, ref in refs.items():
        _tar(root / "images" / f"{name}.tar", {"manifest.json": json.dumps([{"RepoTags": [ref]}]).encode()})
    seal(root)
    found = verify(root)
    files = {name: sorted(i.file for i in got) for name, got in images_for(cluster, found).items()}
    assert files == {"cp1": ["images/apiserver.tar", "images/workload.tar"], "w1": ["images/workload.tar"], "e1": []}
