"""Adding a node: a worker added to the cluster file joins on the next `up`, and only it changes.
Real Kubernetes v1.28 binaries on an nspawn lab (stacked etcd, bridge CNI, kube-proxy in iptables mode).

Needs KUBEPROV_E2E_BUNDLE=DIR (see tests/e2e/test_up_e2e.py, whose bundle fixture and helpers this
module reuses); without it every test here skips, saying why. One lab, an1 (KUBEPROV_E2E_ADD_LAB),
removed at the end of the module, failed or not.

A lab of 3 hosts (1cp-2workers); the cluster file first lists only the control plane and the first
worker; `up`. Then each existing host's state is read over ssh (one command per host) and the API's
objects with kubectl; the second worker is added to the cluster file, `up` runs again, and both are
read again. Asserted, each difference named:
- the new worker's node is Ready, its kube-proxy pod Ready;
- `up`'s output says `changed` for no other host, but for its routes unit: replaced, and run again;
- on the other hosts: every file kubeprov places or the kubelet and containerd read (/etc/kubernetes,
  /etc/containerd, /etc/systemd/system, /etc/cni/net.d, /etc/sysctl.d, /etc/modules-load.d,
  /var/lib/kubeprov, /var/lib/kubelet's config.yaml and pki) has the same sha256, size and mtime —
  except the bridge CNI's routes unit, which must gain the route to the new node's pod CIDR (the
  bridge CNI routes pod CIDRs statically: that is the one file a new node has to change);
- kubelet and containerd were not restarted (ActiveEnterTimestampMonotonic, MainPID, NRestarts);
- every container of containerd's k8s.io namespace (the static pods, kube-proxy, CoreDNS) is the same
  task with the same PID (no crictl in the bundle: containerd's own `ctr`);
- every object in kube-system and every object kubeprov applies (`kubeprov render`'s _cluster) has
  the same resourceVersion, except what the new Node itself brings: its kube-proxy pod, the
  kube-proxy DaemonSet's status (its generation unchanged) and the events about those. Leases in
  kube-system are renewed by their holders every few seconds: their holders are compared instead
  (the controller manager and scheduler kept their leadership: neither restarted);
- the existing nodes route to the new node's pod CIDR (a pod on the control plane reaches a pod on it).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from test_up_e2e import (  # noqa: F401  (bundle: the fixture)
    E2E_MARKS,
    ECHO_IMAGE,
    SOURCE,
    Built,
    _kubernetes_version,
    _ready,
    bundle,
)
from testkit import run_cli

from provision.lab.testing import unavailable_reason
from provision.lab.topologies import TOPOLOGIES, cluster_document
from provision.render.cni.bridge import ROUTES_UNIT

pytestmark = E2E_MARKS

TOPOLOGY = "1cp-2workers"
LAB = os.environ.get("KUBEPROV_E2E_ADD_LAB", "an1")

# What `up` could touch on a host: one "kind key value" line per item (read over ssh, on the host).
DIRS = ("/etc/kubernetes", "/etc/containerd", "/etc/systemd/system", "/etc/cni/net.d", "/etc/sysctl.d",
        "/etc/modules-load.d", "/var/lib/kubeprov", "/var/lib/kubelet/config.yaml", "/var/lib/kubelet/pki",
        "/etc/crictl.yaml")
UNITS = ("kubelet", "containerd", ROUTES_UNIT.name)
STATE = r"""
find "$@" -type f -printf 'mtime %p %T@ %s\n' 2>/dev/null
find "$@" -type l -printf 'link %p %l\n' 2>/dev/null
find "$@" -type f -exec sha256sum {} + 2>/dev/null | awk '{ print "sha256", $2, $1 }'
for u in kubelet containerd kubeprov-pod-routes; do
  echo "unit $u $(systemctl show -p ActiveState,ActiveEnterTimestampMonotonic,MainPID,NRestarts --value $u | tr '\n' ' ')"
done
ctr -n k8s.io tasks ls 2>/dev/null | awk 'NR > 1 { print "task", $1, $2, $3 }'
"""


def host_state(built: Built, host: str) -> dict[str, dict[str, str]]:
    """kind → key → value: mtime (path → mtime size), link, sha256, unit, task (id → pid status)."""
    said = built.ssh(host, shlex.join(["sh", "-c", STATE, "sh", *DIRS])).stdout.decode()
    state: dict[str, dict[str, str]] = {}
    for line in said.splitlines():
        kind, key, value = (line.split(" ", 2) + ["", ""])[:3]
        state.setdefault(kind, {})[key] = value.strip()
    return state


def objects_by_key(items: list[dict]) -> dict[str, dict]:
    return {f"{o['kind']}/{o['metadata'].get('namespace', '')}/{o['metadata']['name']}": o for o in items}


def api_state(built: Built, applied_dir: Path) -> dict[str, dict]:
    """Every object in kube-system and every object kubeprov applies, by kind/namespace/name."""
    kinds = built.kubectl("api-resources", "--verbs=list", "--namespaced", "-o", "name").stdout.split()
    kinds = [k for k in kinds if k != "events.events.k8s.io"]  # the same objects as core events
    found = json.loads(built.kubectl("get", ",".join(kinds), "-n", "kube-system", "-o", "json").stdout)["items"]
    applied = json.loads(built.kubectl("get", "-f", str(applied_dir), "-o", "json").stdout)
    found += applied.get("items", [applied])
    return objects_by_key(found)


@dataclass
class Added:
    built: Built
    new: str
    others: list[str]
    before: dict[str, dict]  # host → host_state, before the second up
    after: dict[str, dict]
    api_before: dict[str, dict]
    api_after: dict[str, dict]
    output: str
    seconds: float


@pytest.fixture(scope="module")
def added(bundle, tmp_path_factory):  # noqa: F811
    from provision.lab import lifecycle

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp(LAB)
    topology = TOPOLOGIES[TOPOLOGY]
    try:
        info = lifecycle.up(LAB, topology.hosts, control_planes=topology.control_planes)
        full = cluster_document(TOPOLOGY, info.cluster_file, info.hosts, version=_kubernetes_version(bundle),
                                bundle=bundle, cluster_dir=tmp / "cluster")
        new = full["hosts"][-1]["name"]
        doc = {**full, "hosts": full["hosts"][:-1]}  # the control plane and the first worker
        path = tmp / "cluster.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        built = Built(TOPOLOGY, path, info, bundle, doc)
        code, out, err, seconds = built.up()
        assert code == 0, f"first up failed ({seconds:.0f} s):\n{out[-6000:]}\n{err}"
        print(f"\n[e2e] {TOPOLOGY} without {new} on lab {LAB}: first up {seconds:.1f} s")
        others = [h["name"] for h in doc["hosts"]]
        for host in others:
            built.kubectl("wait", "--for=condition=Ready", f"node/{host}", "--timeout=180s")
        # Every pod of kube-system Ready, and the cluster quiet, before the state is taken.
        built.kubectl("wait", "--for=condition=Ready", "pods", "--all", "-n", "kube-system", "--timeout=180s")
        time.sleep(5)
        code, out, err = run_cli("render", "-c", path, "-o", tmp / "render", timeout=300)
        assert code == 0, out + err
        applied_dir = tmp / "render" / "_cluster"
        before = {host: host_state(built, host) for host in others}
        api_before = api_state(built, applied_dir)

        path.write_text(yaml.safe_dump(full, sort_keys=False))  # the second worker added
        built.doc = full
        code, out, err, seconds = built.up(timeout=1200)
        assert code == 0, f"up with {new} added failed ({seconds:.0f} s):\n{out[-6000:]}\n{err}"
        print(f"\n[e2e] up with {new} added: {seconds:.1f} s\n{out}")
        after = {host: host_state(built, host) for host in others}
        api_after = api_state(built, applied_dir)
        yield Added(built, new, others, before, after, api_before, api_after, out, seconds)
    finally:
        lifecycle.down(LAB)


def differences(before: dict[str, str], after: dict[str, str]) -> dict[str, tuple[str | None, str | None]]:
    return {k: (before.get(k), after.get(k)) for k in sorted(before.keys() | after.keys()) if before.get(k) != after.get(k)}


def test_the_new_worker_joins_and_is_ready(added):
    added.built.kubectl("wait", "--for=condition=Ready", f"node/{added.new}", "--timeout=180s")
    nodes = json.loads(added.built.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert {n["metadata"]["name"] for n in nodes if _ready(n)} == set(added.others) | {added.new}
    pods = json.loads(added.built.kubectl("get", "pods", "-n", "kube-system", "-l", "k8s-app=kube-proxy", "-o", "json",
                                          f"--field-selector=spec.nodeName={added.new}").stdout)["items"]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    added.built.kubectl("wait", "--for=condition=Ready", f"pod/{pods[0]['metadata']['name']}", "-n", "kube-system", "--timeout=120s")


# What `up` may say it changed on the other hosts: sync replacing their routes unit (the one file,
# as the files test below checks), and the unit run again.
ROUTES_CHANGED = re.compile(rf"^1 files (changed|replaced \(backups kept on the host\): {re.escape(str(ROUTES_UNIT))})$"
                            rf"|^{re.escape(ROUTES_UNIT.name)} run again: ")


def test_up_reports_no_change_on_the_other_hosts_but_their_routes(added):
    changed = [line.split(None, 2) for line in added.output.splitlines() if " changed " in line]
    assert any(host == added.new for host, _, _ in changed), "up said no change on the new worker"
    elsewhere = [f"{host} {said}" for host, _, said in changed if host != added.new and not ROUTES_CHANGED.match(said)]
    assert not elsewhere, "up changed other hosts:\n" + "\n".join(elsewhere)
    rerun = {host for host, _, said in changed if said.startswith(f"{ROUTES_UNIT.name} run again")}
    assert rerun == set(added.others), f"the routes unit was run again on {sorted(rerun)}, not on every other node"


def test_the_other_hosts_files_are_unchanged_but_the_route_to_the_new_node(added):
    found = {}
    for host in added.others:
        for kind in ("sha256", "mtime", "link"):
            for path, (was, now) in differences(added.before[host].get(kind, {}), added.after[host].get(kind, {})).items():
                found[f"{host} {kind} {path}"] = f"{was} → {now}"
    expected = {f"{host} {kind} {ROUTES_UNIT}" for host in added.others for kind in ("sha256", "mtime")}
    assert set(found) == expected, "files that differ, beyond each routes unit:\n" + \
        "\n".join(f"{k}: {v}" for k, v in sorted(found.items()) if k not in expected) + \
        "\nroutes units unchanged: " + ", ".join(sorted(expected - set(found)))


def test_kubelet_and_containerd_were_not_restarted(added):
    found = {}
    for host in added.others:
        for unit in ("kubelet", "containerd"):
            was, now = added.before[host]["unit"][unit], added.after[host]["unit"][unit]
            if was != now:
                found[f"{host} {unit}"] = f"{was} → {now} (ActiveState ActiveEnterTimestampMonotonic MainPID NRestarts)"
    assert not found, "\n".join(f"{k}: {v}" for k, v in found.items())


def test_every_container_on_the_other_hosts_is_the_same_task(added):
    found = {}
    for host in added.others:
        assert added.before[host].get("task"), f"{host}: no container task was read"
        for task, (was, now) in differences(added.before[host]["task"], added.after[host].get("task", {})).items():
            found[f"{host} task {task}"] = f"{was} → {now} (PID STATUS)"
    assert not found, "\n".join(f"{k}: {v}" for k, v in found.items())


def test_the_other_hosts_route_to_the_new_nodes_pod_cidr(added):
    """The one change a new node must make elsewhere: the bridge CNI's static route to its pod CIDR,
    in place (the routes unit ran again), not only written into the unit file."""
    from provision.config import load_cluster
    from provision.render.cni.bridge import node_pod_cidrs

    cluster = load_cluster(added.built.cluster_file, None)
    cidr = str(node_pod_cidrs(cluster)[added.new])
    new_address = next(h.advertise_address for h in cluster.hosts if h.name == added.new)
    missing = {}
    for host in added.others:
        routes = added.built.ssh(host, f"ip -4 route show {cidr}").stdout.decode().strip()
        if f"via {new_address}" not in routes:
            missing[host] = routes or "(none)"
    assert not missing, f"no route to {added.new}'s pod CIDR {cidr} via {new_address}: {missing}"


def test_api_objects_unchanged_but_what_the_new_node_brings(added):
    before, after = added.api_before, added.api_after
    new_pods = {k for k, o in after.items() if o["kind"] == "Pod" and o["spec"].get("nodeName") == added.new}
    assert any(k.startswith("Pod/kube-system/kube-proxy-") for k in new_pods), sorted(new_pods)

    def brought_by_the_new_node(key: str) -> bool:
        obj = after.get(key) or before[key]
        if key in new_pods:
            return True
        if key == "DaemonSet/kube-system/kube-proxy":  # its status counts the new pod; its spec is the same
            return before[key]["metadata"]["generation"] == after[key]["metadata"]["generation"] \
                and before[key]["spec"] == after[key]["spec"]
        if obj["kind"] == "Event":
            involved = obj["involvedObject"]
            return f"{involved['kind']}/{involved.get('namespace', '')}/{involved['name']}" in new_pods \
                or (involved["kind"] == "Node" and involved["name"] == added.new) \
                or f"{involved['kind']}/{involved.get('namespace', '')}/{involved['name']}" == "DaemonSet/kube-system/kube-proxy"
        return False

    found = {}
    for key in sorted(before.keys() | after.keys()):
        was, now = before.get(key), after.get(key)
        if key.startswith("Lease/kube-system/"):  # renewed every few seconds by their holders: who holds them counts
            held = [(o or {}).get("spec", {}).get("holderIdentity") for o in (was, now)]
            if held[0] != held[1]:
                found[key] = f"holder {held[0]} → {held[1]}"
            continue
        version = [(o or {}).get("metadata", {}).get("resourceVersion") for o in (was, now)]
        if version[0] != version[1] and not brought_by_the_new_node(key):
            found[key] = "created" if was is None else "deleted" if now is None else f"resourceVersion {version[0]} → {version[1]}"
    assert not found, "objects that changed, beyond the new node's own:\n" + "\n".join(f"{k}: {v}" for k, v in found.items())
