"""`certs renew` rolling out to the hosts (provision/day2/certs_renew.py): what --dry-run lists,
and what is refused before anything changes. The roll itself needs running API servers and
etcd: tests/e2e/test_day2_upgrade_e2e.py proves it on real Kubernetes binaries."""

from __future__ import annotations

import socket

from testkit import cluster_dir_of, hosts, run_cli, snapshot

from provision.day2.certs_renew import JOURNAL, journal_key
from provision.phases.journal import HostJournal


def _generated(make_cluster, **overrides):
    path = make_cluster(**overrides)
    rc, out, err = run_cli("certs", "generate", "-c", path)
    assert rc == 0, out + err
    return path


def _lines(out: str, host: str) -> list[str]:
    return [line.split(None, 1)[1] for line in out.splitlines() if line.split(None, 1)[:1] == [host]]


def test_dry_run_lists_per_host_in_the_rolls_order_what_is_replaced_and_restarted_and_changes_nothing(make_cluster):
    path = _generated(make_cluster, hosts=hosts(3, 2))
    before = snapshot(cluster_dir_of(path))
    rc, out, err = run_cli("certs", "renew", "all", "--dry-run", "-c", path)  # TEST-NET addresses: no host is contacted
    assert rc == 0, out + err
    assert snapshot(cluster_dir_of(path)) == before
    heads = [line.split()[0] for line in out.splitlines() if " files (backups kept on the host)" in line]
    assert heads == ["cp1", "cp2", "cp3", "w1", "w2"]
    cp1 = _lines(out, "cp1")
    assert cp1[0].startswith("alone, etcd healthy before and after: replace ")
    for pod in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        assert pod in cp1[0], cp1[0]
    assert "kubelet restarted" in cp1[0]
    assert "replace /etc/kubernetes/pki/apiserver.crt" in cp1 and "replace /etc/kubernetes/admin.conf" in cp1
    assert "replace /etc/kubernetes/pki/ca.crt" not in cp1  # a renew keeps the CAs
    w1 = _lines(out, "w1")
    assert "kubelet restarted" in w1[0] and "not drained" in w1[0]
    assert w1[1:] == ["replace /etc/kubernetes/kubelet.conf"]
    assert out.rstrip().endswith("dry run: nothing was changed")


def test_dry_run_of_one_certificate_on_one_host_touches_only_that_host_and_its_reader(make_cluster):
    path = _generated(make_cluster, hosts=hosts(3, 1))
    rc, out, err = run_cli("certs", "renew", "apiserver", "--host", "cp2", "--dry-run", "-c", path)
    assert rc == 0, out + err
    assert _lines(out, "cp1") == [] and _lines(out, "w1") == []
    cp2 = _lines(out, "cp2")
    assert "kube-apiserver restarted (files they read changed)" in cp2[0] and "kubelet" not in cp2[0]
    assert cp2[1:] == ["replace /etc/kubernetes/pki/apiserver.crt"]  # the key is kept


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again once the socket is: nothing listens there


def test_a_host_that_does_not_answer_stops_the_renew_before_anything_changes(make_cluster, tmp_path):
    port = _closed_port()
    unreachable = [{**h, "address": f"127.0.0.{i}", "ssh": {"port": port}} for i, h in enumerate(hosts(1, 1), 1)]
    path = _generated(make_cluster, hosts=unreachable)
    before = snapshot(cluster_dir_of(path))
    rc, out, err = run_cli("certs", "renew", "all", "-c", path, "--known-hosts", str(tmp_path / "known_hosts"))
    assert rc != 0
    assert "cp1" in err and "Traceback" not in err, err
    assert snapshot(cluster_dir_of(path)) == before  # nothing renewed, no journal


def test_another_renew_is_refused_while_one_is_unfinished(make_cluster):
    path = _generated(make_cluster, hosts=hosts(1, 1))
    cluster_dir = cluster_dir_of(path)
    journal = HostJournal.open(cluster_dir / JOURNAL, journal_key(["admin.conf"]))
    journal.mark("cluster-directory", "done")
    journal.mark("cp1", "started", readers=["kube-apiserver"])
    before = snapshot(cluster_dir)
    rc, out, err = run_cli("certs", "renew", "apiserver", "-c", path)
    assert rc == 1
    assert "`kubeprov certs renew admin.conf` did not finish" in err and "run it again to finish it first" in err, err
    assert snapshot(cluster_dir) == before
