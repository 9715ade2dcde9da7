"""etcd as rendered: kubeadm's version-specific flags and probes, and — with the real etcd 3.4
from Debian — three members started with exactly the command line (stacked static pods) or
unit + environment file (external) kubeprov renders, forming a healthy TLS cluster.

Mapping from a host to this machine, kept explicit and minimal:
- every host's files are written under <tmp>/<host>/ (paths as on the host); a path in a flag
  is resolved through the pod's hostPath volumes (static pod) or directly (unit) into that root;
- the hosts' internal addresses are loopback addresses 127.0.83.x, so their URLs are used as
  rendered;
- only the per-host loopback listeners (127.0.0.1:2379 client, 127.0.0.1:2381 metrics), which
  would collide between three members on one machine, move to free ports.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path, PurePosixPath

import pytest
import yaml

from provision.config.models import Cluster
from provision.pki.store import PKIStore, read_material
from provision.render.etcd import ENV_PATH, UNIT_PATH, render_etcd
from provision.render.pki_files import render_pki
from provision.render.tree import merge, write_trees

ETCD, ETCDCTL = shutil.which("etcd"), shutil.which("etcdctl")
ETCD_POD = PurePosixPath("/etc/kubernetes/manifests/etcd.yaml")

# Flags newer kubeadm passes that Debian's etcd 3.4 does not know; dropped in these tests only.
NOT_IN_ETCD_34 = {
    "feature-gates": "etcd 3.6 flag; 3.4 spells the initial corruption check --experimental-initial-corrupt-check",
    "watch-progress-notify-interval": "etcd 3.6 name; 3.4 only has --experimental-watch-progress-notify-interval",
}


def cluster_of(tmp: Path, version: str, members: int = 3, external: bool = False, net: str = "127.0.83") -> Cluster:
    hosts = []
    for i in range(1, members + 1):
        address = f"{net}.{10 + i}"
        roles = ["etcd"] if external else ["control-plane"]
        hosts.append({"name": f"{'etcd' if external else 'cp'}{i}", "address": address, "internalAddress": address, "roles": roles})
    if external:
        hosts.append({"name": "cp1", "address": f"{net}.50", "internalAddress": f"{net}.50", "roles": ["control-plane"]})
    doc = {
        "apiVersion": "kubeprov.io/v1alpha1", "kind": "Cluster", "name": "etcdtest", "kubernetesVersion": version,
        "hosts": hosts, "certificates": {"keyAlgorithm": "ECDSA-P256"}, "clusterDir": str(tmp / "cluster-dir"),
        "etcd": {"topology": "external" if external else "stacked"},
    }
    return Cluster.model_validate(doc)


def rendered(cluster: Cluster):
    store = PKIStore(cluster)
    store.generate()
    material = read_material(store)
    return {h.name: merge(render_pki(cluster, h, material), render_etcd(cluster, h, material)) for h in cluster.hosts}


def args_to_flags(args: list[str]) -> dict[str, str]:
    out = {}
    for arg in args:
        key, _, value = arg.removeprefix("--").partition("=")
        out[key] = value
    return out


# --- pure: what kubeadm renders per version ---------------------------------------------------


@pytest.mark.parametrize(
    "version, liveness, readiness, startup, corrupt_check",
    [
        # kubeadm < 1.31: /health probes (kubeadm#2567); etcd 3.5 experimental flags (kubernetes#109074).
        ("v1.28.15", "/health?exclude=NOSPACE&serializable=true", None, "/health?serializable=false",
         {"experimental-initial-corrupt-check": "true", "experimental-watch-progress-notify-interval": "5s"}),
        ("v1.30.0", "/health?exclude=NOSPACE&serializable=true", None, "/health?serializable=false",
         {"experimental-initial-corrupt-check": "true", "experimental-watch-progress-notify-interval": "5s"}),
        # kubeadm 1.31: /livez and /readyz of etcd ≥ 3.5.11 (kubernetes#124465).
        ("v1.33.0", "/livez", "/readyz", "/readyz",
         {"experimental-initial-corrupt-check": "true", "experimental-watch-progress-notify-interval": "5s"}),
        # etcd 3.6 (kubeadm 1.34+): feature gate and graduated flag (kubernetes#132838).
        ("v1.34.1", "/livez", "/readyz", "/readyz",
         {"feature-gates": "InitialCorruptCheck=true", "watch-progress-notify-interval": "5s"}),
        ("v1.35.0", "/livez", "/readyz", "/readyz",
         {"feature-gates": "InitialCorruptCheck=true", "watch-progress-notify-interval": "5s"}),
    ],
)
def test_versioned_probes_and_flags(tmp_path, version, liveness, readiness, startup, corrupt_check):
    cluster = cluster_of(tmp_path, version, members=1, net="10.0.83")
    pod = yaml.safe_load(rendered(cluster)["cp1"][ETCD_POD].content)
    container = pod["spec"]["containers"][0]
    flags = args_to_flags(container["command"][1:])
    assert corrupt_check.items() <= flags.items()
    other = ({"feature-gates", "watch-progress-notify-interval", "experimental-initial-corrupt-check",
              "experimental-watch-progress-notify-interval"} - corrupt_check.keys())
    assert not other & flags.keys()
    assert container["livenessProbe"]["httpGet"] == {"host": "127.0.0.1", "path": liveness, "port": 2381, "scheme": "HTTP"}
    assert container["startupProbe"]["httpGet"]["path"] == startup
    assert (container.get("readinessProbe") or {}).get("httpGet", {}).get("path") == readiness


def test_stacked_pod_flags_and_volumes(tmp_path):
    cluster = cluster_of(tmp_path, "v1.31.4", members=3, net="10.0.83")
    pod = yaml.safe_load(rendered(cluster)["cp2"][ETCD_POD].content)
    flags = args_to_flags(pod["spec"]["containers"][0]["command"][1:])
    assert flags["listen-client-urls"] == "https://127.0.0.1:2379,https://10.0.83.12:2379"
    assert flags["advertise-client-urls"] == "https://10.0.83.12:2379"
    assert flags["listen-peer-urls"] == flags["initial-advertise-peer-urls"] == "https://10.0.83.12:2380"
    # cp2 joins the running cp1: the members up to itself, an existing cluster.
    assert flags["initial-cluster"] == "cp1=https://10.0.83.11:2380,cp2=https://10.0.83.12:2380"
    assert flags["initial-cluster-state"] == "existing"
    assert flags["listen-metrics-urls"] == "http://127.0.0.1:2381"
    assert flags["client-cert-auth"] == flags["peer-client-cert-auth"] == "true"
    assert flags["data-dir"] == "/var/lib/etcd" and flags["snapshot-count"] == "10000"
    assert pod["metadata"]["annotations"] == {"kubeadm.kubernetes.io/etcd.advertise-client-urls": "https://10.0.83.12:2379"}
    assert pod["spec"]["containers"][0]["image"] == "registry.k8s.io/etcd:3.5.24-0"
    vols = {v["name"]: v["hostPath"]["path"] for v in pod["spec"]["volumes"]}
    assert vols == {"etcd-data": "/var/lib/etcd", "etcd-certs": "/etc/kubernetes/pki/etcd"}


def test_external_unit_and_env_match_the_static_pod_flags(tmp_path):
    """Same TLS settings either way: the env file holds exactly the flags the pod would get."""
    cluster = cluster_of(tmp_path, "v1.31.4", external=True, net="10.0.83")
    trees = rendered(cluster)
    assert ETCD_POD not in trees["cp1"] and UNIT_PATH not in trees["cp1"]
    unit = trees["etcd1"][UNIT_PATH].content.decode()
    assert f"EnvironmentFile={ENV_PATH}" in unit and "ExecStart=/usr/bin/etcd\n" in unit
    env = parse_env(trees["etcd1"][ENV_PATH].content.decode())
    assert env["ETCD_CLIENT_CERT_AUTH"] == env["ETCD_PEER_CLIENT_CERT_AUTH"] == "true"
    assert env["ETCD_TRUSTED_CA_FILE"] == "/etc/kubernetes/pki/etcd/ca.crt"
    assert env["ETCD_INITIAL_CLUSTER"] == ",".join(f"etcd{i}=https://10.0.83.1{i}:2380" for i in (1, 2, 3))
    # The certificates the env names are the ones the PKI renderer puts on that host.
    for key in ("ETCD_CERT_FILE", "ETCD_KEY_FILE", "ETCD_PEER_CERT_FILE", "ETCD_PEER_KEY_FILE", "ETCD_TRUSTED_CA_FILE"):
        assert PurePosixPath(env[key]) in trees["etcd1"], key


def parse_env(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


# --- integration: real etcd -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def remap_loopback(value: str, ports: dict[int, int]) -> str:
    for old, new in ports.items():
        value = value.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
    return value


@contextlib.contextmanager
def members_running(commands: list[tuple[list[str], dict[str, str], Path]]):
    """Start every member; on exit stop them all (SIGTERM, then SIGKILL) and close logs."""
    procs = []
    try:
        for argv, env, log in commands:
            handle = log.open("wb")
            procs.append((subprocess.Popen(argv, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True), handle))
        yield [p for p, _ in procs]
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, handle in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            handle.close()


def _etcdctl(endpoint: str, pki: Path, *args: str) -> list[str]:
    return [ETCDCTL, f"--endpoints={endpoint}", f"--cacert={pki / 'ca.crt'}",
            f"--cert={pki / 'healthcheck-client.crt'}", f"--key={pki / 'healthcheck-client.key'}", *args]


def member_add(endpoint: str, pki: Path, name: str, peer_url: str, timeout: float = 30) -> None:
    """etcd refuses a member add while the last one joined less than 5 s ago ("unhealthy cluster")."""
    deadline = time.monotonic() + timeout
    while True:
        run = subprocess.run(_etcdctl(endpoint, pki, "member", "add", name, f"--peer-urls={peer_url}"),
                             capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"}, timeout=20)
        if run.returncode == 0:
            return
        assert "unhealthy cluster" in run.stderr and time.monotonic() < deadline, run.stderr
        time.sleep(1)


def wait_healthy(endpoint: str, pki: Path, logs: list[Path], procs, timeout: float = 30, members: int = 3) -> str:
    argv = _etcdctl(endpoint, pki, "endpoint", "health", "--cluster")
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        dead = [str(log) for proc, log in zip(procs, logs) if proc.poll() is not None]
        if dead:
            pytest.fail("etcd exited:\n" + "\n".join(Path(d).read_text()[-3000:] for d in dead))
        run = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"}, timeout=20)
        last = run.stdout + run.stderr
        if run.returncode == 0 and last.count("is healthy") == members:
            return last
        time.sleep(0.5)
    pytest.fail(f"cluster not healthy within {timeout}s:\n{last}\n" + "\n".join(l.read_text()[-2000:] for l in logs))


needs_etcd = pytest.mark.skipif(not (ETCD and ETCDCTL), reason="Debian's etcd-server/etcd-client are not installed (scripts/setup)")


@pytest.mark.integration
@needs_etcd
@pytest.mark.parametrize("version", ["v1.28.15", "v1.35.0"])
def test_stacked_static_pods_form_a_healthy_tls_cluster(tmp_path, version):
    cluster = cluster_of(tmp_path, version, net="127.0.83")
    trees = rendered(cluster)
    root = tmp_path / "hosts"
    write_trees(root, trees)
    commands, logs, probes = [], [], []
    for host in cluster.control_planes:
        pod = yaml.safe_load(trees[host.name][ETCD_POD].content)
        container = pod["spec"]["containers"][0]
        # Container path → host path, through the pod's own hostPath volumes.
        host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["spec"]["volumes"]}
        mounts = {m["mountPath"]: host_paths[m["name"]] for m in container["volumeMounts"]}

        def on_host(value: str) -> str:
            for mount_path, host_path in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
                if value == mount_path or value.startswith(mount_path + "/"):
                    return str(root / host.name) + host_path + value[len(mount_path):]
            assert not value.startswith("/"), f"{value} is not inside any volume of the etcd pod"
            return value

        ports = {2379: free_port(), 2381: free_port()}
        flags = args_to_flags(container["command"][1:])
        for flag in NOT_IN_ETCD_34:
            flags.pop(flag, None)
        argv = [ETCD] + [f"--{k}={remap_loopback(on_host(v), ports)}" for k, v in flags.items()]
        log = tmp_path / f"{host.name}.log"
        commands.append((argv, {"PATH": os.environ["PATH"]}, log))
        logs.append(log)
        probes.append((container, ports[2381]))
    # The join protocol the manifests are rendered for (kubeadm's): the first member forms the
    # cluster alone; each next one is `member add`-ed, then starts with the members up to itself.
    pki = root / "cp1" / "etc/kubernetes/pki/etcd"
    first = "https://127.0.83.11:2379"
    with contextlib.ExitStack() as stack:
        procs = []
        for i, host in enumerate(cluster.control_planes, start=1):
            if i > 1:
                member_add(first, pki, host.name, f"https://127.0.83.1{i}:2380")
            procs += stack.enter_context(members_running(commands[i - 1:i]))
            out = wait_healthy(first, pki, logs[:i], procs, members=i)
        assert all(f"https://127.0.83.1{i}:2379 is healthy" in out for i in (1, 2, 3)), out
        # The liveness probe's path answers healthy where etcd 3.4 has it (/livez is etcd ≥ 3.5.11).
        for container, metrics_port in probes:
            path = container["livenessProbe"]["httpGet"]["path"]
            if path.startswith("/health"):
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}{path}", timeout=5) as response:
                    assert response.status == 200 and b'"health":"true"' in response.read()


@pytest.mark.integration
@needs_etcd
def test_external_units_form_a_healthy_tls_cluster(tmp_path):
    cluster = cluster_of(tmp_path, "v1.31.4", external=True, net="127.0.84")
    trees = rendered(cluster)
    root = tmp_path / "hosts"
    write_trees(root, trees)
    commands, logs = [], []
    for host in cluster.etcd_members:
        unit = trees[host.name][UNIT_PATH].content.decode()
        exec_start = next(line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("ExecStart="))
        env_file = PurePosixPath(next(line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("EnvironmentFile=")))
        env = parse_env((root / host.name / env_file.relative_to("/")).read_text())
        for flag in NOT_IN_ETCD_34:
            env.pop("ETCD_" + flag.upper().replace("-", "_"), None)
        ports = {2379: free_port(), 2381: free_port()}
        mapped = {
            key: remap_loopback(str(root / host.name) + value if value.startswith("/") else value, ports)
            for key, value in env.items()
        }
        argv = exec_start.split()
        assert argv == ["/usr/bin/etcd"]
        argv[0] = ETCD  # the same Debian binary, wherever PATH finds it
        log = tmp_path / f"{host.name}.log"
        commands.append((argv, {"PATH": os.environ["PATH"], **mapped}, log))
        logs.append(log)
    with members_running(commands) as procs:
        pki = root / "etcd1" / "etc/kubernetes/pki/etcd"
        out = wait_healthy("https://127.0.84.11:2379", pki, logs, procs)
        assert all(f"https://127.0.84.1{i}:2379 is healthy" in out for i in (1, 2, 3)), out
    for log in logs:
        # etcd names every ETCD_* variable it did not use; all of ours must have been used.
        assert "unrecognized environment variable" not in log.read_text(), log.read_text()[-2000:]
