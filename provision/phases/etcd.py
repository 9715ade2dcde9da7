"""etcd in the phases: external members' health over TLS, and a stacked etcd grown one member at a
time (a learner added through the first member, promoted once it has caught up), each member's
/health asked on its own host (provision/kube/etcd_members.py)."""

from __future__ import annotations

import json
import shlex
import time

from provision.config.models import Cluster, EtcdTopology, Host, Role
from provision.errors import KubeprovError
from provision.phases.context import UpContext
from provision.phases.files import mark_joined

ETCD_PKI = "/etc/kubernetes/pki/etcd"


def external(ctx: UpContext) -> bool:
    return ctx.cluster.etcd.topology is EtcdTopology.EXTERNAL


def etcdctl(cluster: Cluster, *args: str) -> str:
    from provision.render.etcd import client_url

    endpoints = ",".join(client_url(m.advertise_address) for m in cluster.etcd_members)
    return shlex.join(["env", "ETCDCTL_API=3", "etcdctl", f"--endpoints={endpoints}", f"--cacert={ETCD_PKI}/ca.crt",
                       f"--cert={ETCD_PKI}/healthcheck-client.crt", f"--key={ETCD_PKI}/healthcheck-client.key",
                       "--command-timeout=5s", *args])


def run_etcd_health(ctx: UpContext, timeout: float = 60.0) -> None:
    host = ctx.cluster.etcd_members[0]
    members = ctx.cluster.etcd_members
    deadline = time.monotonic() + timeout
    while True:
        result = ctx.transport.run(host, etcdctl(ctx.cluster, "endpoint", "health", "-w", "json"), timeout=30)
        healthy = []
        try:
            healthy = [e["endpoint"] for e in json.loads(result.stdout or "[]") if e.get("health")]
        except ValueError:
            pass
        if len(healthy) == len(members):
            break
        if time.monotonic() > deadline:
            raise KubeprovError(f"etcd is not healthy: {len(healthy)} of {len(members)} members answer "
                                f"({result.summary() or 'no output'})")
        time.sleep(1)
    for m in members:
        ctx.say(m.name, "etcd member healthy")
        if not m.has(Role.CONTROL_PLANE) and not m.has(Role.WORKER) and not ctx.joined(m):
            mark_joined(ctx, m)  # a member now: later runs give it no preflight (its etcd holds the ports by design)


def etcd_member_add(ctx: UpContext, host: Host) -> str | None:
    """Add `host` to the stacked etcd, as a learner, through the first member; its member ID while
    it is a learner still to promote (also one a failed run left), None once it votes."""
    from provision.kube import etcd_members
    from provision.render.etcd import peer_url

    first = ctx.cluster.first_control_plane
    url = peer_url(host.advertise_address)
    known = next((m for m in etcd_members.members(ctx.transport, first) if url in m.peer_urls), None)
    if known and not known.learner:
        ctx.say(host.name, "already an etcd member")
        return None
    if known:
        return known.id
    member_id = etcd_members.add_learner(ctx.transport, first, url)
    ctx.say(host.name, "added as an etcd learner", "changed")
    return member_id


def etcd_promote(ctx: UpContext, host: Host, member_id: str) -> None:
    from provision.kube import etcd_members

    etcd_members.promote(ctx.transport, ctx.cluster.first_control_plane, member_id)
    ctx.say(host.name, "etcd learner caught up: promoted to a voting member", "changed")


def wait_etcd_healthy(ctx: UpContext, hosts: list[Host], timeout: float) -> None:
    """Each stacked member answers its own /health (what the kubelet's probe asks), all asked at once."""
    from provision.kube import etcd_members

    unhealthy = etcd_members.wait_healthy(ctx.transport, hosts, timeout=timeout, parallel=ctx.options.parallel)
    if unhealthy:
        name, said = unhealthy
        raise KubeprovError(f"{name}: etcd is not healthy after {timeout:g} s (/health: {said or 'no answer'}); "
                            "see `crictl logs` of its etcd container there")
