"""`lab` for the Vagrant VMs: the hosts of the Vagrant inventory, in the nspawn lab fixture's shape.

The VMs are brought up by scripts/vagrant-test (or by hand with `vagrant up`); this fixture only
reads the inventory and waits until every VM answers over strictly checked ssh and has booted.
Without answering VMs it skips, naming them, unless KUBEPROV_VAGRANT_REQUIRED is set
(scripts/vagrant-test sets it): then it fails.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from provision.config.loader import load_cluster
from provision.lab.access import wait_booted
from provision.lab.inventory import LabHost
from provision.lab.testing import TestLab
from vagrant_layout import INVENTORY_DIR, KEY_DIR, counts_from_environment, hosts, layout

# scripts/vagrant-test has just run `vagrant up`, so VMs answer; a run by hand gives up sooner.
BOOT_TIMEOUT = float(os.environ.get("KUBEPROV_VAGRANT_BOOT_TIMEOUT", "300" if os.environ.get("KUBEPROV_VAGRANT_REQUIRED") else "15"))


def inventories_for(count: int, control_planes: int, scratch: Path) -> tuple[Path, Path]:
    """The committed inventories for the default layout; for another host count, the same
    settings with that layout's hosts, written to `scratch`."""
    defaults = layout()["defaults"]
    if (count, control_planes) == (defaults["hosts"], defaults["controlPlanes"]):
        return INVENTORY_DIR / "cluster.yaml", INVENTORY_DIR / "hosts.ini"
    lab_hosts = hosts(count, control_planes)
    cluster = yaml.safe_load((INVENTORY_DIR / "cluster.yaml").read_text())
    key = str(KEY_DIR / "id_ed25519")
    cluster["hosts"] = [{"name": h.name, "address": h.address, "ssh": {"user": "root", "port": 22, "key": key},
                         "roles": list(h.roles)} for h in lab_hosts]
    cluster_file = scratch / "cluster.yaml"
    cluster_file.write_text(yaml.safe_dump(cluster, sort_keys=False))
    control = [h.name for h in lab_hosts if "control-plane" in h.roles]
    workers = [h.name for h in lab_hosts if "worker" in h.roles]
    ini = ["[all]", *(f"{h.name} ansible_host={h.address} ip={h.address}" for h in lab_hosts),
           "", "[kube_control_plane]", *control, "", "[etcd]", *control, "", "[kube_node]", *workers,
           "", "[k8s_cluster:children]", "kube_control_plane", "kube_node",
           "", "[all:vars]", "ansible_user=root", f"ansible_ssh_private_key_file={key}",
           f"ansible_ssh_common_args='-o UserKnownHostsFile={KEY_DIR / 'known_hosts'} -o StrictHostKeyChecking=yes'"]
    ansible_inventory = scratch / "hosts.ini"
    ansible_inventory.write_text("\n".join(ini) + "\n")
    return cluster_file, ansible_inventory


def on_local_network(address: str) -> bool:
    """Whether the VMs' network holds the address: the lab namespace's leg (scripts/vagrant-test)
    routes to it, or a network of this machine holds it directly (a libvirtd or VirtualBox of the
    machine's own). Otherwise a packet to it would leave through the default route, to machines
    that are not ours."""
    route = subprocess.run(["ip", "-4", "-o", "route", "get", address], capture_output=True, text=True).stdout.split()
    if "dev" not in route:
        return False
    return route[route.index("dev") + 1] == layout()["namespace"]["leg"] or "via" not in route


def unavailable(reason: str):
    if os.environ.get("KUBEPROV_VAGRANT_REQUIRED"):
        pytest.fail(f"Vagrant VMs required: {reason}")
    pytest.skip(f"{reason} (scripts/vagrant-test brings the VMs up)")


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    key, known_hosts = KEY_DIR / "id_ed25519", KEY_DIR / "known_hosts"
    if not (key.exists() and known_hosts.exists()):
        unavailable(f"no lab key in {KEY_DIR} (made by `vagrant up`)")
    cluster_file, ansible_inventory = inventories_for(*counts_from_environment(), tmp_path_factory.mktemp("vagrant"))
    cluster = load_cluster(cluster_file)
    lab_hosts = [LabHost(h.name, h.address, tuple(r.value for r in h.roles)) for h in cluster.hosts]
    off_network = [f"{h.name} ({h.address})" for h in lab_hosts if not on_local_network(h.address)]
    if off_network:
        unavailable(f"no network of this machine holds {', '.join(off_network)}: the VMs' private network is not up")
    down = []
    for host in lab_hosts:
        try:
            wait_booted(host.address, key, known_hosts, BOOT_TIMEOUT)  # running or degraded: the tests tell which
        except (TimeoutError, RuntimeError) as exc:
            down.append(f"{host.name} ({host.address}): {exc}")
    if down:
        unavailable("VMs not ready: " + "; ".join(down))
    # Same shape as provision.lab.testing's lab; VMs have no lab apt repository (repo_url "").
    yield TestLab(name="vagrant", hosts=lab_hosts, key=key, known_hosts=known_hosts, cluster_file=cluster_file,
                  ansible_inventory=ansible_inventory, state_dir=KEY_DIR, repo_url="")
