"""The lab network: a bridge in a namespace of its own, one namespace per host, a leg from here.

    root ns ── kp-<lab> (.254) ══ ctl ─┐
                                       br0 (.1, in kp-<lab>-lan; forwarding off, no uplink)
    kp-<lab>-1: eth0 (.11) ══ h1 ──────┤
    kp-<lab>-2: eth0 (.12) ══ h2 ──────┘

Hosts' default route points at the bridge address: Ansible's default_ipv4 and kubeadm's
advertise-address detection need one, and since the lab namespace forwards nothing, nothing
escapes. The controller reaches hosts over its leg on the same /24, without routing.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from provision.lab.errors import LabError
from provision.lab.layout import SUBNET_BASE, Layout
from provision.lab.system import in_netns, run

NETNS_DIR = Path("/run/netns")

# Set from outside because /proc/sys is read-only inside an nspawn host: the CNI bridge plugin and
# kube-proxy need these in the host's namespace. Unknown keys (no br_netfilter) are skipped.
HOST_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.ipv4.conf.all.route_localnet": "1",
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.bridge.bridge-nf-call-ip6tables": "1",
}


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def link_exists(name: str, netns: str | None = None) -> bool:
    args = ["ip"] + (["-n", netns] if netns else []) + ["link", "show", "dev", name]
    return run(args, check=False).strip() != ""


def lab_netns(layout: Layout) -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(layout.netns_prefix))


def free_index(taken: set[int]) -> int:
    """A 10.213.<index>.0/24 that no lab has and no route of this machine overlaps."""
    routes = json.loads(run(["ip", "-j", "-4", "route", "show", "table", "all"]) or "[]")
    used = []
    for route in routes:
        dst = route.get("dst", "")
        if dst in ("default", "") or route.get("type") in ("local", "broadcast"):
            continue
        try:
            used.append(ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False))
        except ValueError:
            continue
    for index in range(256):
        if index in taken:
            continue
        subnet = ipaddress.ip_network(f"{SUBNET_BASE.network_address + index * 256}/24")
        if not any(subnet.overlaps(net) for net in used):
            return index
    raise LabError("no free 10.213.x.0/24 subnet for a lab: remove some labs (`kubeprov lab down`)")


def _sysctl(netns: str, values: dict[str, str]) -> None:
    run(in_netns(netns, ["sysctl", "-q", "-e", "-w", *(f"{k}={v}" for k, v in values.items())]))


def create_lan(layout: Layout) -> None:
    """The bridge namespace and the root namespace's leg onto it (idempotent)."""
    ns = layout.lan_netns
    if not netns_exists(ns):
        run(["ip", "netns", "add", ns])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        _sysctl(ns, {"net.ipv4.ip_forward": "0", "net.ipv6.conf.all.disable_ipv6": "1",
                     "net.ipv6.conf.default.disable_ipv6": "1"})
        run(["ip", "-n", ns, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", ns, "addr", "add", f"{layout.gateway}/24", "dev", "br0"])
        run(["ip", "-n", ns, "link", "set", "br0", "up"])
    if not link_exists(layout.root_leg):
        run(["ip", "link", "add", layout.root_leg, "type", "veth", "peer", "name", "ctl", "netns", ns])
        run(["ip", "-n", ns, "link", "set", "ctl", "master", "br0", "up"])
        # No IPv6 chatter, and nothing the hosts send is ever forwarded by this machine.
        run(["sysctl", "-q", "-w", f"net.ipv6.conf.{layout.root_leg}.disable_ipv6=1",
             f"net.ipv4.conf.{layout.root_leg}.forwarding=0"])
        run(["ip", "addr", "add", f"{layout.controller_address}/24", "dev", layout.root_leg])
        run(["ip", "link", "set", layout.root_leg, "up"])


def create_host(layout: Layout, number: int) -> None:
    """The host's namespace with eth0 on the bridge, its address, default route and sysctls."""
    ns, port = layout.host_netns(number), layout.host_lan_port(number)
    if not netns_exists(ns):
        run(["ip", "netns", "add", ns])
    if not link_exists("eth0", ns):
        if link_exists(port, layout.lan_netns):
            run(["ip", "-n", layout.lan_netns, "link", "del", port])
        run(["ip", "-n", layout.lan_netns, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns])
        run(["ip", "-n", layout.lan_netns, "link", "set", port, "master", "br0", "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "-n", ns, "addr", "add", f"{layout.host_address(number)}/24", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        run(["ip", "-n", ns, "route", "add", "default", "via", layout.gateway])
    _sysctl(ns, HOST_SYSCTLS)


def remove_host(layout: Layout, number: int) -> None:
    ns = layout.host_netns(number)
    if netns_exists(ns):
        run(["ip", "netns", "del", ns])  # takes eth0 and so its peer on the bridge with it
    if netns_exists(layout.lan_netns) and link_exists(layout.host_lan_port(number), layout.lan_netns):
        run(["ip", "-n", layout.lan_netns, "link", "del", layout.host_lan_port(number)])


def remove_all(layout: Layout) -> None:
    """Every namespace named for this lab, and the root leg."""
    for ns in lab_netns(layout):
        run(["ip", "netns", "del", ns])
    # The leg's peer lived in the LAN namespace just deleted: the kernel removes the leg with it,
    # a moment later, so it may vanish between the check and the delete. Gone is what is wanted.
    if link_exists(layout.root_leg):
        run(["ip", "link", "del", layout.root_leg], check=False)
        if link_exists(layout.root_leg):
            run(["ip", "link", "del", layout.root_leg])  # still there: say why it cannot go
