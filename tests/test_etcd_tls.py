"""A real 3-member etcd cluster runs with full mutual TLS on the certificates kubeprov issues.

Each member listens on its own loopback address (127.x.y.11-13, the hosts' internalAddress),
with --client-cert-auth and --peer-client-cert-auth, using pki/nodes/<host>/etcd/{server,peer}.
The apiserver-etcd-client cert must be accepted; no cert, or a cert from another cluster's etcd
CA, must be refused.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from testkit import cluster_dir_of, hosts, run_cli

pytestmark = pytest.mark.integration

ETCD, ETCDCTL = shutil.which("etcd"), shutil.which("etcdctl")


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def _unused_loopback_prefix() -> str:
    """127.<a>.<b>: a random /24 of loopback, so parallel runs and other tests do not collide."""
    rng = random.Random(os.getpid() ^ time.time_ns())
    return f"127.{rng.randint(100, 250)}.{rng.randint(1, 250)}"


def _etcdctl(endpoints: list[str], *args: str, ca: Path, cert: Path | None = None, key: Path | None = None):
    command = [ETCDCTL, f"--endpoints={','.join(endpoints)}", f"--cacert={ca}", "--dial-timeout=3s", "--command-timeout=5s"]
    if cert is not None:
        command += [f"--cert={cert}", f"--key={key}"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=30, env={**os.environ, "ETCDCTL_API": "3"}
    )


@pytest.fixture
def etcd_cluster(make_cluster, tmp_path):
    """Three TLS etcd members started from the generated PKI; killed when the test ends."""
    if not (ETCD and ETCDCTL):
        pytest.skip("etcd/etcdctl not installed (Debian etcd-server/etcd-client; run scripts/setup)")
    prefix = _unused_loopback_prefix()
    path = make_cluster(hosts=hosts(3, prefix=prefix), name="etcdtls")
    rc, out, err = run_cli("certs", "generate", "-c", path)
    assert rc == 0, out + err
    pki = cluster_dir_of(path) / "pki"

    members = {}
    for i in (1, 2, 3):
        address = f"{prefix}.{10 + i}"
        members[f"cp{i}"] = (address, _free_port(address), _free_port(address))
    initial = ",".join(f"{name}=https://{a}:{peer}" for name, (a, _, peer) in members.items())

    processes: list[subprocess.Popen] = []
    logs = []
    try:
        for name, (address, client, peer) in members.items():
            certs = pki / "nodes" / name / "etcd"
            flags = {
                "name": name,
                "data-dir": tmp_path / f"etcd-{name}",
                "listen-client-urls": f"https://{address}:{client}",
                "advertise-client-urls": f"https://{address}:{client}",
                "listen-peer-urls": f"https://{address}:{peer}",
                "initial-advertise-peer-urls": f"https://{address}:{peer}",
                "listen-metrics-urls": f"http://{address}:{_free_port(address)}",
                "initial-cluster": initial,
                "initial-cluster-state": "new",
                "initial-cluster-token": f"kubeprov-test-{prefix}",
                "client-cert-auth": "true",
                "trusted-ca-file": pki / "etcd" / "ca.crt",
                "cert-file": certs / "server.crt",
                "key-file": certs / "server.key",
                "peer-client-cert-auth": "true",
                "peer-trusted-ca-file": pki / "etcd" / "ca.crt",
                "peer-cert-file": certs / "peer.crt",
                "peer-key-file": certs / "peer.key",
            }
            log = open(tmp_path / f"etcd-{name}.log", "wb")
            logs.append(log)
            processes.append(
                subprocess.Popen(
                    [ETCD, *(f"--{k}={v}" for k, v in sorted(flags.items()))],
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )
            )
        endpoints = [f"https://{a}:{c}" for a, c, _ in members.values()]
        client = pki / "nodes" / "cp1" / "apiserver-etcd-client"
        deadline = time.monotonic() + 40
        while True:
            health = _etcdctl(endpoints, "endpoint", "health", "--cluster", ca=pki / "etcd" / "ca.crt",
                              cert=client.with_suffix(".crt"), key=client.with_suffix(".key"))
            # A member that has not published its client URL yet is left out of --cluster: wait for all.
            if health.returncode == 0 and (health.stdout + health.stderr).count("is healthy") == 3:
                break
            dead = [p.args[1] for p in processes if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                tails = "\n".join(
                    f"--- {f.name}\n" + Path(f.name).read_text(errors="replace")[-1500:] for f in logs
                )
                pytest.fail(f"etcd cluster not healthy (exited: {dead}): {health.stderr}\n{tails}")
            time.sleep(0.3)
        yield {"pki": pki, "endpoints": endpoints, "health": health, "log": {n: tmp_path / f"etcd-{n}.log" for n in members}}
    finally:
        # Throw-away data: SIGKILL each member's own process group (no graceful shutdown to wait for).
        for proc in processes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for log in logs:
            log.close()


def test_three_members_healthy_with_mutual_tls(etcd_cluster, make_cluster):
    pki, endpoints = etcd_cluster["pki"], etcd_cluster["endpoints"]
    ca = pki / "etcd" / "ca.crt"
    # `endpoint health --cluster` found all three members through the member list.
    healthy = [line for line in (etcd_cluster["health"].stdout + etcd_cluster["health"].stderr).splitlines()
               if "is healthy" in line]
    assert len(healthy) == 3, etcd_cluster["health"]

    members = _etcdctl(endpoints, "member", "list", ca=ca,
                       cert=pki / "nodes/cp2/apiserver-etcd-client.crt", key=pki / "nodes/cp2/apiserver-etcd-client.key")
    assert members.returncode == 0 and sorted(line.split(", ")[2] for line in members.stdout.splitlines()) == [
        "cp1", "cp2", "cp3"], members

    # The apiserver's client cert writes on one member and reads the value back from another.
    client = {"cert": pki / "nodes/cp1/apiserver-etcd-client.crt", "key": pki / "nodes/cp1/apiserver-etcd-client.key"}
    put = _etcdctl(endpoints[:1], "put", "/kubeprov/test", "hello-tls", ca=ca, **client)
    assert put.returncode == 0 and put.stdout.strip() == "OK", put
    got = _etcdctl(endpoints[2:], "get", "/kubeprov/test", "--print-value-only", ca=ca, **client)
    assert got.returncode == 0 and got.stdout.strip() == "hello-tls", got

    # The health-check client cert (what the etcd static pod's probe uses) is accepted too.
    probe = _etcdctl(endpoints[1:2], "endpoint", "health", ca=ca,
                     cert=pki / "nodes/cp2/etcd/healthcheck-client.crt", key=pki / "nodes/cp2/etcd/healthcheck-client.key")
    assert probe.returncode == 0, probe

    # No client certificate: refused by --client-cert-auth (etcd logs why; the client only times out).
    anonymous = _etcdctl(endpoints[:1], "get", "/kubeprov/test", ca=ca)
    assert anonymous.returncode != 0 and "hello-tls" not in anonymous.stdout, anonymous
    assert "client didn't provide a certificate" in etcd_cluster["log"]["cp1"].read_text()

    # A client cert from another cluster's etcd CA: refused.
    other = make_cluster(file="other.yaml", name="other")
    rc, out, err = run_cli("certs", "generate", "-c", other)
    assert rc == 0, out + err
    foreign = cluster_dir_of(other) / "pki" / "nodes" / "cp1"
    assert (foreign / "apiserver-etcd-client.crt").read_bytes() != client["cert"].read_bytes()
    refused = _etcdctl(endpoints[:1], "get", "/kubeprov/test", ca=ca,
                       cert=foreign / "apiserver-etcd-client.crt", key=foreign / "apiserver-etcd-client.key")
    assert refused.returncode != 0 and "hello-tls" not in refused.stdout, refused
    assert "certificate signed by unknown authority" in etcd_cluster["log"]["cp1"].read_text()
