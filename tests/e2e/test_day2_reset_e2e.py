"""`kubeprov reset` and `kubeprov node remove` on real clusters: real Kubernetes v1.28 binaries on
nspawn labs (stacked etcd, bridge CNI, kube-proxy in iptables mode).

Needs KUBEPROV_E2E_BUNDLE=DIR (see tests/e2e/test_up_e2e.py, whose bundle fixture and helpers this
module reuses); without it every test here skips, saying why. One lab at a time, each removed at
the end of its class, failed or not: rs1 (KUBEPROV_E2E_RESET_LAB) and rs2 (…_LAB_HA).

TestWorkers, 1 control plane + 2 workers, in order on one cluster:
1. `reset --dry-run` of a worker running a pod with volumes says what it would do and changes nothing;
2. `reset --host <worker> --yes` leaves on that host, checked there over ssh: no kubelet process, no
   container (the bundle has no crictl, so containerd's own `ctr -n k8s.io` is asked: no container,
   no task), no mount under /var/lib/kubelet, no cni0, no KUBE-* chain in any iptables table
   (legacy or nft, IPv4 or IPv6), no /etc/kubernetes, no joined marker; the other worker untouched;
3. `up` again: the reset worker takes a fresh join (preflight runs there) and its node is Ready;
4. `node remove <other worker> --yes`: 2 nodes left, all Ready, the API answering /readyz all along
   (a probe every 100 ms counts failed requests: none), the host reset.

TestControlPlanes, 3 stacked control planes + 1 worker behind a haproxy-keepalived VIP: resetting
the first control plane is refused; a dry run of resetting another asks the live etcd (every
member's health, the membership); `node remove` of a control plane leaves etcd healthy with two
members, the other nodes Ready, and /readyz through the VIP answering all along.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from pathlib import Path

import pytest
import yaml
from test_up_e2e import (  # noqa: F401  (bundle: the fixture)
    E2E_MARKS,
    ECHO_IMAGE,
    SOURCE,
    Built,
    Prober,
    _kubernetes_version,
    _ready,
    bundle,
)
from testkit import run_cli

from provision.lab.testing import unavailable_reason
from provision.lab.topologies import TOPOLOGIES, cluster_document
from provision.phases.facts import JOINED_MARKER

pytestmark = E2E_MARKS

TOPOLOGY = "1cp-2workers"
LAB = os.environ.get("KUBEPROV_E2E_RESET_LAB", "rs1")

# What the host still holds of a cluster, one "name: value" line each (read over ssh, on the host).
TRACES = r"""
echo "kubelet: $(pgrep -x kubelet | tr '\n' ' ')"
echo "containers: $(ctr -n k8s.io containers ls -q 2>&1 | sort | tr '\n' ' ')"
echo "tasks: $(ctr -n k8s.io tasks ls -q 2>&1 | sort | tr '\n' ' ')"
echo "mounts: $(awk 'index($5, "/var/lib/kubelet/") == 1 { print $5 }' /proc/self/mountinfo | sort | tr '\n' ' ')"
echo "cni0: $(ip -o link show cni0 2>/dev/null | cut -d: -f2)"
echo "veths: $(ip -o link show master cni0 2>/dev/null | cut -d: -f2 | sort | tr '\n' ' ')"
for t in iptables-legacy-save iptables-nft-save ip6tables-legacy-save ip6tables-nft-save; do
  echo "$t: $($t 2>/dev/null | grep -c -e '^:KUBE-' -e ' -[jg] KUBE-')"
done
echo "etc-kubernetes: $(find /etc/kubernetes -mindepth 1 2>/dev/null | sort | tr '\n' ' ')"
echo "joined: $(cat "$1" 2>/dev/null)"
echo "kubelet-unit: $(systemctl is-active kubelet) $(systemctl is-enabled kubelet)"
echo "containerd: $(systemctl is-active containerd)"
"""


def traces(built: Built, host: str) -> dict[str, str]:
    said = built.ssh(host, shlex.join(["sh", "-c", TRACES, "sh", JOINED_MARKER])).stdout.decode()
    return {key: value.strip() for key, _, value in (line.partition(": ") for line in said.splitlines())}


def node_ready(built: Built, name: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        got = built.kubectl("get", "node", name, "-o", "json", check=False)
        if got.returncode == 0 and _ready(json.loads(got.stdout)):
            return
        assert time.monotonic() < deadline, f"node {name} not Ready after {timeout:g} s"
        time.sleep(2)


def _build(bundle_dir: Path, tmp: Path, lab: str, topology_name: str):
    from provision.lab import lifecycle

    topology = TOPOLOGIES[topology_name]
    try:
        info = lifecycle.up(lab, topology.hosts, control_planes=topology.control_planes)
        doc = cluster_document(topology_name, info.cluster_file, info.hosts, version=_kubernetes_version(bundle_dir),
                               bundle=bundle_dir, cluster_dir=tmp / "cluster")
        path = tmp / "cluster.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        result = Built(topology_name, path, info, bundle_dir, doc)
        code, out, err, seconds = result.up()
        assert code == 0, f"first up failed ({seconds:.0f} s):\n{out[-6000:]}\n{err}"
        print(f"\n[e2e] {topology_name} on lab {lab}: first up {seconds:.1f} s")
        yield result
    finally:
        lifecycle.down(lab)


# Class-scoped: each class's lab is down before the next class boots its own (one lab at a time).
@pytest.fixture(scope="class")
def built(bundle, tmp_path_factory):  # noqa: F811
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    yield from _build(bundle, tmp_path_factory.mktemp(LAB), LAB, TOPOLOGY)


@pytest.fixture(scope="class")
def workers(built) -> list[str]:
    return [h["name"] for h in built.doc["hosts"] if h["roles"] == ["worker"]]


class TestWorkers:
    """1 control plane + 2 workers: reset a worker, up again, remove the other."""

    def test_reset_dry_run_says_what_it_would_do_and_changes_nothing(self, built, workers):
        worker = workers[0]
        # A pod with a volume on the worker: a pod sandbox, containers, tmpfs mounts, cni0 and a veth to clean.
        built.kubectl("apply", "-f", "-", stdin=f"""
    apiVersion: v1
    kind: Pod
    metadata: {{name: on-{worker}}}
    spec:
      nodeName: {worker}
      tolerations: [{{operator: Exists}}]
      volumes: [{{name: scratch, emptyDir: {{medium: Memory}}}}]
      containers:
      - {{name: echo, image: {ECHO_IMAGE}, imagePullPolicy: Never, volumeMounts: [{{name: scratch, mountPath: /scratch}}]}}
    """)
        built.kubectl("wait", "--for=condition=Ready", f"pod/on-{worker}", "--timeout=120s")
        before = traces(built, worker)
        assert before["kubelet"] and before["containers"] and before["mounts"] and before["cni0"] and before["veths"], before
        assert int(before["iptables-nft-save"]) + int(before["iptables-legacy-save"]) > 0, before
        code, out, err = run_cli("reset", "-c", built.cluster_file, "--host", worker, "--dry-run", timeout=300)
        assert code == 0, out + err
        print(f"\n[e2e] reset --dry-run:\n{out}")
        for said in ("would stop and disable kubelet", "containers", "would unmount", "would remove /etc/kubernetes",
                     f"would remove {JOINED_MARKER}", "would delete interface cni0", "KUBE-* chains", "dry run: nothing was changed"):
            assert said in out, f"{said!r} not in:\n{out}"
        assert all(line.startswith(worker) for line in out.splitlines()[:-1]), out  # only the named host
        after = traces(built, worker)
        # kube-proxy keeps syncing its rules meanwhile (endpoints settling): their count may change, never to none.
        tables = ("iptables-legacy-save", "iptables-nft-save", "ip6tables-legacy-save", "ip6tables-nft-save")
        assert {k: v for k, v in after.items() if k not in tables} == {k: v for k, v in before.items() if k not in tables}, \
            "a dry run changed the host"
        assert [int(after[t]) > 0 for t in tables] == [int(before[t]) > 0 for t in tables], (before, after)


    def test_reset_of_a_worker_leaves_nothing_of_the_cluster_on_it(self, built, workers):
        worker, other = workers
        other_before = traces(built, other)
        started = time.monotonic()
        code, out, err = run_cli("reset", "-c", built.cluster_file, "--host", worker, "--yes", timeout=600)
        seconds = time.monotonic() - started
        assert code == 0, out + err
        print(f"\n[e2e] reset --host {worker} ({seconds:.1f} s):\n{out}")
        left = traces(built, worker)
        assert left["kubelet"] == "", f"a kubelet still runs: {left}"
        assert left["containers"] == "" and left["tasks"] == "", left
        assert left["mounts"] == "", left
        assert left["cni0"] == "" and left["veths"] == "", left
        for table in ("iptables-legacy-save", "iptables-nft-save", "ip6tables-legacy-save", "ip6tables-nft-save"):
            assert left[table] == "0", f"{table}: {left[table]} KUBE-* chains or jumps left"
        assert left["etc-kubernetes"] in ("", "/etc/kubernetes/manifests") and left["joined"] == "", left  # the static pod dir stays, empty
        assert left["kubelet-unit"] == "inactive disabled" and left["containerd"] == "active", left
        other_after = traces(built, other)
        assert other_after["kubelet-unit"] == "active enabled" and other_after["etc-kubernetes"] == other_before["etc-kubernetes"]
        assert other_after["joined"] == other_before["joined"] != ""


    def test_up_again_joins_the_reset_worker_afresh_and_its_node_is_ready(self, built, workers):
        worker = workers[0]
        code, out, err, seconds = built.up(timeout=1200)
        assert code == 0, out[-6000:] + err
        print(f"\n[e2e] up after the reset: {seconds:.1f} s")
        checked = [line for line in out.splitlines() if worker in line and "checks passed" in line]
        assert checked, f"preflight did not run on {worker}:\n{out[-4000:]}"
        node_ready(built, worker)
        now = traces(built, worker)
        assert now["kubelet"] and now["kubelet-unit"] == "active enabled" and now["joined"], now


    def test_node_remove_of_a_worker_keeps_the_api_serving(self, built, workers):
        worker = workers[1]
        cp = next(h for h in built.doc["hosts"] if "control-plane" in h["roles"])
        prober = Prober(f"https://{cp['address']}:6443/readyz", Path(built.doc["clusterDir"]) / "pki" / "ca.crt")
        prober.start()
        try:
            time.sleep(1)
            code, out, err = run_cli("node", "remove", worker, "-c", built.cluster_file, "--yes", "--timeout", "120", timeout=600)
        finally:
            prober.stopped.set()
            prober.join()
        assert code == 0, out + err
        print(f"\n[e2e] node remove {worker}:\n{out}")
        assert "cordoned and drained" in out and "Node deleted" in out and "take it out of" in out, out
        failed = [why for _, ok, _, why in prober.results if not ok]
        assert prober.results and not failed, f"{len(failed)} of {len(prober.results)} /readyz probes failed: {failed[:5]}"
        nodes = json.loads(built.kubectl("get", "nodes", "-o", "json").stdout)["items"]
        assert sorted(n["metadata"]["name"] for n in nodes) == sorted([cp["name"], workers[0]])
        assert all(_ready(n) for n in nodes)
        gone = traces(built, worker)
        assert gone["kubelet"] == "" and gone["containers"] == "" and gone["joined"] == "", gone
        assert gone["etc-kubernetes"] in ("", "/etc/kubernetes/manifests"), gone


HA_TOPOLOGY = "3cp-1worker-haproxy"
HA_LAB = os.environ.get("KUBEPROV_E2E_RESET_LAB_HA", "rs2")


@pytest.fixture(scope="class")
def ha(bundle, tmp_path_factory):  # noqa: F811
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    yield from _build(bundle, tmp_path_factory.mktemp(HA_LAB), HA_LAB, HA_TOPOLOGY)


def _etcd_members(built: Built) -> tuple[list[str], dict[str, bool]]:
    """The stacked etcd's member names as the first control plane's member sees them, and each
    remaining control plane's /health."""
    from provision.config import load_cluster
    from provision.kube import etcd_members
    from provision.transport import Transport

    cluster = load_cluster(built.cluster_file, None)
    with Transport() as transport:
        names = [m.name for m in etcd_members.members(transport, cluster.first_control_plane)]
        health = {h.name: etcd_members.healthy(transport, h)[0] for h in cluster.control_planes if h.name in names}
    return names, health


class TestControlPlanes:
    """3 stacked control planes + 1 worker behind a haproxy-keepalived VIP: the refusals against
    the running cluster, then `node remove` of a control plane: etcd healthy with two members and
    the API answering through the VIP all along."""

    def test_reset_refuses_the_first_control_plane_while_the_others_run(self, ha):
        first = ha.control_planes[0]
        code, out, err = run_cli("reset", "-c", ha.cluster_file, "--host", first, "--yes", timeout=120)
        assert code == 1 and out == "", out + err
        assert f"{first} is the first control plane of the cluster file" in err and "node remove" in err, err

    def test_reset_dry_run_of_a_joined_control_plane_asks_etcd(self, ha):
        second = ha.control_planes[1]
        code, out, err = run_cli("reset", "-c", ha.cluster_file, "--host", second, "--dry-run", timeout=300)
        assert code == 0, out + err
        print(f"\n[e2e] reset --dry-run of {second}:\n{out}")
        assert "would stop its API server" in out and f"member remove through {ha.control_planes[0]}" in out, out
        assert "would remove /var/lib/etcd" in out or "would empty /var/lib/etcd" in out, out
        names, health = _etcd_members(ha)
        assert sorted(names) == sorted(ha.control_planes) and all(health.values()), (names, health)

    def test_node_remove_of_a_control_plane_keeps_etcd_healthy_and_the_api_serving(self, ha):
        vip = ha.doc["controlPlaneEndpoint"].split(":")[0]
        # Not the first control plane, and not the VIP's holder (its keepalived going moves the VIP: a
        # failover, measured by test_up_e2e's HA test, not what this test is about).
        holder = next(cp for cp in ha.control_planes if f" {vip}/" in ha.ssh(cp, "ip -o -4 addr show").stdout.decode())
        leaving = next(cp for cp in reversed(ha.control_planes[1:]) if cp != holder)
        prober = Prober(f"https://{vip}:6443/readyz", Path(ha.doc["clusterDir"]) / "pki" / "ca.crt")
        prober.start()
        try:
            time.sleep(1)
            started = time.monotonic()
            code, out, err = run_cli("node", "remove", leaving, "-c", ha.cluster_file, "--yes", "--timeout", "120", timeout=900)
            seconds = time.monotonic() - started
            time.sleep(2)
        finally:
            prober.stopped.set()
            prober.join()
        assert code == 0, out + err
        print(f"\n[e2e] node remove {leaving} ({seconds:.1f} s):\n{out}")
        failed = [(round(t - started, 2), why) for t, ok, _, why in prober.results if not ok]
        print(f"[e2e] /readyz through the VIP: {len(prober.results)} probes, {len(failed)} failed at {failed[:10]}")
        names, health = _etcd_members(ha)
        assert sorted(names) == sorted(cp for cp in ha.control_planes if cp != leaving), names
        assert len(health) == 2 and all(health.values()), health
        nodes = json.loads(ha.kubectl("get", "nodes", "-o", "json").stdout)["items"]
        assert sorted(n["metadata"]["name"] for n in nodes) == sorted(n for n in ha.nodes if n != leaving)
        gone = traces(ha, leaving)
        assert gone["kubelet"] == "" and gone["containers"] == "" and gone["etc-kubernetes"] in ("", "/etc/kubernetes/manifests"), gone
        assert prober.results and not failed, f"{len(failed)} of {len(prober.results)} probes through the VIP failed"
