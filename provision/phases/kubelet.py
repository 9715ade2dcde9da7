"""Kubelets and joins: the first control plane's kubelet (and the workers', which need nothing
from the API to start), its API server's /readyz, the other control planes (stacked etcd members
one at a time) and the workers' Nodes; kubeadm's marks on each Node."""

from __future__ import annotations

import time

from provision.config.models import CNI, EtcdTopology, Host, Role
from provision.errors import KubeprovError
from provision.phases.context import UpContext, check_run
from provision.phases.etcd import etcd_member_add, etcd_promote
from provision.phases.facts import KUBELET_BINARY
from provision.phases.files import desired_tree, mark_joined
from provision.phases.writer import push_tree
from provision.phases.objects import live_objects
from provision.transport import remote


def start_kubelet(ctx: UpContext, host: Host) -> bool:
    """True when it started the kubelet (False: it was running already)."""
    from provision.render.cni.bridge import ROUTES_UNIT

    names = ["kubelet"] + ([ROUTES_UNIT.name] if ctx.cluster.cni is CNI.BRIDGE else [])
    units = " ".join(names)
    facts = ctx.facts(host)
    if facts.kubelet_binary and all(facts.units[u].running for u in names):
        ctx.say(host.name, f"{units} running")
        return False
    # One round trip: refuse without a binary; leave running units alone (a re-run restarts nothing).
    probe = ctx.transport.run(host, remote.start_units(KUBELET_BINARY, names))
    if probe.exit_code == remote.NO_BINARY:
        raise KubeprovError(
            f"{host.name}: no kubelet binary at {KUBELET_BINARY}: the artifact source has none. Real Kubernetes "
            "binaries come from an offline bundle (bin/kubelet, `--bundle DIR` or artifacts.source: bundle) or the "
            "package repositories; then run `kubeprov up` again (it resumes here)")
    if probe.exit_code == remote.UNITS_RUNNING:
        ctx.say(host.name, f"{units} running")
        return False
    if not probe.ok:
        raise KubeprovError(f"{host.name}: starting the kubelet failed (exit {probe.exit_code}): {probe.summary()}")
    ctx.facts.forget(host)
    ctx.say(host.name, f"started {units}", "changed")
    return True


def refresh_pod_routes(ctx: UpContext, host: Host) -> bool:
    """The bridge CNI's routes unit is a oneshot: a node holds the routes its commands named when
    it last ran. Once sync has replaced its file (a node added to the cluster, or gone, changes
    every node's routes) it runs again: systemd reloaded, the unit restarted (its commands are
    idempotent: `ip route replace`, a NAT rule checked before it is added). Nothing else restarts,
    no kubelet, pod or drain. Read from the host's facts (the unit file newer than the unit's
    start): a run that failed between the write and this still leaves the next run to do it."""
    from provision.render.cni.bridge import ROUTES_UNIT

    if ctx.cluster.cni is not CNI.BRIDGE:
        return False
    unit = ctx.facts(host).units[ROUTES_UNIT.name]
    if not (unit.running and unit.stale):
        return False
    check_run(ctx, host, f"systemctl daemon-reload && systemctl restart {ROUTES_UNIT.name}", f"re-running {ROUTES_UNIT.name}")
    ctx.facts.forget(host)
    ctx.say(host.name, f"{ROUTES_UNIT.name} run again: its unit file changed since it ran (routes to the cluster's nodes)", "changed")
    return True


def wait_node(ctx: UpContext, host: Host, timeout: float) -> dict:
    """The host's Node object, once its kubelet has registered it."""
    kubectl = ctx.kubectl()
    deadline = time.monotonic() + timeout
    while True:
        result = kubectl.run("get", "node", host.name, "-o", "json", check=False)
        if result.ok:
            return result.json(f"kubectl get node {host.name} -o json")
        if time.monotonic() > deadline:
            raise KubeprovError(f"{host.name}: its node did not register within {timeout:g} s; see `journalctl -u kubelet` there")
        time.sleep(1)


def run_first_control_plane(ctx: UpContext) -> None:
    from provision.transport import fan_out

    host = ctx.cluster.first_control_plane
    # Nodes in the cluster already whose routes to the other nodes' pods changed (bridge CNI) get them now.
    joined = [h for h in ctx.cluster.nodes if ctx.joined(h)]
    failed = [o for o in fan_out(joined, lambda h: refresh_pod_routes(ctx, h), parallel=ctx.options.parallel) if not o.ok]
    if failed:
        raise KubeprovError("running the pod routes again failed: " + "; ".join(o.error_text for o in failed))
    # A control plane whose kubelet starts now has (nearly always) an empty API: the object phases
    # then apply without reading first. Were its etcd older, apply still finds what exists.
    ctx.fresh_api = start_kubelet(ctx, host)
    # Workers need nothing from the API to start (their kubelet.conf is signed by the local CA): their
    # kubelets start now and register as soon as it answers, instead of after the control plane.
    waiting = [w for w in ctx.cluster.workers if not ctx.joined(w)]
    failed = [o for o in fan_out(waiting, lambda w: start_kubelet(ctx, w), parallel=ctx.options.parallel) if not o.ok]
    if failed:
        raise KubeprovError("starting workers' kubelets failed: " + "; ".join(f"{o.host}: {o.error_text}" for o in failed))
    if not ctx.fresh_api:
        # Its API existed before this run: the object phases' one read of their objects starts now,
        # while /readyz is asked (a read that fails leaves them applied: the safe side).
        live_objects(ctx).prefetch()
    seconds = ctx.kubectl(host, bootstrap=True).wait_ready(ctx.options.api_timeout)
    ctx.say(host.name, f"API server ready (/readyz ok after {seconds:.1f}s)")


CRI_SOCKET_ANNOTATION = "kubeadm.alpha.kubernetes.io/cri-socket"


def annotate_cri_socket(ctx: UpContext, host: Host, node: dict) -> None:
    """kubeadm's per-node record of its CRI socket: kubeadm's own commands (upgrade, certs,
    join) read a node's registration from it and fall back to defaults without it."""
    from provision.render.kubelet import CONTAINERD_ENDPOINT

    if node["metadata"].get("annotations", {}).get(CRI_SOCKET_ANNOTATION) != CONTAINERD_ENDPOINT:
        ctx.kubectl(bootstrap=True).run("annotate", "node", host.name, "--overwrite", f"{CRI_SOCKET_ANNOTATION}={CONTAINERD_ENDPOINT}")
        ctx.say(host.name, f"annotated {CRI_SOCKET_ANNOTATION}", "changed")


CONTROL_PLANE_LABELS = ("node-role.kubernetes.io/control-plane", "node.kubernetes.io/exclude-from-external-load-balancers")


CONTROL_PLANE_TAINT = "node-role.kubernetes.io/control-plane"


def mark_control_plane(ctx: UpContext, host: Host) -> None:
    """kubeadm's mark-control-plane: its labels, and its NoSchedule taint unless it is also a worker.
    Only what the Node lacks is changed."""
    kubectl = ctx.kubectl(bootstrap=True)
    node = wait_node(ctx, host, ctx.options.node_timeout)
    labels = node["metadata"].get("labels", {})
    missing = [f"{key}=" for key in CONTROL_PLANE_LABELS if labels.get(key) != ""]
    taint = not host.has(Role.WORKER) and not any(
        t.get("key") == CONTROL_PLANE_TAINT and t.get("effect") == "NoSchedule" for t in node["spec"].get("taints", []))
    annotate_cri_socket(ctx, host, node)
    if missing:
        kubectl.run("label", "node", host.name, "--overwrite", *missing)
    if taint:
        kubectl.run("taint", "node", host.name, "--overwrite", f"{CONTROL_PLANE_TAINT}:NoSchedule")
    if missing or taint:
        ctx.say(host.name, "labelled control-plane" + (", tainted NoSchedule" if taint else ""), "changed")
    else:
        ctx.say(host.name, "control-plane labels and taint in place")


def nudge_mirror_pods(ctx: UpContext, host: Host) -> None:
    """A kubelet started in this run, its Node registered: placeholders for the mirror pods it has
    not made (provision/kube/mirror_pods.py). As early as that rather than at verify: the kubelet
    posts a new mirror pod's status with its next status update of any pod there (its kube-proxy
    starting, a probe passing), else only at its 10 s status resync."""
    from provision.kube import mirror_pods
    from provision.phases.verify import expected_static_pods

    placed = mirror_pods.ensure(ctx.kubectl(bootstrap=True), ctx.cluster, host, expected_static_pods(ctx.cluster, host))
    if placed:
        ctx.say(host.name, mirror_pods.placed_line(placed), "changed")


def run_mark_control_plane(ctx: UpContext) -> None:
    first = ctx.cluster.first_control_plane
    mark_control_plane(ctx, first)
    if first.name in ctx.newly_joined:  # its kubelet started in this run
        nudge_mirror_pods(ctx, first)


def run_join_control_planes(ctx: UpContext) -> None:
    """etcd's membership changes one host at a time (a learner, then a voter: never more than one
    member that is not yet serving); what follows each start (its API server ready, its mirror
    pods, its labels) on all of them at once."""
    from provision.transport import fan_out

    stacked = ctx.cluster.etcd.topology is EtcdTopology.STACKED
    joining = []
    for host in ctx.cluster.control_planes[1:]:
        if ctx.joined(host):
            ctx.say(host.name, "already joined")
            continue
        learner = etcd_member_add(ctx, host) if stacked else None
        start_kubelet(ctx, host)
        if learner:
            etcd_promote(ctx, host, learner)  # its API server needs a voting member (a learner serves no writes)
        if stacked:  # its control-plane manifests, held back until now (after_local_etcd_votes)
            changes = push_tree(ctx, host, desired_tree(ctx, host, joined=True))
            if changes:
                ctx.say(host.name, f"etcd member votes: {len(changes)} control-plane manifests placed", "changed")
        joining.append(host)

    def settle(host: Host) -> None:
        wait_node(ctx, host, ctx.options.node_timeout)  # registered as soon as its own API server serves
        nudge_mirror_pods(ctx, host)
        seconds = ctx.kubectl(host).wait_ready(ctx.options.api_timeout)
        ctx.say(host.name, f"API server ready after {seconds:.1f}s")
        mark_control_plane(ctx, host)
        mark_joined(ctx, host)

    failed = [o for o in fan_out(joining, settle, parallel=ctx.options.parallel) if not o.ok]
    if failed:
        raise KubeprovError("control planes failed to join: " + "; ".join(f"{o.host}: {o.error_text}" for o in failed))


def run_workers(ctx: UpContext) -> None:
    from provision.transport import fan_out

    def join(host: Host) -> None:
        if ctx.joined(host):
            ctx.say(host.name, "already joined")
            return
        start_kubelet(ctx, host)
        annotate_cri_socket(ctx, host, wait_node(ctx, host, ctx.options.node_timeout))
        mark_joined(ctx, host)
        ctx.say(host.name, "node registered", "changed")

    outcomes = fan_out(ctx.cluster.workers, join, parallel=ctx.options.parallel)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise KubeprovError("workers failed: " + "; ".join(f"{o.host}: {o.error_text}" for o in failed))


# --- plans: what the run phases above would do, from the hosts' facts ---------------------------


def _kubelet_plan(ctx: UpContext, host: Host) -> str:
    from provision.render.cni.bridge import ROUTES_UNIT

    names = ["kubelet"] + ([ROUTES_UNIT.name] if ctx.cluster.cni is CNI.BRIDGE else [])
    if not ctx.pki_exists():
        return f"start {' '.join(names)}"
    facts = ctx.facts(host)
    stopped = [u for u in names if not facts.units[u].running]
    if not stopped:
        return "kubelet running"
    return f"start {' '.join(stopped)}" + ("" if facts.kubelet_binary else f" (no {KUBELET_BINARY} yet: prepare installs it)")


def _routes_plan(ctx: UpContext, host: Host) -> str | None:
    """refresh_pod_routes' plan: its unit file stale, or about to be replaced by sync."""
    from provision.phases.writer import pending
    from provision.render.cni.bridge import ROUTES_UNIT

    if ctx.cluster.cni is not CNI.BRIDGE or not ctx.pki_exists() or not ctx.joined(host):
        return None
    unit = ctx.facts(host).units[ROUTES_UNIT.name]
    if unit.running and (unit.stale or any(c.path == str(ROUTES_UNIT) for c in pending(ctx, host, desired_tree(ctx, host)))):
        return f"run {ROUTES_UNIT.name} again: its unit file changed (routes to the cluster's nodes)"
    return None


def plan_first_control_plane(ctx: UpContext):
    first = ctx.cluster.first_control_plane
    for host in ctx.cluster.nodes:
        line = _routes_plan(ctx, host)
        if line:
            yield host.name, line
    yield first.name, _kubelet_plan(ctx, first) + "; wait for its API server's /readyz"
    for worker in ctx.cluster.workers:
        if not ctx.joined(worker):
            yield worker.name, _kubelet_plan(ctx, worker)


def plan_join_control_planes(ctx: UpContext):
    stacked = ctx.cluster.etcd.topology is EtcdTopology.STACKED
    for host in ctx.cluster.control_planes[1:]:
        if ctx.joined(host):
            yield host.name, "joined already"
        else:
            yield host.name, ("etcd member add (learner) and promote, " if stacked else "") + _kubelet_plan(ctx, host) \
                + "; wait for its API server; label and taint"


def plan_workers(ctx: UpContext):
    for host in ctx.cluster.workers:
        yield host.name, "joined already" if ctx.joined(host) else "started with the control plane; wait for its Node"
