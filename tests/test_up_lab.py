"""`kubeprov up` on a real 3-host lab (systemd-nspawn hosts over SSH), without Kubernetes binaries.

External etcd on all three hosts (cp + 2 workers). What must hold:
- `up --dry-run` prints the plan per phase and host and changes nothing, on the hosts or locally;
- `up` runs every phase that needs no API server for real — certs, kubeconfigs, preflight, render,
  sync, external etcd (installed by its role, healthy on all 3 members: checked here with etcdctl
  over TLS, independently of kubeprov), the node roles — and, with no bundle, stops where the
  default `packages` source needs pkgs.k8s.io, which lab hosts cannot reach, saying so;
- the journal makes the next run resume: the finished phases are not run again.

Its own lab (not the session `lab` fixture): it installs etcd and containerd on the hosts, which
other lab tests must not inherit.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from provision.lab.testing import running_lab
from testkit import run_cli

pytestmark = [pytest.mark.lab, pytest.mark.integration]

# The cluster file names no artifact source: `packages`, whose Kubernetes repository is pkgs.k8s.io.
NO_PACKAGE_REPO = "cannot fetch the Kubernetes apt key https://pkgs.k8s.io/core:/stable:/v1."
FINISHED_BEFORE_API = ["certs", "kubeconfigs", "preflight", "render", "sync", "etcd", "etcd/install", "etcd/health"]
# Metadata (path, size, mode, mtime) of everything kubeprov could touch; apt/dpkg state included.
HOST_STATE = ("find /etc /usr /opt /var/lib /var/backups -xdev -path /var/lib/systemd -prune -o "
              "-printf '%p %s %m %T@\\n' 2>/dev/null | sort | sha256sum")


@pytest.fixture(scope="module")
def up_lab():
    """A lab of its own: these tests change the hosts more than the shared `lab` may be changed."""
    with running_lab("u") as own:
        yield own


@pytest.fixture(scope="module")
def cluster_file(up_lab, tmp_path_factory):
    doc = yaml.safe_load(up_lab.cluster_file.read_text())
    for host in doc["hosts"]:
        host["roles"] = [*host["roles"], "etcd"]
        host["ssh"]["knownHosts"] = str(up_lab.known_hosts)
    doc["etcd"] = {"topology": "external"}
    doc["cni"] = "bridge"  # needs no image
    work = tmp_path_factory.mktemp("up")
    doc["clusterDir"] = str(work / "cluster")
    path = work / "cluster.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _statuses(out: str) -> dict[str, str]:
    """The summary table: PHASE STATUS SECONDS."""
    found = {}
    for line in out.split("PHASE")[-1].splitlines():
        parts = line.split()
        if len(parts) == 3 and re.fullmatch(r"[\d.]+", parts[2]):
            found[parts[0]] = parts[1]
    return found


def test_dry_run_prints_the_plan_and_changes_nothing(up_lab, cluster_file):
    before = {h.name: up_lab.ssh(h, HOST_STATE).stdout for h in up_lab.hosts}
    code, out, err = run_cli("up", "--dry-run", "--lab", "-c", cluster_file, timeout=300)
    assert code == 0, err
    for host in up_lab.hosts:
        assert re.search(rf"{host.name}\s+preflight checks", out)
        assert re.search(rf"{host.name}\s+run roles etcd \(a first run", out)
    statuses = _statuses(out)
    assert {p for p, s in statuses.items() if s != "planned"} == {"control-plane-join"}  # one control plane
    assert statuses["control-plane-join"] == "not-needed"
    assert {h.name: up_lab.ssh(h, HOST_STATE).stdout for h in up_lab.hosts} == before
    assert not (cluster_file.parent / "cluster").exists()  # no PKI, journal or render either


def test_up_runs_until_the_kubelet_is_needed_and_resumes(up_lab, cluster_file):
    cluster_dir = cluster_file.parent / "cluster"
    code, out, err = run_cli("up", "--lab", "-c", cluster_file, timeout=1200)
    assert code != 0
    assert NO_PACKAGE_REPO in err and "artifacts.packageRepo must be reachable from every host" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2
    statuses = _statuses(out)
    assert [p for p in FINISHED_BEFORE_API if statuses.get(p) != "done"] == [], out[-3000:]
    assert statuses["prepare"] == "failed"

    # etcd is really up on all three members: etcdctl over TLS with the cluster's own CA.
    first = up_lab.hosts[0]
    endpoints = ",".join(f"https://{h.address}:2379" for h in up_lab.hosts)
    tls = "--cacert=/etc/kubernetes/pki/etcd/ca.crt --cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt " \
          "--key=/etc/kubernetes/pki/etcd/healthcheck-client.key"
    health = json.loads(up_lab.ssh(first, f"ETCDCTL_API=3 etcdctl --endpoints={endpoints} {tls} endpoint health -w json").stdout)
    assert sorted(e["endpoint"] for e in health if e["health"]) == sorted(endpoints.split(","))
    up_lab.ssh(first, f"ETCDCTL_API=3 etcdctl --endpoints={endpoints} {tls} put kubeprov-test up")
    got = up_lab.ssh(up_lab.hosts[2], f"ETCDCTL_API=3 etcdctl --endpoints=https://{up_lab.hosts[2].address}:2379 {tls} get kubeprov-test --print-value-only")
    assert got.stdout.strip() == "up"
    # sync placed the control plane's files; the node roles ran up to the kubelet.
    ca = (cluster_dir / "pki" / "ca.crt").read_bytes()
    assert up_lab.ssh(first, "cat /etc/kubernetes/pki/ca.crt").stdout.encode() == ca
    assert up_lab.ssh(first, "test -f /etc/kubernetes/manifests/kube-apiserver.yaml && systemctl is-active containerd").stdout.strip() == "active"

    journal = json.loads((cluster_dir / "journal.json").read_text())
    assert list(journal["completed"]) == FINISHED_BEFORE_API
    assert list(journal["failed"]) == ["prepare"] and not journal["finished"]

    # The next run resumes: what finished is not run again; prepare runs (and stops) again.
    code, out, err = run_cli("up", "--lab", "-c", cluster_file, timeout=1200)
    assert code != 0 and NO_PACKAGE_REPO in err
    statuses = _statuses(out)
    assert {p: statuses[p] for p in FINISHED_BEFORE_API} == {p: "resumed" for p in FINISHED_BEFORE_API}
    assert statuses["prepare"] == "failed"
    assert "resumed an interrupted run" in out
    assert "▶ certs" not in out and "▶ sync" not in out

    # With the PKI in place, a dry run diffs against the hosts (read-only) and still changes nothing.
    before = {h.name: up_lab.ssh(h, HOST_STATE).stdout for h in up_lab.hosts}
    code, out, err = run_cli("up", "--dry-run", "--lab", "-c", cluster_file, timeout=300)
    assert code == 0, err
    for host in up_lab.hosts:
        assert re.search(rf"{host.name}\s+\d+ files: unchanged", out), out
    assert {h.name: up_lab.ssh(h, HOST_STATE).stdout for h in up_lab.hosts} == before


def _file_states(lab, host, paths: list[str]) -> dict[str, str]:
    """sha256 and mode of each path on the host, read by this test (not by kubeprov)."""
    listing = lab.ssh(host, "for p in " + " ".join(paths) + "; do if [ -f $p ]; then "
                            "echo $p $(sha256sum < $p | cut -c1-64) $(stat -c %a $p); else echo $p -; fi; done").stdout
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in listing.splitlines()}


def test_dry_run_names_exactly_what_the_following_up_changes(up_lab, cluster_file):
    """On the half-built lab the tests above leave: files edited, removed and chmod-ed by hand and
    one etcd member stopped. `up --dry-run` must name exactly those files and that member, and the
    following `up` must change exactly them (read on the hosts, before and after, by this test)."""
    cluster_dir = cluster_file.parent / "cluster"
    first, second, third = up_lab.hosts
    rendered = {h.name: sorted("/" + str(p.relative_to(cluster_dir / "rendered" / h.name))
                               for p in (cluster_dir / "rendered" / h.name).rglob("*") if p.is_file()) for h in up_lab.hosts}
    up_lab.ssh(first, "echo '# edited by hand' >> /etc/kubernetes/manifests/kube-scheduler.yaml")
    up_lab.ssh(second, "rm /etc/kubernetes/pki/etcd/peer.crt")
    up_lab.ssh(third, "chmod 0640 /etc/kubernetes/pki/ca.crt && systemctl stop etcd")

    code, out, err = run_cli("up", "--dry-run", "--lab", "-c", cluster_file, timeout=300)
    assert code == 0, err
    planned = set(re.findall(r"^\s+(\S+)\s+(create|replace|chmod/chown) (/\S+)$", out, re.M))
    assert planned == {(first.name, "replace", "/etc/kubernetes/manifests/kube-scheduler.yaml"),
                       (second.name, "create", "/etc/kubernetes/pki/etcd/peer.crt"),
                       (third.name, "chmod/chown", "/etc/kubernetes/pki/ca.crt")}, out
    # prepare never finished here, so no member has an applied-state record: the role runs on each.
    etcd_planned = set(re.findall(r"^\s+(\S+)\s+run roles etcd: ", out, re.M))
    assert etcd_planned == {h.name for h in up_lab.hosts}, out

    before = {h.name: _file_states(up_lab, h, rendered[h.name]) for h in up_lab.hosts}
    code, out, err = run_cli("up", "--fresh", "--lab", "-c", cluster_file, timeout=1200)
    assert code != 0 and NO_PACKAGE_REPO in err  # stops at prepare again, as above
    after = {h.name: _file_states(up_lab, h, rendered[h.name]) for h in up_lab.hosts}
    changed = {(h, p) for h in before for p in before[h] if before[h][p] != after[h][p]}
    assert changed == {(host, path) for host, _, path in planned}
    assert set(re.findall(r"^\s+(\S+)\s+\S+\s+etcd role: ", out, re.M)) == etcd_planned
    assert up_lab.ssh(third, "systemctl is-active etcd").stdout.strip() == "active"


def test_start_units_refuses_without_its_binary_leaves_running_units_and_starts_stopped_ones(up_lab):
    """start_kubelet's one round trip (transport/remote.py: start_units), on a lab host's systemd."""
    from provision.transport import remote

    host = up_lab.hosts[1]
    assert up_lab.ssh(host, remote.start_units("/usr/bin/no-such-binary", ["etcd"]), check=False).returncode == remote.NO_BINARY
    assert up_lab.ssh(host, remote.start_units("/bin/sh", ["etcd"]), check=False).returncode == remote.UNITS_RUNNING
    up_lab.ssh(host, "systemctl stop etcd")
    assert up_lab.ssh(host, remote.start_units("/bin/sh", ["etcd"]), check=False).returncode == 0
    assert up_lab.ssh(host, "systemctl is-active etcd").stdout.strip() == "active"


def test_preflight_through_the_transport_names_a_taken_port_and_its_process(up_lab, cluster_file):
    """up's preflight phase sends the preflight role's module over SSH (provision/preflight.py):
    the same verdicts as the role's, from one command per host."""
    from provision import preflight
    from provision.config import load_cluster
    from provision.transport import Options, Transport

    cluster = load_cluster(cluster_file, None)
    worker = cluster.hosts[1]
    up_lab.ssh(worker, "systemd-run --unit kubeprov-test-port python3 -m http.server 10250 && sleep 1")
    try:
        with Transport(Options(known_hosts=up_lab.known_hosts)) as transport:
            verdicts = {v.host: v for v in preflight.check(transport, cluster, cluster.hosts, swapoff=False, parallel=5)}
    finally:
        up_lab.ssh(worker, "systemctl stop kubeprov-test-port", check=False)
    assert [p for p in verdicts[worker.name].problems if "port 10250 is in use by python3" in p and "needed by kubelet" in p]
    # etcd holds 2379/2380 on every host by design (its own ports): no problem for the others.
    assert verdicts[cluster.hosts[0].name].problems == [] and verdicts[cluster.hosts[2].name].problems == []


def test_certs_check_expiration_on_hosts_marks_a_copy_that_differs_or_is_missing(up_lab, cluster_file):
    import datetime as dt

    code, out, err = run_cli("certs", "check-expiration", "-c", cluster_file, "--on-hosts", "-o", "json", timeout=300)
    assert code == 0, out + err
    held = json.loads(out)["onHosts"]
    assert {h["host"] for h in held} == {h.name for h in up_lab.hosts} and {h["state"] for h in held} == {"same"}

    first, second = up_lab.hosts[:2]
    up_lab.ssh(first, "cp /etc/kubernetes/pki/front-proxy-ca.crt /etc/kubernetes/pki/apiserver.crt")  # another valid certificate
    up_lab.ssh(second, "rm /etc/kubernetes/pki/etcd/peer.crt")
    code, out, err = run_cli("certs", "check-expiration", "-c", cluster_file, "--on-hosts", "-o", "json", timeout=300)
    assert code == 1, out + err
    rows = {(h["host"], h["path"]): h for h in json.loads(out)["onHosts"]}
    changed = {(first.name, "/etc/kubernetes/pki/apiserver.crt"): "differs", (second.name, "/etc/kubernetes/pki/etcd/peer.crt"): "missing"}
    assert {key: row["state"] for key, row in rows.items() if row["state"] != "same"} == changed
    # The differing copy's own expiry, as openssl on the host reads it.
    enddate = up_lab.ssh(first, "openssl x509 -enddate -noout -in /etc/kubernetes/pki/apiserver.crt").stdout.strip().split("=", 1)[1]
    expected = dt.datetime.strptime(enddate, "%b %d %H:%M:%S %Y %Z").strftime("%Y-%m-%dT%H:%M:%SZ")
    assert rows[(first.name, "/etc/kubernetes/pki/apiserver.crt")]["expires"] == expected
    assert f"/etc/kubernetes/pki/apiserver.crt on {first.name}: differs" in err
