"""`kubeprov reset` and `kubeprov node remove`: what they plan and what they refuse (the last
control plane, the first stacked control plane, external etcd members, etcd's quorum), the CLI's
one-line errors, and the host-side teardown script run for real in namespaces of its own (a
network, mount and PID namespace: real bridges, veths, iptables chains and tmpfs mounts, nothing of
this machine touched). tests/e2e/test_day2_reset_e2e.py runs them against a real cluster."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from testkit import KUBEPROV, hosts, run_cli

from provision.config import load_cluster
from provision.day2.node import plan_remove
from provision.day2.reset import Refused, majority, plan_reset, quorum_problem
from provision.errors import ConfigError
from provision.phases.facts import JOINED_MARKER
from provision.render.cni.bridge import ROUTES_PROTO
from provision.transport import remote

EXTERNAL = {"hosts": hosts(1, 1) + [{"name": f"e{i}", "address": f"192.0.2.{50 + i}", "roles": ["etcd"]} for i in (1, 2, 3)],
            "etcd": {"topology": "external"}}


@pytest.fixture
def one_cp(make_cluster):
    return load_cluster(make_cluster(hosts=hosts(1, 2)), None)


@pytest.fixture
def three_cp(make_cluster):
    return load_cluster(make_cluster(hosts=hosts(3, 1), controlPlaneEndpoint="10.0.0.100:6443"), None)


# --- etcd's quorum ---------------------------------------------------------------------------


def test_quorum_three_healthy_members_lose_one_or_two():
    assert quorum_problem(["cp1", "cp2", "cp3"], {"cp1", "cp2", "cp3"}, ["cp3"]) is None
    assert quorum_problem(["cp1", "cp2", "cp3"], {"cp1", "cp2", "cp3"}, ["cp2", "cp3"]) is None  # 3 → 2 → 1, each healthy


def test_quorum_refuses_removing_a_healthy_member_when_another_is_down():
    problem = quorum_problem(["cp1", "cp2", "cp3"], {"cp1", "cp2"}, ["cp2"])
    assert problem is not None
    assert "1 healthy of 2" in problem and "cp3" in problem and "a quorum needs 2" in problem


def test_quorum_allows_removing_the_member_that_is_down():
    assert quorum_problem(["cp1", "cp2", "cp3"], {"cp1", "cp2"}, ["cp3"]) is None


def test_quorum_refuses_when_etcd_has_no_quorum_already():
    problem = quorum_problem(["cp1", "cp2", "cp3"], {"cp1"}, ["cp3"])
    assert problem == "etcd has 1 healthy of 3 members (not healthy: cp2, cp3); removing cp3 needs 2 healthy"


def test_quorum_five_members_two_down():
    members = ["a", "b", "c", "d", "e"]
    assert quorum_problem(members, {"a", "b", "c"}, ["d", "e"]) is None  # the down ones go first: 5 → 4 → 3, all healthy
    assert quorum_problem(members, {"a", "b", "c"}, ["c"]) is not None  # 2 healthy of 4


def test_quorum_never_removes_every_member():
    assert quorum_problem(["cp1"], {"cp1"}, ["cp1"]) == "no etcd member would remain"


def test_quorum_ignores_hosts_that_are_no_members():
    assert quorum_problem(["cp1", "cp2"], {"cp1", "cp2"}, ["w1"]) is None


@given(st.integers(1, 7), st.data())
def test_quorum_accepts_exactly_what_keeps_a_healthy_majority_at_every_step(size, data):
    members = [f"m{i}" for i in range(size)]
    healthy = set(data.draw(st.lists(st.sampled_from(members), unique=True)))
    removing = data.draw(st.lists(st.sampled_from(members), unique=True))
    problem = quorum_problem(members, healthy, removing)
    left = [m for m in members if m not in removing]
    # Independent check: removing the unhealthy first is the best order; every step and the end need a majority.
    current, ok = list(members), bool(left)
    for m in sorted(removing, key=lambda m: m in healthy):
        ok = ok and sum(x in healthy for x in current) >= majority(len(current))
        current.remove(m)
    ok = ok and sum(x in healthy for x in left) >= majority(len(left))
    assert (problem is None) == ok, (members, healthy, removing, problem)


# --- what reset plans and refuses -------------------------------------------------------------


def test_reset_a_worker(one_cp):
    plan = plan_reset(one_cp, ["w1"])
    assert [h.name for h in plan.hosts] == ["w1"] and not plan.whole and plan.leave_etcd == ()
    w1 = plan.hosts[0]
    paths = plan.paths(w1)
    assert {"/etc/kubernetes", "/var/lib/kubelet", "/etc/cni/net.d/", "/var/lib/cni", JOINED_MARKER} <= set(paths)
    assert "/var/lib/etcd" not in paths
    assert plan.units(w1) == ["kubelet", "kubeprov-pod-routes.service"]


def test_reset_refuses_the_last_control_plane_naming_who_would_be_left(one_cp):
    with pytest.raises(Refused) as refused:
        plan_reset(one_cp, ["cp1"])
    assert "cp1 is the last control plane" in str(refused.value) and "w1, w2" in str(refused.value)
    with pytest.raises(Refused):
        plan_reset(one_cp, ["cp1", "w1"])


def test_reset_of_every_host_is_the_whole_cluster(one_cp):
    for names in (None, [], ["cp1", "w1", "w2"]):
        plan = plan_reset(one_cp, names)
        assert plan.whole and plan.leave_etcd == () and len(plan.hosts) == 3
    assert "/var/lib/etcd" in plan.paths(plan.hosts[0])  # the stacked member's data goes with it


def test_reset_of_a_joined_stacked_control_plane_leaves_etcd_first(three_cp):
    plan = plan_reset(three_cp, ["cp2", "w1"])
    assert [h.name for h in plan.leave_etcd] == ["cp2"]
    cp2 = plan.hosts[0]
    assert plan.wipes_etcd(cp2) and "/var/lib/etcd" in plan.paths(cp2)
    assert not plan.wipes_etcd(plan.hosts[1])


def test_reset_refuses_the_first_stacked_control_plane_while_others_stay(three_cp):
    with pytest.raises(Refused) as refused:
        plan_reset(three_cp, ["cp1"])
    text = str(refused.value)
    assert "cp1 is the first control plane" in text and "new one-member etcd" in text and "node remove cp1" in text
    assert [h.name for h in plan_reset(three_cp, ["cp1"], leaving=True).leave_etcd] == ["cp1"]


def test_reset_refuses_every_control_plane_while_a_worker_stays(three_cp):
    with pytest.raises(Refused, match="cp1, cp2, cp3 are all the control planes: w1 would be left without an API server"):
        plan_reset(three_cp, ["cp1", "cp2", "cp3"])


def test_reset_refuses_an_external_etcd_member_unless_every_host_goes(make_cluster):
    cluster = load_cluster(make_cluster(**EXTERNAL), None)
    with pytest.raises(Refused, match="e2: a member of the external etcd cluster"):
        plan_reset(cluster, ["e2"])
    # Every node, the external etcd staying: allowed (it keeps the data; the next `up` builds the control plane on it).
    assert plan_reset(cluster, ["cp1", "w1"]).leave_etcd == ()
    with pytest.raises(Refused, match="cp1 is the last control plane: w1 would be left"):
        plan_reset(cluster, ["cp1"])
    whole = plan_reset(cluster, None)
    e1 = next(h for h in whole.hosts if h.name == "e1")
    assert whole.units(e1) == ["etcd"] and whole.paths(e1) == ["/var/lib/etcd", JOINED_MARKER]
    assert "/var/lib/etcd" not in whole.paths(whole.hosts[0])  # the control plane holds no etcd data


def test_reset_of_an_unknown_host_names_it(one_cp):
    with pytest.raises(ConfigError, match="no host named nope in cluster test"):
        plan_reset(one_cp, ["w1", "nope"])


# --- what node remove plans and refuses --------------------------------------------------------


def test_node_remove_refuses_the_last_control_plane(one_cp):
    with pytest.raises(Refused, match="cp1 is the last control plane: without it the cluster has no API server and no etcd"):
        plan_remove(one_cp, "cp1")


def test_node_remove_of_a_worker_and_of_a_stacked_control_plane(one_cp, three_cp):
    worker = plan_remove(one_cp, "w2")
    assert worker.host.name == "w2" and not worker.leaves_etcd and [h.name for h in worker.api_hosts] == ["cp1"]
    first = plan_remove(three_cp, "cp1")  # leaving for good: the first control plane may go
    assert first.leaves_etcd and [h.name for h in first.api_hosts] == ["cp2", "cp3"]
    reset = first.reset_plan()
    assert reset.wipes_etcd(first.host) and reset.leave_etcd == ()  # its member is removed by node remove itself


def test_node_remove_refuses_an_external_etcd_member(make_cluster):
    cluster = load_cluster(make_cluster(**EXTERNAL), None)
    with pytest.raises(Refused, match="e1 is a member of the external etcd cluster"):
        plan_remove(cluster, "e1")


# --- the CLI: one line per error, never a traceback ------------------------------------------


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_cli_reset_unknown_host(make_cluster):
    code, out, err = run_cli("reset", "-c", make_cluster(hosts=hosts(1, 2)), "--host", "nope", "--yes")
    assert code == 2 and out == ""
    assert "no host named nope in cluster test (its hosts: cp1, w1, w2)" in _one_error_line(err)


def test_cli_reset_refuses_the_last_control_plane(make_cluster):
    code, out, err = run_cli("reset", "-c", make_cluster(hosts=hosts(1, 2)), "--host", "cp1", "--yes")
    assert code == 1 and out == ""
    assert "cp1 is the last control plane: w1, w2 would be left without an API server" in _one_error_line(err)


def test_cli_reset_will_not_act_without_yes_when_nobody_can_be_asked(make_cluster):
    """stdin is not a terminal: it refuses before reaching any host (these addresses are never contacted)."""
    config = make_cluster(hosts=hosts(1, 2))
    for args in (["--host", "w1"], []):
        proc = subprocess.run([str(KUBEPROV), "reset", "-c", str(config), *args],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 2 and proc.stdout == ""
        assert "not without --yes (stdin is not a terminal to ask on)" in _one_error_line(proc.stderr)


def test_cli_node_remove_refusals(make_cluster):
    code, out, err = run_cli("node", "remove", "cp1", "-c", make_cluster(hosts=hosts(1, 2)), "--yes")
    assert code == 1 and out == "" and "cp1 is the last control plane" in _one_error_line(err)
    code, out, err = run_cli("node", "remove", "w9", "-c", make_cluster(hosts=hosts(1, 2)), "--yes")
    assert code == 2 and out == "" and "no host named w9" in _one_error_line(err)


def test_cli_help_teaches_the_refusals():
    code, out, _ = run_cli("reset", "--help")
    assert code == 0 and "node remove" in out and "last control plane" in out
    code, out, _ = run_cli("node", "remove", "--help")
    assert code == 0 and "PodDisruptionBudgets" in out and "cluster file" in out


# --- the teardown script, for real, in namespaces of its own ----------------------------------


def _namespaces_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network, mount and PID namespaces)"
    missing = [t for t in ("unshare", "ip", "iptables-nft", "mount") if shutil.which(t) is None]
    return f"missing {', '.join(missing)}" if missing else None


SETUP = r"""
set -e
ip link set lo up
ip link add cni0 type bridge && ip link set cni0 up
ip link add veth1234abcd type veth peer name podside && ip link set veth1234abcd master cni0
ip link add eth0 type veth peer name uplink0
ip addr add 10.213.0.5/24 dev eth0 && ip link set eth0 up && ip link set uplink0 up
ip route add 10.244.1.0/24 via 10.213.0.6 proto 77
ip route add 10.99.0.0/24 via 10.213.0.6 proto static
ip link add keepme type bridge
ip link add flannel.1 type vxlan id 1 dstport 8472
iptables-nft -t nat -N KUBE-SERVICES && iptables-nft -t nat -A PREROUTING -j KUBE-SERVICES
iptables-nft -t nat -N KUBE-SVC-X && iptables-nft -t nat -A KUBE-SERVICES -j KUBE-SVC-X
iptables-nft -t filter -N KUBE-FIREWALL && iptables-nft -A INPUT -j KUBE-FIREWALL && iptables-nft -A INPUT -p tcp --dport 22 -j ACCEPT
iptables-nft -t nat -N CNI-KEEP && iptables-nft -t nat -A POSTROUTING -j CNI-KEEP
mkdir -p "$1/kubelet/pods/p1/volumes/token" "$1/kubelet/pods/p1/volumes/other" "$1/etc/manifests" "$1/data" "$1/cni"
echo '{}' > "$1/cni/10-bridge.conflist"
mount -t tmpfs tmpfs "$1/kubelet/pods/p1/volumes/token"
mount -t tmpfs tmpfs "$1/kubelet/pods/p1/volumes/other"
mount -t tmpfs tmpfs "$1/data"
echo x > "$1/data/member"
echo apiVersion: v1 > "$1/etc/manifests/kube-apiserver.yaml"
echo joined > "$1/joined"
"""

REPORT = r"""
echo "links: $(ip -o link show | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' | sort | tr '\n' ' ')"
echo "routes: $(ip -4 -o route show | cut -d' ' -f1 | sort | tr '\n' ' ')"
echo "chains: $(iptables-nft-save | grep '^:' | cut -d' ' -f1 | sort | tr '\n' ' ')"
echo "rules: $(iptables-nft-save | grep -c '^-A')"
echo "mounts: $(awk -v d="$1/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sed "s|$1/||" | sort | tr '\n' ' ')"
echo "files: $(cd "$1" && find . -mindepth 1 | sort | tr '\n' ' ')"
"""


def _in_namespaces(root: Path, command: str, bindir: Path) -> subprocess.CompletedProcess:
    """SETUP, then `command` (a whole shell command line), then REPORT, in fresh network, mount
    and PID namespaces (nothing of this machine is touched), with PATH = bindir and $1 = root."""
    body = SETUP + "\nset +e\n" + command + ' || echo "exit $?"\n' + REPORT
    return subprocess.run([shutil.which("unshare"), "--net", "--mount", "--pid", "--fork", "--mount-proc",
                           shutil.which("sh"), "-c", body, "sh", str(root)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PATH": str(bindir)}, check=False)


def _field(out: str, name: str) -> list[str]:
    return out.split(f"{name}: ", 1)[1].split("\n", 1)[0].split()


@pytest.mark.integration
@pytest.mark.skipif(_namespaces_reason() is not None, reason=str(_namespaces_reason()))
def test_the_teardown_script_for_real_in_namespaces_of_its_own(tmp_path):
    # A PATH without crictl (this machine's CRI is not the test's) and without systemctl (no unit is given).
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("ip", "iptables-nft", "iptables-nft-save", "iptables-nft-restore", "mount", "umount", "mountpoint", "awk",
                 "sort", "find", "rm", "ls", "grep", "cut", "tr", "sed", "head", "pgrep", "mkdir", "sh"):
        found = shutil.which(tool)
        assert found, f"{tool} is missing"
        (bindir / tool).symlink_to(found)
    root = tmp_path / "host"
    root.mkdir()
    args = {"manifests": f"{root}/etc/manifests", "kubelet_dir": f"{root}/kubelet", "units": [],
            "paths": [f"{root}/etc", f"{root}/kubelet", f"{root}/data", f"{root}/cni/", f"{root}/joined", f"{root}/absent"]}

    planned = _in_namespaces(root, remote.reset_host(False, **args), bindir)
    assert planned.returncode == 0, planned.stderr
    said, report = planned.stdout.split("links: ", 1)
    assert "exit " not in said, planned.stdout + planned.stderr
    assert "remove static pod manifests: kube-apiserver.yaml" in said
    assert "no crictl or ctr on this host" in said
    assert f"unmount 2 mounts under {root}/kubelet" in said
    assert f"remove {root}/etc\n" in said and f"remove {root}/kubelet\n" in said and f"remove {root}/joined\n" in said
    assert f"empty {root}/data (a mount point: the mount stays)" in said and "absent" not in said
    assert f"empty {root}/cni (the directory stays: a daemon watches it)" in said
    assert "delete interface veth1234abcd (a pod's veth on cni0)" in said and "delete interface cni0" in said
    assert "delete interface flannel.1" in said and "keepme" not in said and "eth0" not in said
    assert "flush and delete 3 KUBE-* chains and the 3 rules in or into them (iptables, nft)" in said
    assert f"delete the routes to other nodes' pod CIDRs (IPv4, proto {ROUTES_PROTO}: the bridge CNI's)" in said
    assert "10.244.1.0/24" in _field(report, "routes"), "plan mode changed something"
    assert ":KUBE-SERVICES" in report and "kube-apiserver.yaml" in report, "plan mode changed something"

    applied = _in_namespaces(root, remote.reset_host(True, **args), bindir)
    assert applied.returncode == 0, applied.stderr
    out = applied.stdout
    assert "exit " not in out.split("links: ")[0], out + applied.stderr
    assert sorted(_field(out, "links")) == ["eth0", "keepme", "lo", "uplink0"]  # a veth not on cni0 is no pod's: kept
    chains = _field(out, "chains")
    assert not [c for c in chains if c.startswith(":KUBE-")] and ":CNI-KEEP" in chains and ":INPUT" in chains, chains
    assert _field(out, "routes") == ["10.213.0.0/24", "10.99.0.0/24"]  # kubeprov's node route gone, another's kept
    assert _field(out, "rules") == ["2"]  # the ACCEPT on INPUT and the jump to CNI-KEEP stay
    assert _field(out, "mounts") == ["data"]  # the mount point itself stays, emptied
    # What stays: the mount point and the watched directory, emptied; the static pod directory, made again empty.
    assert _field(out, "files") == ["./cni", "./data", "./etc", "./etc/manifests"]
