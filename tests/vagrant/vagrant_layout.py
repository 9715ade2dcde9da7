"""The Vagrant lab's hosts, derived from inventories/vagrant/layout.yaml on their own.

The Vagrantfile computes the same list in Ruby; tests compare the two, and the committed
inventories, so the three cannot drift apart.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
VAGRANTFILE = REPO / "Vagrantfile"
INVENTORY_DIR = REPO / "inventories" / "vagrant"
LAYOUT_FILE = INVENTORY_DIR / "layout.yaml"
# Where the Vagrantfile keeps the lab key, per-VM host keys and known_hosts.
KEY_DIR = REPO / ".vagrant" / "kubeprov"


@dataclass(frozen=True)
class VagrantHost:
    name: str
    address: str
    roles: tuple[str, ...]


def layout() -> dict:
    return yaml.safe_load(LAYOUT_FILE.read_text())


def hosts(count: int, control_planes: int) -> list[VagrantHost]:
    """cp1..cpN then worker1..; host i at the subnet's address firstHostOctet + i."""
    spec = layout()
    subnet = ipaddress.ip_network(spec["subnet"])
    first = subnet.network_address + spec["firstHostOctet"]
    found = []
    for i in range(count):
        if i < control_planes:
            name, roles = f"cp{i + 1}", ("control-plane",)
        else:
            name, roles = f"worker{i - control_planes + 1}", ("worker",)
        address = first + i
        assert address in subnet and address != subnet.broadcast_address, f"{count} hosts do not fit {subnet}"
        found.append(VagrantHost(name, str(address), roles))
    return found


def counts_from_environment() -> tuple[int, int]:
    """The host and control-plane counts the Vagrantfile uses under the current environment."""
    defaults = layout()["defaults"]
    count = int(os.environ.get("KUBEPROV_VAGRANT_HOSTS") or defaults["hosts"])
    control_planes = int(os.environ.get("KUBEPROV_VAGRANT_CONTROL_PLANES") or defaults["controlPlanes"])
    return count, control_planes
