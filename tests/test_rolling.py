"""The pure parts of the rolling mechanism (provision/rolling.py): the order hosts are rolled in,
what restarts for which changed files, when a host's static pods count as back, and the
host-granular journal an interrupted roll resumes from."""

from __future__ import annotations

import datetime as dt

import pytest
import yaml
from testkit import hosts

from provision.config import load_cluster
from provision.errors import KubeprovError
from provision.phases.journal import HostJournal
from provision.render.tree import File
from provision.rolling import Restarts, node_back, pods_behind, restarts, waves


def _cluster(make_cluster, control_planes=3, workers=5):
    return load_cluster(make_cluster(hosts=hosts(control_planes, workers)), None)


def test_control_planes_go_one_at_a_time_in_file_order_then_workers_in_bounded_batches(make_cluster):
    cluster = _cluster(make_cluster)
    order = [[h.name for h in wave] for wave in waves(cluster, reversed(cluster.hosts), batch=2)]
    assert order == [["cp1"], ["cp2"], ["cp3"], ["w1", "w2"], ["w3", "w4"], ["w5"]]
    only = [[h.name for h in wave] for wave in waves(cluster, [cluster.hosts[1], cluster.hosts[4]])]
    assert only == [["cp2"], ["w2"]]
    with pytest.raises(KubeprovError, match="at least 1"):
        waves(cluster, cluster.hosts, batch=0)


def test_external_etcd_members_go_first_one_at_a_time(make_cluster):
    members = [{"name": f"etcd{i}", "address": f"192.0.2.{50 + i}", "internalAddress": f"10.0.0.{50 + i}", "roles": ["etcd"]}
               for i in (1, 2, 3)]
    cluster = load_cluster(make_cluster(hosts=hosts(2, 2) + members, etcd={"topology": "external"}), None)
    order = [[h.name for h in wave] for wave in waves(cluster, reversed(cluster.hosts), batch=2)]
    assert order == [["etcd1"], ["etcd2"], ["etcd3"], ["cp1"], ["cp2"], ["w1", "w2"]]


def _pod(name, volumes=(), image="registry.k8s.io/x:v1", command=("x",)):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "kube-system"},
            "spec": {"containers": [{"name": name, "image": image, "command": list(command)}],
                     "volumes": [{"name": f"v{i}", "hostPath": {"path": p}} for i, p in enumerate(volumes)]}}


TREE = {
    "/etc/kubernetes/manifests/kube-apiserver.yaml": File(yaml.safe_dump(_pod("kube-apiserver", ["/etc/kubernetes/pki"])).encode()),
    "/etc/kubernetes/manifests/kube-scheduler.yaml": File(yaml.safe_dump(_pod("kube-scheduler", ["/etc/kubernetes/scheduler.conf"])).encode()),
    "/etc/kubernetes/manifests/etcd.yaml": File(yaml.safe_dump(_pod("etcd", ["/etc/kubernetes/pki/etcd/", "/var/lib/etcd"])).encode()),
    "/var/lib/kubelet/config.yaml": File(b"kind: KubeletConfiguration\n"),
}


def test_a_changed_manifest_restarts_its_pod_by_itself_and_nothing_else():
    assert restarts(TREE, ["/etc/kubernetes/manifests/kube-apiserver.yaml"]) == Restarts(manifests=("kube-apiserver",))


def test_a_changed_file_a_pod_mounts_restarts_that_pod_and_the_kubelets_files_restart_the_kubelet():
    assert restarts(TREE, ["/etc/kubernetes/pki/etcd/peer.crt"]) == Restarts(readers=("etcd", "kube-apiserver"))
    assert restarts(TREE, ["/etc/kubernetes/scheduler.conf"]) == Restarts(readers=("kube-scheduler",))
    assert restarts(TREE, ["/etc/kubernetes/pki-other/x"]) == Restarts()  # a prefix is not a directory
    assert restarts(TREE, ["/var/lib/kubelet/config.yaml"]) == Restarts(kubelet=True)
    assert restarts(TREE, ["/etc/kubernetes/kubelet.conf"]) == Restarts(kubelet=True)
    assert restarts(TREE, [], kubelet=True) == Restarts(kubelet=True)  # a new kubelet binary
    # A pod whose manifest changes restarts with it: it is not restarted a second time as a reader.
    both = restarts(TREE, ["/etc/kubernetes/manifests/kube-apiserver.yaml", "/etc/kubernetes/pki/apiserver.crt"])
    assert both == Restarts(manifests=("kube-apiserver",))


def _mirror(pod, host, *, ready=True, started="2026-12-03T10:00:00Z", **change):
    mirror = yaml.safe_load(yaml.safe_dump(pod))
    mirror["metadata"]["name"] = f"{pod['metadata']['name']}-{host}"
    mirror["spec"]["containers"][0].update(change)
    mirror["status"] = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                        "containerStatuses": [{"state": {"running": {"startedAt": started}}}]}
    return mirror


def test_a_static_pod_is_back_only_when_its_mirror_pod_shows_the_new_manifest_ready():
    tree = {k: v for k, v in TREE.items() if "kube-apiserver" in k or "etcd" in k}
    etcd, api = (yaml.safe_load(tree[k].content) for k in sorted(tree))
    new = {"items": [_mirror(api, "cp1"), _mirror(etcd, "cp1")]}
    assert pods_behind(tree, "cp1", new, restarted={}) == []
    old = {"items": [_mirror(api, "cp1", image="registry.k8s.io/x:v0"), _mirror(etcd, "cp1", ready=False)]}
    assert sorted(pods_behind(tree, "cp1", old, restarted={})) == [("etcd", "not Ready"), ("kube-apiserver", "still the old pod")]
    assert sorted(pods_behind(tree, "cp1", {"items": []}, restarted={})) == [("etcd", "no mirror pod"), ("kube-apiserver", "no mirror pod")]
    # restarted with the same manifest: back only once its containers started after the restart began
    since = dt.datetime(2026, 12, 3, 10, tzinfo=dt.timezone.utc).timestamp()
    assert pods_behind(tree, "cp1", new, restarted={"etcd": since + 60}) == [("etcd", "not restarted yet")]
    assert pods_behind(tree, "cp1", new, restarted={"etcd": since - 60}) == []


def test_the_host_journal_resumes_only_the_same_change_and_says_what_a_host_owes(tmp_path):
    journal = HostJournal.open(tmp_path / "rolling.json", "up:abc")
    assert not journal.resumed
    journal.mark("cp1", "done")
    journal.mark("cp2", "started", kubelet=True, manifests=["kube-apiserver"])
    again = HostJournal.open(tmp_path / "rolling.json", "up:abc")
    assert again.resumed and again.done("cp1") and not again.done("cp2")
    assert again.owed("cp2") == {"state": "started", "kubelet": True, "manifests": ["kube-apiserver"]}
    assert again.owed("cp1") == {} and again.owed("w1") == {}
    assert not HostJournal.open(tmp_path / "rolling.json", "up:other").resumed  # another change starts over
    again.finish()
    assert not (tmp_path / "rolling.json").exists()


def test_an_external_etcd_member_restarts_its_service_for_its_certificates_unit_or_environment():
    member = {"/etc/systemd/system/etcd.service": File(b"[Service]\n"), "/etc/etcd/etcd.env": File(b"ETCD_NAME=etcd1\n"),
              "/etc/kubernetes/pki/etcd/server.crt": File(b"x")}
    assert restarts(member, ["/etc/kubernetes/pki/etcd/server.crt"]) == Restarts(services=("etcd",))
    assert restarts(member, ["/etc/etcd/etcd.env"]) == Restarts(services=("etcd",))
    assert restarts(member, ["/etc/kubernetes/pki/ca.crt"]) == Restarts()
    # A control plane's tree has no etcd unit: its etcd is a static pod, restarted as a reader.
    assert restarts(TREE, ["/etc/kubernetes/pki/etcd/server.crt"]) == Restarts(readers=("etcd", "kube-apiserver"))
    owed = Restarts(services=("etcd",), kubelet=True)
    assert Restarts.owed({"state": "started", "kubelet": True, "services": ["etcd"]}) == owed
    assert "etcd restarted (systemd" in owed.said()


def test_a_pod_that_names_its_files_restarts_only_for_those_it_names():
    # kube-controller-manager mounts all of /etc/kubernetes/pki but reads only what its flags name.
    kcm = _pod("kube-controller-manager", ["/etc/kubernetes/pki", "/etc/kubernetes/controller-manager.conf"],
               command=("kube-controller-manager", "--root-ca-file=/etc/kubernetes/pki/ca.crt",
                        "--kubeconfig=/etc/kubernetes/controller-manager.conf", "--cert-dir=/etc/kubernetes/pki/kcm/"))
    tree = {"/etc/kubernetes/manifests/kube-controller-manager.yaml": File(yaml.safe_dump(kcm).encode())}
    assert restarts(tree, ["/etc/kubernetes/pki/apiserver.crt"]) == Restarts()
    assert restarts(tree, ["/etc/kubernetes/pki/ca.crt"]) == Restarts(readers=("kube-controller-manager",))
    assert restarts(tree, ["/etc/kubernetes/controller-manager.conf"]) == Restarts(readers=("kube-controller-manager",))
    assert restarts(tree, ["/etc/kubernetes/pki/kcm/serving.crt"]) == Restarts(readers=("kube-controller-manager",))


def _node(ready: str, heartbeat: str) -> dict:
    return {"status": {"conditions": [{"type": "MemoryPressure", "status": "False", "lastHeartbeatTime": "2026-12-04T11:50:00Z"},
                                      {"type": "Ready", "status": ready, "lastHeartbeatTime": heartbeat}]}}


def test_a_restarted_kubelets_node_is_back_only_when_its_new_kubelet_has_posted_ready():
    before = "2026-12-04T11:47:02Z"  # the Ready its kubelet posted before the restart
    assert not node_back(_node("True", before), before)  # still the old kubelet's word
    assert not node_back(_node("False", "2026-12-04T11:47:05Z"), before)  # the new one: NotReady first
    assert node_back(_node("True", "2026-12-04T11:47:06Z"), before)
    assert node_back(_node("True", before), None)  # no restart: Ready is enough
    assert not node_back(_node("Unknown", "2026-12-04T11:47:06Z"), None)
    assert not node_back({"status": {"conditions": []}}, before)
