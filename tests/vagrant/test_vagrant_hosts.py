"""The integration checks of the nspawn lab and the transport, run against real Vagrant VMs.

Only with `-m vagrant` (scripts/vagrant-test): the VMs boot under software emulation here.
Expectations come from the inventory (names, addresses), from ssh-keygen and from the VMs' own
files, never from the code under test.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from provision.config.loader import load_cluster
from provision.config.models import Host
from provision.lab.access import ssh_args
from provision.transport import Options, Transport, UnreachableError, fan_out
from vagrant_layout import layout

pytestmark = pytest.mark.vagrant

KUBEPROV = Path(sys.executable).parent / "kubeprov"


@pytest.fixture(scope="module")
def cluster(lab):
    return load_cluster(lab.cluster_file)


@pytest.fixture
def transport(lab):
    with Transport(Options(known_hosts=lab.known_hosts, connect_timeout=10)) as t:
        yield t


def test_lab_networks_live_only_in_the_lab_namespace(lab):
    """scripts/vagrant-test's libvirtd, bridges, firewall rules and VMs are in its namespace; the
    machine's own namespace has none of them, only the leg and routes over it."""
    ns = layout()["namespace"]
    if os.environ.get("KUBEPROV_VAGRANT_NETNS") != ns["name"]:
        pytest.skip("VMs of a libvirtd outside the lab's namespace (not scripts/vagrant-test)")

    def out(*args: str) -> str:
        return subprocess.run(args, capture_output=True, text=True, check=True).stdout

    def bridges(*netns: str) -> dict[str, list[str]]:
        links = json.loads(out("ip", *netns, "-j", "-4", "addr", "show"))
        kinds = {l["ifname"]: l.get("linkinfo", {}).get("info_kind") for l in json.loads(out("ip", *netns, "-j", "-d", "link", "show"))}
        return {l["ifname"]: [a["local"] for a in l.get("addr_info", [])] for l in links
                if kinds.get(l["ifname"]) == "bridge" or l["ifname"].startswith("virbr")}

    # The machine: no libvirt bridge, no libvirt chain; each VM is routed over the leg.
    assert not [name for name in bridges() if name.startswith("virbr")]
    for table in ("filter", "nat", "mangle"):
        assert "LIBVIRT_" not in out("iptables", "-t", table, "-S")
    leg_there = str(ipaddress.ip_network(ns["legSubnet"])[2])
    for host in lab.hosts:
        route = out("ip", "-4", "-o", "route", "get", host.address).split()
        assert route[route.index("dev") + 1] == ns["leg"] and route[route.index("via") + 1] == leg_there

    # The lab's namespace: both networks' bridges with libvirt's addresses, libvirt's chains, and the
    # daemons and VMs themselves.
    inside = bridges("-n", ns["name"])
    gateways = {str(ipaddress.ip_network(layout()[key])[1]) for key in ("subnet", "managementSubnet")}
    assert gateways <= {a for addrs in inside.values() for a in addrs}, inside
    assert "LIBVIRT_FWI" in out("ip", "netns", "exec", ns["name"], "iptables", "-S")
    commands = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in out("ip", "netns", "pids", ns["name"]).split()}
    assert {"libvirtd", "virtlogd", "dnsmasq", "qemu-system-x86"} <= commands
    assert sum(1 for pid in out("ip", "netns", "pids", ns["name"]).split()
               if Path(f"/proc/{pid}/comm").read_text().strip() == "qemu-system-x86") == len(lab.hosts)


def test_each_vm_is_a_distinct_booted_machine(lab):
    seen_ids = set()
    for host in lab.hosts:
        out = lab.ssh(host, f"hostname; cat /etc/machine-id; ip -4 -o addr show to {host.address}; "
                            "cat /proc/1/comm; systemctl is-system-running; systemctl --failed --no-legend").stdout
        hostname, machine_id, addr_line, pid1, state, *failed = out.splitlines()
        assert hostname == host.name
        assert re.fullmatch(r"[0-9a-f]{32}", machine_id)
        # The fixed address sits on the private network's interface, with the layout's prefix.
        assert re.search(rf"inet {re.escape(host.address)}/(\d+)", addr_line).group(1) == \
            str(ipaddress.ip_network(layout()["subnet"]).prefixlen)
        assert pid1 == "systemd"
        assert state == "running", f"{host.name}: {state}; failed units: {failed}"
        seen_ids.add(machine_id)
    assert len(seen_ids) == len(lab.hosts)


def test_vms_reach_each_other_by_name_on_the_private_network(lab):
    first = lab.hosts[0]
    for other in lab.hosts:
        out = lab.ssh(first, f"getent hosts {other.name} && ping -c1 -W5 {other.name} >/dev/null && echo ok").stdout.split()
        assert out == [other.address, other.name, "ok"]


def test_host_keys_are_the_ones_made_for_each_vm_and_checked_strictly(lab, tmp_path):
    entries = [line.split() for line in lab.known_hosts.read_text().splitlines()]
    assert len({key for _, _, key in entries}) == len(entries) >= len(lab.hosts)
    # Each VM serves exactly the host key the Vagrantfile made for it, and no other type.
    for host in lab.hosts:
        served = subprocess.run(["ssh-keyscan", "-T", "10", host.address], capture_output=True, text=True, timeout=60).stdout
        offered = [line.split()[1:] for line in served.splitlines() if not line.startswith("#")]
        made = (lab.state_dir / "hosts" / host.name / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        assert offered == [made]

    # The first VM presented with another key than the one recorded for it: ssh must refuse, loudly.
    first = lab.hosts[0]
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{first.name},{first.address} {' '.join(Path(f'{other}.pub').read_text().split()[:2])}\n")
    proc = subprocess.run(ssh_args(first.address, lab.key, wrong) + ["true"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in proc.stderr
    empty = tmp_path / "empty"
    empty.write_text("")
    proc = subprocess.run(ssh_args(first.address, lab.key, empty) + ["true"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "Host key verification failed" in proc.stderr


def test_transport_fans_out_and_reports_each_host(lab, cluster, transport):
    outcomes = fan_out(cluster.hosts, lambda h: transport.run(h, "hostname"))
    assert [(o.host, o.value.stdout.strip()) for o in outcomes] == [(h.name, h.name) for h in lab.hosts]
    # One host fails; its exit code and stderr are reported while the others succeed.
    failing = cluster.hosts[-1].name
    outcomes = fan_out(cluster.hosts, lambda h: transport.run(h, f"[ $(hostname) != {failing} ] || {{ echo broken >&2; exit 3; }}"))
    for outcome in outcomes:
        assert outcome.ok, outcome.error_text
        if outcome.host == failing:
            assert (outcome.value.exit_code, outcome.value.stderr.strip()) == (3, "broken")
        else:
            assert outcome.value.exit_code == 0


def test_put_if_different_writes_once(lab, cluster, transport):
    host = cluster.hosts[0]
    path = "/root/kubeprov-vagrant-test/put.txt"
    lab.ssh(host.name, "rm -rf /root/kubeprov-vagrant-test")
    assert transport.put_if_different(host, path, b"first\n", 0o600) is True
    before = lab.ssh(host.name, f"stat -c '%Y.%y %i %a %U' {path}; cat {path}").stdout
    assert before.split()[-3:] == ["600", "root", "first"]
    assert transport.put_if_different(host, path, b"first\n", 0o600) is False
    assert lab.ssh(host.name, f"stat -c '%Y.%y %i %a %U' {path}; cat {path}").stdout == before
    assert transport.put_if_different(host, path, b"second\n", 0o600) is True
    assert lab.ssh(host.name, f"cat {path}").stdout == "second\n"
    lab.ssh(host.name, "rm -rf /root/kubeprov-vagrant-test")


def test_a_vm_that_does_not_answer_is_named_in_a_timeout(lab, transport):
    # An address on the lab's own private network that no VM holds.
    subnet = ipaddress.ip_network(layout()["subnet"])
    taken = {h.address for h in lab.hosts}
    free = next(str(a) for a in reversed(list(subnet.hosts())) if str(a) not in taken)
    ghost = Host(name="ghost", address=free, ssh={"user": "root", "key": lab.key}, roles=["worker"])
    with Transport(Options(known_hosts=lab.known_hosts, connect_timeout=3)) as short:
        with pytest.raises(UnreachableError) as caught:
            short.run(ghost, "true")
    assert "ghost" in str(caught.value)


def test_kubeprov_exec_over_the_inventory(lab):
    proc = subprocess.run([str(KUBEPROV), "exec", "-c", str(lab.cluster_file), "--known-hosts", str(lab.known_hosts),
                           "--", "cat", "/etc/hostname"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for host in lab.hosts:
        assert re.search(rf"^\W*{re.escape(host.name)}\b.*\b{re.escape(host.name)}\b", proc.stdout, re.M), proc.stdout
