"""The image-free `bridge` CNI: each node bridges its pods on cni0 with addresses from its own pod
CIDR, and plain kernel routes send every other node's pod CIDR to that node.

Per node kubeprov renders
- /etc/cni/net.d/10-kubeprov-bridge.conflist: bridge (cni0, gateway = first address of the node's
  CIDR) + host-local IPAM + portmap + loopback, cniVersion 0.4.0 (Debian's plugins 1.1 speak it);
- /etc/systemd/system/kubeprov-pod-routes.service: a oneshot unit that routes each other node's
  CIDR via that node's advertise address and masquerades pod traffic leaving the pod network.
  Routes via an address need the nodes on one link (one L2 segment), as host-gw routing does.
  `up` must enable it (`systemctl enable --now`), which a file tree cannot express.

The bridge plugin's own ipMasq is off: it would NAT pod → pod traffic between nodes too (it only
exempts the node's own CIDR), and Kubernetes' network model wants pods to see each other's
addresses. The unit's single MASQUERADE rule exempts the whole podSubnet instead.

Node CIDRs are not allocated by the controller-manager in this mode (--allocate-node-cidrs=false):
`node_pod_cidrs` cuts podSubnet into /24s (IPv4) or /64s (IPv6) - the controller-manager's
default node mask sizes - handed out in host order. Appending a node keeps everyone's CIDR;
inserting one earlier in the host list renumbers those after it.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
from pathlib import PurePosixPath

from provision.config.models import BRIDGE_NODE_MASK, Cluster, Host
from provision.render.templates import render_template
from provision.render.tree import File, Tree

CONFLIST = PurePosixPath("/etc/cni/net.d/10-kubeprov-bridge.conflist")
ROUTES_UNIT = PurePosixPath("/etc/systemd/system/kubeprov-pod-routes.service")
BRIDGE = "cni0"
NETWORK_NAME = "kubeprov-bridge"
# The routing protocol number kubeprov's node routes carry (`ip route … proto 77`; free in
# iproute2's rt_protos): what tells them from others, so that a route to a node that left is found.
ROUTES_PROTO = "77"
NODE_MASK = BRIDGE_NODE_MASK  # kube-controller-manager's --node-cidr-mask-size-ipv4 / -ipv6 defaults

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def node_pod_cidrs(cluster: Cluster) -> dict[str, Network]:
    """Node name → its pod CIDR: consecutive blocks of podSubnet, in host order (the model,
    config/models.py: _check_bridge_cni, makes sure podSubnet holds one per node)."""
    subnet = cluster.networking.pod_subnet
    mask = NODE_MASK[subnet.version]
    nodes = cluster.nodes
    cidrs = subnet.subnets(new_prefix=mask)  # lazy: an IPv6 /48 holds 65536 blocks
    return {node.name: next(cidrs) for node in nodes}


def bridge_conflist(cluster: Cluster, host: Host) -> dict:
    cidr = node_pod_cidrs(cluster)[host.name]
    default = "0.0.0.0/0" if cidr.version == 4 else "::/0"
    return {
        "cniVersion": "0.4.0",
        "name": NETWORK_NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": str(cidr)}]], "routes": [{"dst": default}]},
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "loopback"},
        ],
    }


def route_commands(cluster: Cluster, host: Host) -> list[list[str]]:
    """The commands that make `host` reach every pod: routes to the other nodes (via each one's
    IP address in podSubnet's family, which the model requires), marked as kubeprov's; those of
    its routes that lead to no node of the cluster any more (a node removed) deleted; one NAT rule."""
    cidrs = node_pod_cidrs(cluster)
    subnet = cluster.networking.pod_subnet
    ip = f"/usr/sbin/ip -{subnet.version}"
    commands, routed = [], []
    for node in cluster.hosts:
        if node.name not in cidrs or node.name == host.name:
            continue
        via = node.advertise_address
        routed.append(str(cidrs[node.name]))
        commands.append(ip.split() + ["route", "replace", routed[-1], "via", via, "proto", ROUTES_PROTO])
    # No shell variable here: systemd expands $NAME in ExecStart= itself.
    keep = "".join(f" -e {cidr}" for cidr in routed)
    commands.append(["/bin/sh", "-c", f'{ip} -o route show proto {ROUTES_PROTO} | grep -oE "^[^[:space:]]+"'
                                      + (f" | grep -vxF{keep}" if keep else "") + f" | xargs -r -n1 {ip} route del proto {ROUTES_PROTO}"])
    iptables = "/usr/sbin/iptables" if subnet.version == 4 else "/usr/sbin/ip6tables"
    rule = f"POSTROUTING -s {cidrs[host.name]} ! -d {subnet} -j MASQUERADE"
    nat = f"{iptables} -w -t nat"
    commands.append(["/bin/sh", "-c", f"{nat} -C {rule} || {nat} -A {rule}"])  # added once, however often it runs
    return commands


def routes_unit(cluster: Cluster, host: Host) -> bytes:
    return render_template(
        "systemd/kubeprov-pod-routes.service.j2",
        pod_cidr=node_pod_cidrs(cluster)[host.name],
        bridge=BRIDGE,
        commands=[shlex.join(command) for command in route_commands(cluster, host)],
    )


def render_bridge(cluster: Cluster, host: Host) -> Tree:
    if host not in cluster.nodes:
        return {}
    return {
        CONFLIST: File((json.dumps(bridge_conflist(cluster, host), indent=2) + "\n").encode()),
        ROUTES_UNIT: File(routes_unit(cluster, host)),
    }
