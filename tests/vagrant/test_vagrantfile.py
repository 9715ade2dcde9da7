"""The Vagrantfile and the inventories under inventories/vagrant/ agree, checked without VMs.

Real Vagrant (Debian's 2.3.4 + vagrant-libvirt) evaluates the Vagrantfile in a scratch copy;
the expected hosts come from tests/vagrant/vagrant_layout.py, which reads layout.yaml on its own.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from provision.config.inventory import load_inventory
from provision.config.loader import load_cluster
from vagrant_layout import INVENTORY_DIR, LAYOUT_FILE, VAGRANTFILE, hosts, layout

KUBEPROV = Path(sys.executable).parent / "kubeprov"


def default_hosts():
    defaults = layout()["defaults"]
    return hosts(defaults["hosts"], defaults["controlPlanes"])


# --- the committed inventories -----------------------------------------------------------------


def test_cluster_file_lists_the_default_layout():
    cluster = load_cluster(INVENTORY_DIR / "cluster.yaml")
    assert [(h.name, h.address, tuple(r.value for r in h.roles)) for h in cluster.hosts] == \
        [(h.name, h.address, h.roles) for h in default_hosts()]
    for host in cluster.hosts:
        assert host.ssh.user == "root"
        # Relative to the cluster file: the key the Vagrantfile makes in .vagrant/kubeprov/.
        assert host.ssh.key.resolve() == (VAGRANTFILE.parent / ".vagrant" / "kubeprov" / "id_ed25519").resolve()


def test_ansible_inventory_lists_the_same_hosts():
    from_ini = load_inventory(INVENTORY_DIR / "hosts.ini")
    # kubespray's [etcd] group holds the control planes (stacked etcd), so they also carry role etcd.
    stacked = [(h.name, h.address, h.roles + ("etcd",) if "control-plane" in h.roles else h.roles) for h in default_hosts()]
    assert [(h["name"], h["address"], tuple(h["roles"])) for h in from_ini] == stacked
    text = (INVENTORY_DIR / "hosts.ini").read_text()
    assert "UserKnownHostsFile=.vagrant/kubeprov/known_hosts" in text
    assert "StrictHostKeyChecking=yes" in text


def test_kubeprov_validates_both_inventories(tmp_path):
    cluster_file = INVENTORY_DIR / "cluster.yaml"
    proc = subprocess.run([str(KUBEPROV), "config", "validate", "-c", str(cluster_file)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "is valid" in proc.stdout
    # The same settings with the hosts taken from hosts.ini instead.
    settings = yaml.safe_load(cluster_file.read_text())
    del settings["hosts"]
    without_hosts = tmp_path / "cluster.yaml"
    without_hosts.write_text(yaml.safe_dump(settings))
    proc = subprocess.run([str(KUBEPROV), "config", "validate", "-c", str(without_hosts), "-i", str(INVENTORY_DIR / "hosts.ini")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for host in default_hosts():
        assert host.address in proc.stdout


# --- the Vagrantfile, evaluated by real Vagrant -----------------------------------------------


@pytest.fixture
def vagrant_dir(tmp_path):
    """A scratch copy of the Vagrantfile and its layout, so keys Vagrant makes stay out of the repo."""
    if shutil.which("vagrant") is None:
        if os.environ.get("CI"):
            pytest.fail("vagrant must be installed in CI (scripts/debian-packages.txt)")
        pytest.skip("vagrant is not installed (scripts/setup installs it)")
    work = tmp_path / "lab"
    (work / "inventories" / "vagrant").mkdir(parents=True)
    shutil.copy(VAGRANTFILE, work / "Vagrantfile")
    shutil.copy(LAYOUT_FILE, work / "inventories" / "vagrant" / "layout.yaml")
    return work


def vagrant(work: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KUBEPROV_VAGRANT_")}
    clean.update(VAGRANT_CWD=str(work), VAGRANT_HOME=str(work.parent / "vagrant.d"),
                 VAGRANT_CHECKPOINT_DISABLE="1", VAGRANT_DEFAULT_PROVIDER="libvirt", **env)
    return subprocess.run(["vagrant", *args], capture_output=True, text=True, env=clean, timeout=300)


def computed(work: Path, *args: str, **env: str) -> tuple[dict, subprocess.CompletedProcess]:
    out = work.parent / "layout.json"
    proc = vagrant(work, *args, KUBEPROV_VAGRANT_LAYOUT_OUT=str(out), **env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text()), proc


def as_tuples(listed) -> list[tuple]:
    return [(h["name"], h["address"], tuple(h["roles"])) for h in listed]


def test_vagrant_validate_passes_and_matches_the_inventory(vagrant_dir):
    seen, proc = computed(vagrant_dir, "validate")
    assert "validated successfully" in proc.stdout
    assert as_tuples(seen["hosts"]) == [(h.name, h.address, h.roles) for h in default_hosts()]
    assert (seen["cpus"], seen["memory"]) == (layout()["defaults"]["cpus"], layout()["defaults"]["memory"])
    assert seen["netmask"] == "255.255.255.0"  # layout.yaml's /24
    assert seen["managementSubnet"] == layout()["managementSubnet"]
    # Outside the lab's namespace libvirt's networks are isolated: routing would reach the machine's uplink.
    assert seen["forwardMode"] == "none"
    # Hardware virtualization only with a stock KVM module (kvm_pvm hangs Debian's kernel) that
    # this user may open; otherwise software emulation.
    stock_kvm = any(Path(f"/sys/module/{m}").is_dir() for m in ("kvm_intel", "kvm_amd"))
    assert seen["libvirtDriver"] == ("kvm" if stock_kvm and os.access("/dev/kvm", os.R_OK | os.W_OK) else "qemu")

    # validate made the lab key and one host key per VM, and a known_hosts naming exactly those.
    keys = vagrant_dir / ".vagrant" / "kubeprov"
    assert oct((keys / "id_ed25519").stat().st_mode & 0o777) == "0o600"
    expected = []
    for host in default_hosts():
        private = keys / "hosts" / host.name / "ssh_host_ed25519_key"
        public = subprocess.run(["ssh-keygen", "-y", "-f", str(private)], capture_output=True, text=True, check=True).stdout.split()
        expected.append(f"{host.name},{host.address} {public[0]} {public[1]}")
    assert (keys / "known_hosts").read_text().splitlines() == expected


def test_environment_sets_host_and_control_plane_counts(vagrant_dir):
    seen, proc = computed(vagrant_dir, "status", "--machine-readable",
                          KUBEPROV_VAGRANT_HOSTS="5", KUBEPROV_VAGRANT_CONTROL_PLANES="2",
                          KUBEPROV_VAGRANT_CPUS="1", KUBEPROV_VAGRANT_MEMORY="1024")
    expected = hosts(5, 2)
    assert as_tuples(seen["hosts"]) == [(h.name, h.address, h.roles) for h in expected]
    assert (seen["cpus"], seen["memory"]) == (1, 1024)
    # Vagrant itself defines exactly those machines.
    machines = [line.split(",")[1] for line in proc.stdout.splitlines() if ",state," in line]
    assert machines == [h.name for h in expected]
    # status is read-only: no keys made.
    assert not (vagrant_dir / ".vagrant" / "kubeprov").exists()


def test_in_the_lab_namespace_the_networks_route(vagrant_dir):
    # scripts/vagrant-test runs libvirtd in its namespace (no uplink) and routes to it over the leg.
    seen, _ = computed(vagrant_dir, "status", KUBEPROV_VAGRANT_NETNS=layout()["namespace"]["name"])
    assert seen["forwardMode"] == "route"
    assert as_tuples(seen["hosts"]) == [(h.name, h.address, h.roles) for h in default_hosts()]


def test_the_lab_namespace_and_leg_stay_clear_of_the_vm_subnets():
    ns = layout()["namespace"]
    leg = ipaddress.ip_network(ns["legSubnet"])
    assert leg.prefixlen == 30
    subnets = [ipaddress.ip_network(layout()[k]) for k in ("subnet", "managementSubnet")]
    assert not any(leg.overlaps(s) for s in subnets) and not subnets[0].overlaps(subnets[1])
    # Interface names: at most 15 characters; not the nspawn lab's kp-<lab> names.
    assert len(ns["leg"]) <= 15 and not ns["leg"].startswith("kp-") and not ns["name"].startswith("kp-")


@pytest.mark.parametrize("env, variable", [
    ({"KUBEPROV_VAGRANT_HOSTS": "0"}, "KUBEPROV_VAGRANT_HOSTS"),
    ({"KUBEPROV_VAGRANT_HOSTS": "three"}, "KUBEPROV_VAGRANT_HOSTS"),
    ({"KUBEPROV_VAGRANT_HOSTS": "2", "KUBEPROV_VAGRANT_CONTROL_PLANES": "3"}, "KUBEPROV_VAGRANT_CONTROL_PLANES"),
    ({"KUBEPROV_VAGRANT_LIBVIRT_DRIVER": "xen"}, "KUBEPROV_VAGRANT_LIBVIRT_DRIVER"),
])
def test_bad_settings_are_one_clear_line(vagrant_dir, env, variable):
    proc = vagrant(vagrant_dir, "status", **env)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Vagrantfile: {variable}="), proc.stderr
