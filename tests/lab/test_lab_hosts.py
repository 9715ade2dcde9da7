"""The shared 3-host lab behaves like three machines: reached over strict ssh, distinct, booted,
able to install packages from the lab's own repository, and fenced off from everything else."""

from __future__ import annotations

import gzip
import re
import subprocess

import pytest

from provision.config.inventory import load_inventory
from provision.config.loader import load_cluster
from provision.lab import rootfs
from provision.lab.access import ssh_args
from provision.lab.layout import Layout
from provision.lab.state import load

pytestmark = pytest.mark.lab


def test_each_host_is_a_distinct_booted_machine(lab):
    seen_ids, seen_addresses = set(), set()
    for host in lab.hosts:
        out = lab.ssh(host, "hostname; cat /etc/machine-id; ip -4 -o addr show dev eth0; "
                           "cat /proc/1/comm; systemctl is-system-running; systemctl --failed --no-legend").stdout
        hostname, machine_id, addr_line, pid1, state, *failed = out.splitlines()
        assert hostname == host.name
        assert re.fullmatch(r"[0-9a-f]{32}", machine_id)
        address = re.search(r"inet (\S+)/24", addr_line).group(1)
        assert address == host.address
        assert pid1 == "systemd"
        assert state == "running", f"{host.name}: {state}; failed units: {failed}"
        seen_ids.add(machine_id)
        seen_addresses.add(address)
    assert len(seen_ids) == len(seen_addresses) == len(lab.hosts) == 3


def test_host_keys_are_distinct_and_checked_strictly(lab, tmp_path):
    entries = [line.split() for line in lab.known_hosts.read_text().splitlines()]
    assert len({key for _, _, key in entries}) == len(lab.hosts)
    assert oct(lab.key.stat().st_mode & 0o777) == "0o600"
    first, second = lab.hosts[0], lab.hosts[1]

    # The first host presented with the second one's key: ssh must refuse, loudly.
    wrong = tmp_path / "known_hosts"
    second_key = next(f"{kind} {blob}" for names, kind, blob in entries if names.startswith(second.name + ","))
    wrong.write_text(f"{first.name},{first.address} {second_key}\n")
    proc = subprocess.run(ssh_args(first.address, lab.key, wrong) + ["true"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in proc.stderr

    unknown = tmp_path / "empty_known_hosts"
    unknown.write_text("")
    proc = subprocess.run(ssh_args(first.address, lab.key, unknown) + ["true"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "Host key verification failed" in proc.stderr


def test_apt_installs_from_the_lab_repository_only(lab):
    host = lab.hosts[-1]
    sources = lab.ssh(host, "cat /etc/apt/sources.list; ls /etc/apt/sources.list.d").stdout
    assert [line for line in sources.splitlines() if line.startswith("deb")] == [f"deb [trusted=yes] {lab.repo_url} ./"]
    # The version the repository holds, read from its index (not from the host).
    index = gzip.decompress((rootfs.repo_dir() / "Packages.gz").read_bytes()).decode()
    expected = re.search(r"^Package: etcd-client\n(?:.+\n)*?Version: (\S+)", index, re.M).group(1)
    lab.ssh(host, "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-client", timeout=300)
    installed = lab.ssh(host, "dpkg-query -W -f='${Version}' etcd-client").stdout
    assert installed == expected
    assert "3.4" in lab.ssh(host, "etcdctl version").stdout
    policy = lab.ssh(host, "apt-cache policy etcd-client").stdout
    assert f"{lab.repo_url.rstrip('/')} ./ Packages" in policy


def test_hosts_have_what_a_kubelet_needs(lab):
    host = lab.hosts[0]
    script = ("test -c /dev/kmsg && echo kmsg; "
              "for d in /sys/fs/cgroup/*/; do findmnt -no OPTIONS \"$d\" | cut -d, -f1; done | sort -u; "
              "for d in /var/lib/containerd /var/lib/kubelet /var/lib/etcd; do findmnt -no FSTYPE $d; done; "
              "systemd-analyze cat-config systemd/journald.conf | grep -x ReadKMsg=no")
    lines = lab.ssh(host, script).stdout.splitlines()
    assert lines[0] == "kmsg"
    assert lines[1] == "rw", "every cgroup controller must be writable for runc"
    data_fs = lines[2:5]  # real directories bound in: runc cannot mount on overlayfs
    assert len(data_fs) == 3 and "overlay" not in data_fs and "" not in data_fs, data_fs
    assert lines[5] == "ReadKMsg=no"
    hosts_file = lab.ssh(host, "cat /etc/hosts").stdout
    for other in lab.hosts:
        assert re.search(rf"^{re.escape(other.address)}\s+{re.escape(other.name)}$", hosts_file, re.M)
    resolv = lab.ssh(host, "grep ^nameserver /etc/resolv.conf").stdout.split()
    layout = load(lab.name).layout
    assert resolv == ["nameserver", layout.gateway]
    # Per-namespace sysctls set from outside (read-only inside).
    assert lab.ssh(host, "cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/all/route_localnet").stdout.split() == ["1", "1"]


def test_hosts_show_the_kubelets_kernel_tunables_and_the_machine_keeps_its_own(lab):
    """The kubelet exits unless these read as it wants; the machine's own values stay untouched."""
    keys = list(rootfs.KUBELET_KERNEL_TUNABLES)
    machine_before = [open(f"/proc/sys/{k}").read().strip() for k in keys]
    for host in lab.hosts:
        seen = lab.ssh(host, "cat " + " ".join(f"/proc/sys/{k}" for k in keys)).stdout.split()
        assert seen == list(rootfs.KUBELET_KERNEL_TUNABLES.values()), host.name
    assert [open(f"/proc/sys/{k}").read().strip() for k in keys] == machine_before


def _ns(netns: str, *args: str) -> str:
    return subprocess.run(["nsenter", f"--net=/run/netns/{netns}", *args], capture_output=True, text=True,
                          check=True).stdout


def test_nothing_escapes_the_lab(lab):
    """The hosts' default route ends in the lab's namespace, which forwards nothing and has no uplink."""
    layout: Layout = load(lab.name).layout
    assert _ns(layout.lan_netns, "cat", "/proc/sys/net/ipv4/ip_forward").strip() == "0"
    routes = _ns(layout.lan_netns, "ip", "-4", "route", "show").splitlines()
    assert [r.strip() for r in routes] == [f"{layout.subnet} dev br0 proto kernel scope link src {layout.gateway}"]
    default = lab.ssh(lab.hosts[0], "ip -4 route show default").stdout.split()
    assert default[:3] == ["default", "via", layout.gateway]
    with open(f"/proc/sys/net/ipv4/conf/{layout.root_leg}/forwarding") as handle:
        assert handle.read().strip() == "0"


def test_inventories_describe_the_hosts(lab):
    cluster = load_cluster(lab.cluster_file)
    assert [(h.name, h.address, h.ssh.user, h.ssh.key) for h in cluster.hosts] == \
        [(h.name, h.address, "root", lab.key) for h in lab.hosts]
    assert [h.name for h in cluster.control_planes] == [lab.hosts[0].name]
    assert [h.name for h in cluster.workers] == [h.name for h in lab.hosts[1:]]
    from_ini = {h["name"]: h for h in load_inventory(lab.ansible_inventory)}
    assert set(from_ini) == {h.name for h in lab.hosts}
    assert "control-plane" in from_ini[lab.hosts[0].name]["roles"]
    assert from_ini[lab.hosts[1].name]["roles"] == ["worker"]
    assert from_ini[lab.hosts[1].name]["address"] == lab.hosts[1].address
    assert f"UserKnownHostsFile={lab.known_hosts}" in lab.ansible_inventory.read_text()


RUNC_SCRIPT = r"""
set -e
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runc >/dev/null
B=/var/lib/containerd/test-bundle
rm -rf $B; mkdir -p $B/rootfs/bin $B/rootfs/proc $B/rootfs/dev $B/rootfs/sys
cp /bin/dash $B/rootfs/bin/sh
for lib in $(ldd /bin/dash | grep -o '/[^ ]*'); do mkdir -p $B/rootfs$(dirname $lib); cp $lib $B/rootfs$lib; done
cd $B && runc spec
python3 - <<'PY'
import json
spec = json.load(open("config.json"))
spec["process"]["terminal"] = False
spec["process"]["args"] = ["sh", "-c", "echo container says hi; read line < /proc/self/cgroup; echo $line"]
json.dump(spec, open("config.json", "w"))
PY
runc run kubeprov-lab-test
runc delete -f kubeprov-lab-test 2>/dev/null || true
rm -rf $B
"""


def test_runc_runs_a_container_in_a_host(lab):
    """The nspawn knobs for runc (capabilities, keyring syscalls, writable cgroups, a real
    /var/lib/containerd) together: a container from a minimal bundle runs and gets its cgroup."""
    host = lab.hosts[1]
    lab.ssh(host, "apt-get update -qq", timeout=300)
    out = lab.ssh(host, RUNC_SCRIPT, timeout=300).stdout.splitlines()
    assert out[0] == "container says hi"
    assert out[1].endswith("/kubeprov-lab-test")
