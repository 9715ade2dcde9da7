"""Every name and address a lab uses, derived from its name and its subnet number.

One place decides the naming so that teardown can find everything a lab made even when its
state file is lost: network namespaces are `kp-<lab>-…`, cgroups `kubeprov-lab-<lab>-…`, the
root namespace's leg `kp-<lab>`. Lab names have no '-' so one lab's prefix never matches another's.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from provision.lab.errors import LabError

_NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")
MAX_HOSTS = 200
# Lab subnets are 10.213.<index>.0/24; the index is chosen so no route of this machine overlaps.
SUBNET_BASE = ipaddress.ip_network("10.213.0.0/16")
FIRST_HOST_OCTET = 11  # hosts are .11, .12, …; .1 is the bridge (gateway, apt repo), .254 the controller
REPO_PORT = 8080


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise LabError(
            f"lab name {name!r} is invalid: 1–12 characters, a-z and 0-9, starting with a letter "
            "(it becomes part of interface and namespace names)"
        )
    return name


def state_root() -> Path:
    return Path(os.environ.get("KUBEPROV_LAB_DIR", "/var/lib/kubeprov/lab"))


def cache_root() -> Path:
    return Path(os.environ.get("KUBEPROV_LAB_CACHE", "/var/cache/kubeprov"))


@dataclass(frozen=True)
class Layout:
    name: str
    index: int  # which 10.213.<index>.0/24

    # --- network ---------------------------------------------------------------------------
    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.ip_network(f"10.213.{self.index}.0/24")

    @property
    def gateway(self) -> str:
        """The bridge's address: hosts' default route (no uplink, forwarding off) and the apt repo."""
        return str(self.subnet.network_address + 1)

    @property
    def controller_address(self) -> str:
        """This machine's address on the lab, on the leg from the root namespace."""
        return str(self.subnet.network_address + 254)

    @property
    def lan_netns(self) -> str:
        return f"kp-{self.name}-lan"

    @property
    def root_leg(self) -> str:
        return f"kp-{self.name}"

    @property
    def netns_prefix(self) -> str:
        return f"kp-{self.name}-"

    @property
    def repo_url(self) -> str:
        return f"http://{self.gateway}:{REPO_PORT}/"

    # --- hosts -----------------------------------------------------------------------------
    def host_name(self, number: int) -> str:
        return f"{self.name}-{number}"

    def host_address(self, number: int) -> str:
        if not 1 <= number <= MAX_HOSTS:
            raise LabError(f"a lab has 1 to {MAX_HOSTS} hosts, not {number}")
        return str(self.subnet.network_address + FIRST_HOST_OCTET - 1 + number)

    def host_netns(self, number: int) -> str:
        return f"kp-{self.host_name(number)}"

    def host_lan_port(self, number: int) -> str:
        """The host's veth end on the bridge (the host's own end is eth0, in its namespace)."""
        return f"h{number}"

    # --- cgroups ---------------------------------------------------------------------------
    @property
    def cgroup_prefix(self) -> str:
        return f"kubeprov-lab-{self.name}-"

    def host_cgroup(self, number: int) -> str:
        return f"{self.cgroup_prefix}{number}"

    @property
    def repo_cgroup(self) -> str:
        return f"{self.cgroup_prefix}repo"

    # --- files -----------------------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        return state_root() / self.name

    def host_dir(self, number: int) -> Path:
        return self.state_dir / "hosts" / self.host_name(number)
