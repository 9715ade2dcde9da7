"""`kubeprov etcd backup` / `etcd restore` on a real cluster: real Kubernetes v1.28 binaries and
Debian's real etcd 3.4, on nspawn labs of two topologies: stacked etcd (1 control plane + 2 workers,
etcd a static pod) and external etcd (3 members of their own, systemd units; 1 control plane + 1
worker).

Needs KUBEPROV_E2E_BUNDLE=DIR (see tests/e2e/test_up_e2e.py, whose bundle fixture and helpers this
module reuses); without it every test here skips, saying why.

1. Same hosts: ConfigMaps made, backup, then ConfigMaps made, changed and deleted after it; restore:
   exactly the snapshot's ConfigMaps are there, with the snapshot's contents, every node Ready again,
   every member's old data kept aside.
2. Fresh hosts: the lab is destroyed, a new lab boots (new machines, a new cluster directory);
   one `etcd restore --lab --bundle` seeds etcd and builds the cluster: every object the snapshot
   held (count and content of the test's ConfigMaps; every ConfigMap and Secret of the snapshot by
   name) is there.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from test_up_e2e import E2E_MARKS, SOURCE, Built, _kubernetes_version, bundle  # noqa: F401  (bundle: the fixture)
from testkit import run_cli

from provision.lab.testing import unavailable_reason
from provision.lab.topologies import TOPOLOGIES, cluster_document

pytestmark = E2E_MARKS

# topology → its labs: the first cluster, and the fresh hosts it is restored onto
LABS = {"1cp-2workers": ("bk1", "bk2"), "external-etcd": ("bx1", "bx2")}
LABEL = "kubeprov-e2e=etcd-backup"


def _lab(topology_name: str, name: str, bundle_dir: Path, tmp: Path) -> Built:
    from provision.lab import lifecycle

    topology = TOPOLOGIES[topology_name]
    info = lifecycle.up(name, topology.hosts, control_planes=topology.control_planes)
    doc = cluster_document(topology_name, info.cluster_file, info.hosts, version=_kubernetes_version(bundle_dir), bundle=bundle_dir,
                           cluster_dir=tmp / "cluster")
    path = tmp / "cluster.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return Built(topology_name, path, info, bundle_dir, doc)


def _members(built: Built) -> list[str]:
    """The hosts that hold an etcd data directory: the control planes (stacked) or the etcd hosts."""
    etcd_hosts = [h["name"] for h in built.doc["hosts"] if "etcd" in h["roles"]]
    return etcd_hosts or built.control_planes


def _down(name: str) -> None:
    from provision.lab import lifecycle

    lifecycle.down(name)


@pytest.fixture(scope="module")
def states() -> dict:
    return {}


@pytest.fixture(scope="module", params=list(LABS))
def first(request, bundle, tmp_path_factory):  # noqa: F811
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    name = LABS[request.param][0]
    try:
        built = _lab(request.param, name, bundle, tmp_path_factory.mktemp(name))
        code, out, err, seconds = built.up()
        assert code == 0, f"up failed ({seconds:.0f} s):\n{out[-6000:]}\n{err}"
        yield built
    finally:
        _down(name)


@pytest.fixture
def state(first, states) -> dict:
    """What the same-hosts test leaves for the fresh-hosts one, per topology."""
    return states.setdefault(first.topology, {})


def _configmaps(built: Built, timeout: float = 120) -> dict[str, dict]:
    """The test's ConfigMaps, name → data, asked until the API answers."""
    deadline = time.monotonic() + timeout
    while True:
        proc = built.kubectl("get", "configmaps", "-n", "default", "-l", LABEL, "-o", "json", check=False)
        if proc.returncode == 0:
            return {item["metadata"]["name"]: item.get("data", {}) for item in json.loads(proc.stdout)["items"]}
        assert time.monotonic() < deadline, f"kubectl get configmaps: {proc.stderr}"
        time.sleep(1)


def _names(built: Built, kind: str) -> set[str]:
    proc = built.kubectl("get", kind, "-A", "-o", "json")
    return {f"{i['metadata']['namespace']}/{i['metadata']['name']}" for i in json.loads(proc.stdout)["items"]}


def _apply_configmap(built: Built, name: str, data: dict) -> None:
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default",
                                                                 "labels": dict([LABEL.split("=")])}, "data": data}
    built.kubectl("apply", "-f", "-", stdin=json.dumps(doc))


def _wait_nodes_ready(built: Built, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        proc = built.kubectl("get", "nodes", "-o", "json", check=False)
        if proc.returncode == 0:
            items = json.loads(proc.stdout)["items"]
            ready = {n["metadata"]["name"] for n in items
                     if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))}
            if set(built.nodes) <= ready:
                return
        assert time.monotonic() < deadline, f"nodes not Ready after {timeout:g} s: {proc.stdout[-2000:]} {proc.stderr}"
        time.sleep(2)


def test_restore_on_the_same_hosts_gives_exactly_the_snapshots_objects(first, state, tmp_path_factory):
    built = first
    before = {f"before-{i}": {"n": str(i), "text": f"made before the backup {i}"} for i in range(1, 6)}
    for name, data in before.items():
        _apply_configmap(built, name, data)
    assert _configmaps(built) == before
    recorded = {"configmaps": _names(built, "configmaps"), "secrets": _names(built, "secrets")}

    out_dir = tmp_path_factory.mktemp("backups")
    archive = out_dir / f"{built.topology}.tar.gz"
    code, out, err = run_cli("etcd", "backup", "-c", built.cluster_file, "-o", archive, timeout=300)
    assert code == 0, out + err
    assert out.strip() == str(archive)
    assert archive.stat().st_mode & 0o777 == 0o600
    print(f"\n[e2e] etcd backup: {err.strip().splitlines()[-1]}")

    # After the backup: new objects, one changed, one deleted.
    for i in range(1, 4):
        _apply_configmap(built, f"after-{i}", {"n": str(i)})
    _apply_configmap(built, "before-2", {"n": "changed after the backup"})
    built.kubectl("delete", "configmap", "-n", "default", "before-5")
    assert set(_configmaps(built)) == {"before-1", "before-2", "before-3", "before-4", "after-1", "after-2", "after-3"}

    started = time.monotonic()
    code, out, err = run_cli("etcd", "restore", archive, "-c", built.cluster_file, "--yes", timeout=900)
    seconds = time.monotonic() - started
    assert code == 0, out + err
    print(f"[e2e] etcd restore on the same hosts ({built.topology}): {seconds:.1f} s\n{err}")

    assert _configmaps(built) == before  # exactly the snapshot's: after-* gone, before-2 as it was, before-5 back
    assert recorded["configmaps"] <= _names(built, "configmaps")
    assert recorded["secrets"] <= _names(built, "secrets")
    _wait_nodes_ready(built)
    for member in _members(built):  # each member's old data kept, not deleted
        aside = built.ssh(member, "ls -d /var/lib/etcd.before-restore-*/member").stdout.decode().split()
        assert len(aside) == 1, f"{member}: {aside}"
    for cp in built.control_planes:
        left = built.ssh(cp, "ls -A /var/lib/kubeprov/etcd-restore/manifests").stdout.decode().split()
        assert left == [], f"{cp}: {left}"  # every stashed manifest back in place
    # The API keeps working: a write after the restore is read back.
    _apply_configmap(built, "after-restore", {"ok": "yes"})
    assert _configmaps(built)["after-restore"] == {"ok": "yes"}
    built.kubectl("delete", "configmap", "-n", "default", "after-restore")
    state.update(archive=archive, before=before, recorded=recorded)


def test_restore_onto_a_new_lab_brings_every_object_back(first, state, bundle, tmp_path_factory):  # noqa: F811
    if "archive" not in state:
        pytest.skip("the same-hosts test made no backup")
    old, new = LABS[first.topology]
    _down(old)  # the old machines are gone
    try:
        built = _lab(first.topology, new, bundle, tmp_path_factory.mktemp(new))
        assert not Path(built.doc["clusterDir"]).exists()  # a new cluster directory: the CAs come from the backup
        code, out, err = run_cli("etcd", "restore", "--dry-run", state["archive"], "-c", built.cluster_file)
        assert code == 0 and "fresh" in err and out.strip() == "dry run: nothing was changed", out + err
        started = time.monotonic()
        code, out, err = run_cli("etcd", "restore", state["archive"], "-c", built.cluster_file, "--lab", "--bundle", bundle,
                                 "--yes", timeout=1800)
        seconds = time.monotonic() - started
        assert code == 0, out[-3000:] + err[-6000:]
        print(f"\n[e2e] etcd restore onto a new lab ({first.topology}; seed + up): {seconds:.1f} s; {out.strip()}")
        assert _configmaps(built) == state["before"]  # count and content
        assert state["recorded"]["configmaps"] <= _names(built, "configmaps")
        assert state["recorded"]["secrets"] <= _names(built, "secrets")
        _wait_nodes_ready(built)
    finally:
        _down(new)
