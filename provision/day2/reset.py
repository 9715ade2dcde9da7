"""`kubeprov reset`: undo `up` on some hosts (or all), the way `kubeadm reset` does, so that each
can take a fresh `up`.

A plan comes first and refuses what would break the cluster, naming why (`plan_reset`):
- the last control plane(s) while other nodes stay: they would be left without an API server (an
  external etcd that stays keeps the data, and the next `up` builds the control plane on it);
- with stacked etcd, the first control plane of the cluster file while others stay: the next
  `up` starts that host as the first etcd member, a new one-member cluster beside the running
  one (take it out with `node remove`, or list a joined control plane first);
- a member of an external etcd cluster, unless every host is reset: reset does not touch the
  external etcd's membership;
- removing stacked etcd members whose departure would leave etcd without a quorum of healthy
  members (`quorum_problem`, checked against the live cluster by `check_etcd`).

Then, per host: a stacked control plane leaves etcd first (`member remove` through a healthy
member that stays), one at a time; then every host is torn down at once by one POSIX sh script
(provision/transport/remote.py: reset_host): the kubelet (and the bridge CNI's routes unit)
stopped and disabled, static pod manifests removed, every pod sandbox and container removed
through the CRI (crictl rmp -af), every mount below /var/lib/kubelet unmounted, then
/etc/kubernetes, /var/lib/kubelet, the etcd data directory (stacked members, or every etcd host
when all hosts go), /etc/cni/net.d, /var/lib/cni, /run/kubernetes and kubeprov's joined marker
removed (so the next `up` runs preflight there and joins it again), CNI interfaces deleted (cni0
and the pods' veths on it, flannel.1, cali*, vxlan.calico, kube-ipvs0; tunl0 set down), the
bridge CNI's routes to the other nodes' pod CIDRs deleted (those of its routing protocol number:
render/cni/bridge.py ROUTES_PROTO), and kube-proxy's rules dropped: every KUBE-* chain of every
iptables table (legacy and nft, IPv4 and IPv6), its nftables tables, the IPVS tables. Packages, binaries, images, containerd itself and
prepare's applied-state record stay, so the next `up` skips the roles there when nothing changed.
A directory that is a mount point (the lab's bind mounts) keeps the mount and loses its contents.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from provision.config.models import Cluster, EtcdTopology, Host, Role
from provision.errors import ConfigError, KubeprovError
from provision.phases.facts import JOINED_MARKER
from provision.render.cni.bridge import ROUTES_UNIT
from provision.render.kubelet import KUBELET_DIR
from provision.render.pki_files import KUBERNETES_DIR
from provision.render.staticpod import MANIFESTS_DIR
from provision.transport import remote

CNI_CONF_DIR = "/etc/cni/net.d/"  # emptied, kept: containerd's CRI watches it, and loses a directory made again
CNI_STATE_DIR = "/var/lib/cni"  # host-local IPAM's leases
RUN_DIR = "/run/kubernetes"
RESET_TIMEOUT = 300.0  # seconds for one host's teardown (crictl stops every pod)

Say = Callable[[str, str, str], None]  # (host, text, status: "ok" | "changed" | "failed")


class Refused(KubeprovError):
    """What was asked would break the cluster, or cannot be done safely; the message says why."""


def _names(hosts: Sequence[Host]) -> str:
    return ", ".join(h.name for h in hosts)


def stacked(cluster: Cluster) -> bool:
    return cluster.etcd.topology is EtcdTopology.STACKED


def external_member(cluster: Cluster, host: Host) -> bool:
    return not stacked(cluster) and host.has(Role.ETCD)


@dataclass(frozen=True)
class ResetPlan:
    cluster: Cluster
    hosts: tuple[Host, ...]
    whole: bool  # every host of the cluster: no etcd member leaves first, every etcd's data goes
    leave_etcd: tuple[Host, ...]  # stacked members that leave etcd before their teardown, in order

    def wipes_etcd(self, host: Host) -> bool:
        """Its etcd data goes: a stacked member (it leaves etcd first, or the whole cluster goes),
        or an external member when every host is reset."""
        if stacked(self.cluster):
            return host.has(Role.CONTROL_PLANE)
        return self.whole and host.has(Role.ETCD)

    def units(self, host: Host) -> list[str]:
        units = ["kubelet", ROUTES_UNIT.name] if host in self.cluster.nodes else []
        if self.wipes_etcd(host) and not stacked(self.cluster):
            units.append("etcd")  # the external member's own unit (render/etcd.py)
        return units

    def paths(self, host: Host) -> list[str]:
        paths = [str(KUBERNETES_DIR), str(KUBELET_DIR)] if host in self.cluster.nodes else []
        if self.wipes_etcd(host):
            paths.append(self.cluster.etcd.data_dir)
        if host in self.cluster.nodes:
            paths += [CNI_CONF_DIR, CNI_STATE_DIR, RUN_DIR]
        paths.append(JOINED_MARKER)
        return paths

    def command(self, host: Host, *, apply: bool) -> str:
        return remote.reset_host(apply, manifests=str(MANIFESTS_DIR), kubelet_dir=str(KUBELET_DIR),
                                 units=self.units(host), paths=self.paths(host))


def pick_hosts(cluster: Cluster, names: Sequence[str] | None) -> list[Host]:
    """The named hosts in the cluster file's order (all of them when none is named)."""
    if not names:
        return list(cluster.hosts)
    unknown = sorted(set(names) - {h.name for h in cluster.hosts})
    if unknown:
        raise ConfigError(f"no host named {', '.join(unknown)} in cluster {cluster.name} "
                          f"(its hosts: {_names(cluster.hosts)})")
    return [h for h in cluster.hosts if h.name in names]


def plan_reset(cluster: Cluster, names: Sequence[str] | None, *, leaving: bool = False) -> ResetPlan:
    """What resetting `names` (every host when empty) does, or Refused naming why it must not.

    leaving: the hosts leave the cluster for good (`node remove`): the first control plane may go,
    as the cluster file will no longer list it."""
    hosts = pick_hosts(cluster, names)
    whole = len(hosts) == len(cluster.hosts)
    if whole:
        return ResetPlan(cluster, tuple(hosts), True, ())
    externals = [h for h in hosts if external_member(cluster, h)]
    if externals:
        raise Refused(f"{_names(externals)}: a member of the external etcd cluster; reset keeps that cluster's members "
                      "and data, so it resets such a host only together with every host (no --host)")
    planes = cluster.control_planes
    staying = [h for h in cluster.nodes if h not in hosts]  # an external etcd that stays keeps the data, no API
    if planes and staying and all(cp in hosts for cp in planes):
        what = f"{planes[0].name} is the last control plane" if len(planes) == 1 else \
            f"{_names(planes)} are all the control planes"
        raise Refused(f"{what}: {_names(staying)} would be left without an API server. Reset every host (no --host) "
                      "to tear the whole cluster down, or add a control plane first")
    first = cluster.first_control_plane
    if stacked(cluster) and first in hosts and not leaving:
        raise Refused(
            f"{first.name} is the first control plane of the cluster file: the next `up` would start it as the first "
            f"etcd member, a new one-member etcd beside the one {_names([cp for cp in planes if cp not in hosts])} keep. "
            f"List a control plane that stays first in the cluster file, then reset {first.name}; or take it out "
            f"for good with `kubeprov node remove {first.name}`")
    leave = tuple(h for h in hosts if stacked(cluster) and h.has(Role.CONTROL_PLANE))
    return ResetPlan(cluster, tuple(hosts), False, leave)


# --- etcd's quorum ---------------------------------------------------------------------------


def majority(size: int) -> int:
    return size // 2 + 1


def quorum_problem(members: Sequence[str], healthy: set[str], removing: Sequence[str]) -> str | None:
    """Why removing `removing` from etcd's `members` (one at a time, the unhealthy first) would
    fail or leave etcd without a quorum of healthy members; None when it is safe. Each removal is
    a reconfiguration that itself needs a healthy majority of the members at that moment."""
    current = list(members)
    order = sorted((m for m in removing if m in current), key=lambda m: m in healthy)  # unhealthy ones first
    for name in order:
        up = [m for m in current if m in healthy]
        if len(up) < majority(len(current)):
            down = [m for m in current if m not in healthy]
            return (f"etcd has {len(up)} healthy of {len(current)} members (not healthy: {', '.join(down)}); "
                    f"removing {name} needs {majority(len(current))} healthy")
        current.remove(name)
    if not current:
        return "no etcd member would remain"
    up = [m for m in current if m in healthy]
    if len(up) < majority(len(current)):
        down = [m for m in current if m not in healthy]
        return (f"removing {', '.join(order)} would leave {len(up)} healthy of {len(current)} etcd members "
                f"(not healthy: {', '.join(down)}); a quorum needs {majority(len(current))}")
    return None


@dataclass(frozen=True)
class EtcdView:
    via: Host  # a healthy member that stays: the removals go through it
    members: dict[str, str]  # member key (host name, or the member's own name / ID) → member ID
    healthy: set[str]


def _member_key(cluster: Cluster, member) -> str:
    from provision.render.etcd import peer_url

    for host in cluster.etcd_members:
        if peer_url(host.advertise_address) in member.peer_urls:
            return host.name
    return member.name or f"member {member.id}"


def check_etcd(transport, cluster: Cluster, leaving: Sequence[Host], *, parallel: int = 20) -> EtcdView:
    """Ask the stacked etcd (every member's health, the membership through a healthy member
    that stays) whether `leaving` can leave it; Refused naming why not."""
    from provision.kube import etcd_members
    from provision.transport import fan_out

    outcomes = fan_out(cluster.etcd_members, lambda h: etcd_members.healthy(transport, h), parallel=parallel)
    said = {o.host: (o.value[1] if o.ok else o.error_text) for o in outcomes}
    healthy = {o.host for o in outcomes if o.ok and o.value[0]}
    staying = [h for h in cluster.etcd_members if h not in leaving and h.name in healthy]
    if not staying:
        others = [h for h in cluster.etcd_members if h not in leaving]
        raise Refused("no etcd member that stays is healthy (" + "; ".join(f"{h.name}: {said.get(h.name) or 'no answer'}"
                                                                        for h in others) + "): no member can be removed")
    via = staying[0]
    members = {_member_key(cluster, m): m.id for m in etcd_members.members(transport, via)}
    problem = quorum_problem(list(members), healthy, [h.name for h in leaving])
    if problem:
        raise Refused(f"{problem}; bring the unhealthy members back first (`crictl logs` of their etcd container)")
    return EtcdView(via, members, healthy)


def leave_etcd(transport, cluster: Cluster, host: Host, via: Host) -> str:
    """Remove `host`'s member through `via`; what happened, in words."""
    from provision.kube import etcd_members
    from provision.render.etcd import peer_url

    url = peer_url(host.advertise_address)
    member = next((m for m in etcd_members.members(transport, via) if url in m.peer_urls or m.name == host.name), None)
    if member is None:
        return "not an etcd member (any more): nothing to remove"
    etcd_members.remove(transport, via, member.id)
    return f"left etcd: member {member.id} removed through {via.name}"


LB_SETTLE = 3.0  # seconds for the load balancers to drop a dead API server: haproxy checks every 1 s, fall 2 (templates/)


def retire_api_server(transport, cluster: Cluster, host: Host, timeout: float = 60.0) -> str:
    """Stop the host's API server first (its manifest removed: the kubelet stops it gracefully, and
    the API server withdraws its endpoint from the `kubernetes` Service), wait until it no longer
    answers, then until the load balancers in front of the API servers have dropped it; only then
    does its etcd member go. From the start, new connections to it are refused with a reset
    (remote.api_connections), so a load balancer sends each request elsewhere (haproxy
    redispatches) instead of to an API server that answers /readyz with 500 while it shuts down,
    or whose etcd just left."""
    from provision.kube.kubectl import ADMIN_CONF, Kubectl
    from provision.pki.kubeconfigs import local_url

    manifest = str(MANIFESTS_DIR / "kube-apiserver.yaml")
    lb = remote.api_connections(host.advertise_address, cluster.api_server_port, "out")
    result = transport.run(host, lb + "\n" + remote.script('[ -e "$1" ] || exit 3; rm -f -- "$1"', manifest), timeout=30)
    if result.exit_code == 3:
        transport.run(host, remote.api_connections(host.advertise_address, cluster.api_server_port, "in"), timeout=30)
        return "no API server manifest: nothing to stop"
    if not result.ok:
        raise KubeprovError(f"{host.name}: removing {manifest} failed: {result.summary()}")
    own = Kubectl(transport, host, kubeconfig=ADMIN_CONF, server=local_url(cluster, host))
    started = time.monotonic()
    answers = True
    while answers and time.monotonic() - started < timeout:
        try:
            answers, _ = own.ready()
        except KubeprovError:
            answers = False
        if answers:
            time.sleep(0.5)
    stopped = f"still answering after {timeout:g} s" if answers else f"stopped after {time.monotonic() - started:.1f}s"
    time.sleep(LB_SETTLE)
    # Nothing listens now: a connection is refused by the kernel as it was by the rule.
    transport.run(host, remote.api_connections(host.advertise_address, cluster.api_server_port, "in"), timeout=30)
    return f"API server {stopped} (manifest removed); load balancers given {LB_SETTLE:g} s to drop it"


# --- the teardown ----------------------------------------------------------------------------


class HostFailed(KubeprovError):
    pass


def teardown(transport, plan: ResetPlan, host: Host, *, apply: bool) -> list[str]:
    """Run the reset script on `host`; the lines it printed (what it did, or would do)."""
    result = transport.run(host, plan.command(host, apply=apply), timeout=RESET_TIMEOUT)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    if not result.ok:
        errors = [line.removeprefix("error: ") for line in result.stderr.splitlines() if line.strip()]
        raise HostFailed(f"{host.name}: reset {'failed' if apply else 'could not look at the host'}: "
                         + ("; ".join(errors) or f"exit {result.exit_code}"))
    return lines


@dataclass(frozen=True)
class HostOutcome:
    host: str
    error: str | None
    seconds: float


def run_reset(transport, plan: ResetPlan, say: Say, *, dry_run: bool = False, parallel: int = 20,
              view: EtcdView | None = None) -> list[HostOutcome]:
    """Reset every host of the plan (dry_run: say what each would have done). Stacked members
    leave etcd first, one at a time, through `view.via`; a host whose member could not leave is
    not torn down. Every host's lines are said as soon as it is done; failures are returned (each
    HostOutcome's error, one line), not said."""
    from provision.transport import fan_out

    lock = threading.Lock()
    failed: dict[str, str] = {}
    started = time.monotonic()

    def tell(host: str, text: str, status: str) -> None:
        with lock:
            say(host, text, status)

    if plan.leave_etcd and not dry_run:
        if view is None:
            raise KubeprovError("internal: stacked members leave etcd only after check_etcd")
        for host in plan.leave_etcd:
            try:
                tell(host.name, retire_api_server(transport, plan.cluster, host), "changed")
                tell(host.name, leave_etcd(transport, plan.cluster, host, view.via), "changed")
            except KubeprovError as error:  # said by the caller, with every other failure, on stderr
                failed[host.name] = "could not leave etcd, so it was not reset: " + str(error).removeprefix(f"{host.name}: ")
    elif plan.leave_etcd:
        for host in plan.leave_etcd:
            tell(host.name, f"would stop its API server, give the load balancers {LB_SETTLE:g} s to drop it, and leave etcd "
                            f"(member remove through {view.via.name if view else 'a member that stays'})", "ok")

    def one(host: Host) -> None:
        if not dry_run:
            tell(host.name, "tearing down: kubelet, containers, mounts, files, interfaces, iptables", "ok")
        lines = teardown(transport, plan, host, apply=not dry_run)
        with lock:
            for line in lines:
                say(host.name, ("would " if dry_run else "") + line, "ok" if dry_run else "changed")
            if not lines:
                say(host.name, "nothing to reset: no trace of a cluster on this host", "ok")

    todo = [h for h in plan.hosts if h.name not in failed]
    outcomes = fan_out(todo, one, parallel=parallel)
    if not dry_run and any(o.ok for o in outcomes):
        from provision.phases.journal import Journal

        # A journal of an interrupted `up` would make the next one resume past the phases that
        # must rebuild these hosts (sync, prepare, their kubelets): the next `up` runs them all.
        if Journal.discard(plan.cluster.directory):
            say("local", "the journal of an interrupted up is discarded: the next up runs every phase", "changed")
    result = []
    for host in plan.hosts:
        o = next((o for o in outcomes if o.host == host.name), None)
        if o is None:
            result.append(HostOutcome(host.name, failed[host.name], time.monotonic() - started))
        elif not o.ok:
            result.append(HostOutcome(host.name, o.error_text, o.duration))
        else:
            result.append(HostOutcome(host.name, None, o.duration))
    return result
