"""containerd's config as the real containerd (Debian's 1.6) reads it, and started with it."""

from __future__ import annotations

import shutil
import subprocess
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from provision.config.loader import cluster_from_data
from provision.errors import ConfigError
from provision.pki.store import Material
from provision.render.containerd import render_containerd
from testkit import stop

NO_PKI = Material(cas={}, sa=(b"", b""), leaves={}, kubeconfigs={})
CONTAINERD = shutil.which("containerd")
CTR = shutil.which("ctr")
needs_containerd = pytest.mark.skipif(CONTAINERD is None, reason="containerd not installed (scripts/setup installs it)")

MIRRORS = {"docker.io": ["https://mirror.example.net", "http://10.0.0.5:5000"], "registry.k8s.io": ["https://k8s-mirror.example.net"]}


def cluster(version: str = "v1.31.4", **overrides):
    data = {
        "apiVersion": "kubeprov.io/v1alpha1",
        "kind": "Cluster",
        "kubernetesVersion": version,
        "hosts": [{"name": "cp1", "address": "10.0.0.11", "roles": ["control-plane"]}],
    }
    data.update(overrides)
    return cluster_from_data(data, "cluster.yaml")


def write_tree(c, root: Path) -> Path:
    for path, file in render_containerd(c, c.host("cp1"), NO_PKI).items():
        target = root / str(path).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(file.content)
    return root / "etc/containerd/config.toml"


def config_dump(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CONTAINERD, "--config", str(config), "config", "dump"], capture_output=True, text=True, timeout=60)


@needs_containerd
@pytest.mark.parametrize("restrict", [False, True])
def test_real_containerd_accepts_the_config(tmp_path, restrict):
    c = cluster(containerd={"registryMirrors": MIRRORS, "restrictOOMScoreAdj": restrict})
    run = config_dump(write_tree(c, tmp_path))
    assert run.returncode == 0, run.stderr
    # Read back what containerd made of it (its effective config, defaults filled in).
    cri = tomllib.loads(run.stdout)["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True
    assert cri["containerd"]["default_runtime_name"] == "runc"
    assert cri["sandbox_image"] == "registry.k8s.io/pause:3.10"  # kubeadm's pause for 1.31
    assert cri["registry"]["config_path"] == "/etc/containerd/certs.d"
    assert cri["restrict_oom_score_adj"] is restrict
    assert (cri["cni"]["bin_dir"], cri["cni"]["conf_dir"]) == ("/opt/cni/bin", "/etc/cni/net.d")


@needs_containerd
def test_config_dump_is_a_real_check(tmp_path):
    """Control: containerd does reject a config with a wrongly typed value. (Runtime options such as
    SystemdCgroup are opaque to `config dump`; the CRI plugin decodes them at start, which the
    integration test below covers.)"""
    config = write_tree(cluster(), tmp_path)
    config.write_text(config.read_text().replace("restrict_oom_score_adj = false", 'restrict_oom_score_adj = "yes"'))
    assert config_dump(config).returncode != 0


def test_sandbox_image_follows_repository_and_version():
    c = cluster("v1.35.0", imageRepository="mirror.example.net/k8s")
    text = render_containerd(c, c.host("cp1"), NO_PKI)[Path("/etc/containerd/config.toml")].content.decode()
    assert tomllib.loads(text)["plugins"]["io.containerd.grpc.v1.cri"]["sandbox_image"] == "mirror.example.net/k8s/pause:3.10.1"


def test_mirrors_become_hosts_toml_files():
    c = cluster(containerd={"registryMirrors": MIRRORS})
    tree = {str(p): f.content.decode() for p, f in render_containerd(c, c.host("cp1"), NO_PKI).items()}
    docker = tomllib.loads(tree["/etc/containerd/certs.d/docker.io/hosts.toml"])
    assert docker["server"] == "https://registry-1.docker.io"  # Docker Hub's API host
    assert list(docker["host"]) == MIRRORS["docker.io"]  # in the order given: tried in that order
    assert all(h["capabilities"] == ["pull", "resolve"] for h in docker["host"].values())
    k8s = tomllib.loads(tree["/etc/containerd/certs.d/registry.k8s.io/hosts.toml"])
    assert k8s["server"] == "https://registry.k8s.io"
    assert not any(p.startswith("/etc/containerd/certs.d/") for p in _tree_without_mirrors())


def _tree_without_mirrors():
    c = cluster()
    return {str(p) for p in render_containerd(c, c.host("cp1"), NO_PKI)}


@pytest.mark.parametrize(
    ("mirrors", "message"),
    [
        ({"../../etc": ["https://m.example"]}, "not a registry name"),
        ({"Docker.IO": ["https://m.example"]}, "not a registry name"),
        ({"docker.io": []}, "lists no mirror"),
        ({"docker.io": ["ftp://m.example"]}, "is not an http(s) URL"),
        ({"docker.io": ['https://m.example/"x']}, "is not an http(s) URL"),
        # hosts.toml would hold [host."https://m.example"] twice, which is not TOML
        ({"docker.io": ["https://m.example", "https://m.example"]}, "lists 'https://m.example' twice"),
    ],
)
def test_bad_mirrors_are_refused_by_the_model(mirrors, message):
    """The model refuses them (so `config validate` does); the renderer relies on it.
    tests/test_config_gate.py walks these through the CLI."""
    with pytest.raises(ConfigError) as err:
        cluster(containerd={"registryMirrors": mirrors})
    assert err.value.field == f"containerd.registryMirrors.{next(iter(mirrors))}"
    assert message in err.value.message


def test_crictl_points_at_containerd():
    c = cluster()
    crictl = yaml.safe_load(render_containerd(c, c.host("cp1"), NO_PKI)[Path("/etc/crictl.yaml")].content)
    assert crictl == {
        "runtime-endpoint": "unix:///run/containerd/containerd.sock",
        "image-endpoint": "unix:///run/containerd/containerd.sock",
        "timeout": 10,
    }


def test_etcd_only_host_gets_no_containerd():
    c = cluster(
        etcd={"topology": "external"},
        hosts=[
            {"name": "cp1", "address": "10.0.0.11", "roles": ["control-plane"]},
            {"name": "e1", "address": "10.0.0.31", "roles": ["etcd"]},
        ],
    )
    assert render_containerd(c, c.host("e1"), NO_PKI) == {}


@pytest.mark.integration
@pytest.mark.skipif(CONTAINERD is None or CTR is None, reason="containerd/ctr not installed (scripts/setup installs them)")
def test_real_containerd_starts_with_the_config(tmp_path):
    """containerd runs with the rendered file (private root, state and socket) and its CRI plugin
    reports the settings it took from it."""
    c = cluster(containerd={"registryMirrors": MIRRORS, "restrictOOMScoreAdj": True})
    config = write_tree(c, tmp_path / "host")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    socket = run_dir / "containerd.sock"
    log = (run_dir / "containerd.log").open("w")
    daemon = subprocess.Popen(
        [CONTAINERD, "--config", str(config), "--root", str(run_dir / "root"), "--state", str(run_dir / "state"),
         "--address", str(socket), "--log-level", "info"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        version = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and daemon.poll() is None:
            version = subprocess.run([CTR, "--address", str(socket), "version"], capture_output=True, text=True, timeout=10)
            if version.returncode == 0:
                break
            time.sleep(0.2)
        assert daemon.poll() is None, (run_dir / "containerd.log").read_text()
        assert version is not None and version.returncode == 0, version.stderr
        assert "Server:" in version.stdout

        plugins = subprocess.run([CTR, "--address", str(socket), "plugins", "ls"], capture_output=True, text=True, timeout=10)
        cri = [line.split() for line in plugins.stdout.splitlines() if " cri " in f" {line} "]
        log_text = (run_dir / "containerd.log").read_text()
        assert cri and cri[0][-1] == "ok", plugins.stdout + "\n--- containerd log ---\n" + log_text[-4000:]

        # The CRI plugin logs the configuration it runs with: ours, not containerd's defaults.
        started = [line for line in (run_dir / "containerd.log").read_text().splitlines() if "Start cri plugin with config" in line]
        assert started, (run_dir / "containerd.log").read_text()
        for fact in ("Options:map[SystemdCgroup:true]", "SandboxImage:registry.k8s.io/pause:3.10 ",
                     "ConfigPath:/etc/containerd/certs.d", "RestrictOOMScoreAdj:true",
                     "NetworkPluginBinDir:/opt/cni/bin", "NetworkPluginConfDir:/etc/cni/net.d"):
            assert fact in started[0], fact
    finally:
        stop(daemon)
        log.close()
    mounts = Path("/proc/self/mounts").read_text()
    assert str(run_dir) not in mounts, "containerd left a mount behind"
