"""`kubeprov node remove H`: take a node out of the cluster for good.

In order: refuse what would break the cluster (the last control plane; a stacked member whose
leaving would cost etcd its quorum; an external etcd member, which is not a node), find a
remaining control plane whose API server answers (kubectl runs there, through the transport,
against that host's own API server: provision/kube/kubectl.py), make sure the host itself is
reachable (it is reset at the end), cordon and drain the node (evictions, so PodDisruptionBudgets
are respected, within --timeout); on a control plane, stop its API server and give the load
balancers time to drop it (`retire_api_server`); remove its etcd member through a healthy member
that stays, reset the host (provision/day2/reset.py), and delete the Node last: deleted while its
kubelet still ran, the kubelet could register it again. A host that is gone for good is removed
with `skip_reset`: its node and etcd member go, the machine is not touched.

The cluster file still lists the host afterwards: the operator takes it out (the next `up` would
join it again otherwise), and that `up` gives the remaining hosts files that no longer name it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from provision.config.models import Cluster, Host, Role
from provision.day2.reset import (
    LB_SETTLE,
    EtcdView,
    Refused,
    ResetPlan,
    Say,
    check_etcd,
    external_member,
    leave_etcd,
    pick_hosts,
    retire_api_server,
    stacked,
    teardown,
)
from provision.errors import KubeprovError
from provision.kube.kubectl import ADMIN_CONF, Kubectl

DRAIN_TIMEOUT = 300.0


@dataclass(frozen=True)
class RemovePlan:
    cluster: Cluster
    host: Host
    api_hosts: tuple[Host, ...]  # the control planes that stay, in the cluster file's order
    leaves_etcd: bool  # a stacked etcd member: its member is removed

    def reset_plan(self) -> ResetPlan:
        return ResetPlan(self.cluster, (self.host,), False, ())


def plan_remove(cluster: Cluster, name: str) -> RemovePlan:
    """What removing `name` does, or Refused naming why it must not."""
    (host,) = pick_hosts(cluster, [name])
    if external_member(cluster, host):
        raise Refused(f"{name} is a member of the external etcd cluster, not only a node: node remove takes out nodes "
                      "(control planes, workers) and leaves the external etcd's membership alone")
    if host not in cluster.nodes:
        raise Refused(f"{name} is not a node (no control-plane or worker role)")
    planes = [cp for cp in cluster.control_planes if cp.name != name]
    if host.has(Role.CONTROL_PLANE) and not planes:
        raise Refused(f"{name} is the last control plane: without it the cluster has no API server"
                      + (" and no etcd" if stacked(cluster) else "")
                      + ". Add another control plane first, or tear the whole cluster down with `kubeprov reset`")
    return RemovePlan(cluster, host, tuple(planes), stacked(cluster) and host.has(Role.CONTROL_PLANE))


def api(transport, plan: RemovePlan) -> Kubectl:
    """kubectl on the first control plane that stays whose own API server answers /readyz."""
    from provision.pki.kubeconfigs import local_url

    said = []
    for host in plan.api_hosts:
        kubectl = Kubectl(transport, host, kubeconfig=ADMIN_CONF, server=local_url(plan.cluster, host))
        try:
            ready, what = kubectl.ready()
        except KubeprovError as error:
            ready, what = False, str(error).removeprefix(f"{host.name}: ")
        if ready:
            return kubectl
        said.append(f"{host.name}: {what or 'no answer'}")
    raise Refused("no control plane that stays has an API server that answers (" + "; ".join(said) + "): "
                  f"node remove needs one to drain and delete {plan.host.name}")


def node_exists(kubectl: Kubectl, name: str) -> bool:
    result = kubectl.run("get", "node", name, "-o", "name", check=False, timeout=60)
    if result.ok:
        return True
    if "NotFound" in result.stderr or "not found" in result.stderr:
        return False
    raise KubeprovError(f"{kubectl.host.name}: kubectl get node {name} failed: {result.summary()}")


def pods_on(kubectl: Kubectl, name: str) -> list[str]:
    """namespace/name of the pods bound to the node."""
    listed = kubectl.run_json("get", "pods", "--all-namespaces", f"--field-selector=spec.nodeName={name}", "-o", "json")
    return [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in listed.get("items", [])]


def drain(kubectl: Kubectl, name: str, *, timeout: float, force: bool, gone: bool) -> list[str]:
    """cordon, then drain through evictions (PodDisruptionBudgets respected) within `timeout`;
    the lines kubectl printed. `gone`: the node's kubelet will never confirm a deletion."""
    kubectl.run("cordon", name, timeout=60)
    args = ["drain", name, "--ignore-daemonsets", "--delete-emptydir-data", f"--timeout={int(timeout)}s"]
    if force:
        args.append("--force")
    if gone:
        args.append("--skip-wait-for-delete-timeout=1")
    result = kubectl.run(*args, check=False, timeout=timeout + 60)
    if not result.ok:
        last = result.summary()
        raise KubeprovError(
            f"{name}: drain did not finish within {timeout:g} s ({last}); the node stays cordoned "
            f"(`kubectl uncordon {name}` undoes it). A PodDisruptionBudget that allows no eviction holds a drain "
            "until its pods can move elsewhere: scale it out or relax it, or give --timeout more"
            + ("" if force else "; pods no controller manages need --force (they are deleted, not moved)"))
    return [line.strip() for line in (result.stdout + "\n" + result.stderr).splitlines() if line.strip()]


def remove_node(transport, plan: RemovePlan, say: Say, *, timeout: float = DRAIN_TIMEOUT, dry_run: bool = False,
                force: bool = False, skip_reset: bool = False, parallel: int = 20,
                confirm: Callable[[], None] = lambda: None) -> None:
    """Take the node out (see the module's docstring); each step said as a line naming the host.
    `confirm` is called once every check has passed, before anything changes (it may raise)."""
    name = plan.host.name
    kubectl = api(transport, plan)
    say(kubectl.host.name, "API server answers: kubectl runs here", "ok")
    view: EtcdView | None = None
    if plan.leaves_etcd:
        view = check_etcd(transport, plan.cluster, [plan.host], parallel=parallel)
        say(name, f"etcd keeps a quorum without it ({len(view.healthy)} healthy of {len(view.members)} members now)", "ok")
    exists = node_exists(kubectl, name)
    if not skip_reset:
        try:
            transport.run(plan.host, "true", timeout=30)
        except KubeprovError as error:
            raise KubeprovError(
                f"{name}: cannot reach it ({str(error).removeprefix(name + ': ')}); node remove resets the host after "
                "draining it. If the machine is gone for good, --skip-reset removes its node and etcd member without it"
            ) from None
    if dry_run:
        if exists:
            pods = pods_on(kubectl, name)
            say(name, f"would cordon and drain the node ({len(pods)} pods on it; DaemonSet pods stay, "
                      f"PodDisruptionBudgets respected, within {timeout:g} s)", "ok")
        else:
            say(name, "no Node object: nothing to drain", "ok")
        if plan.host.has(Role.CONTROL_PLANE) and not skip_reset:
            say(name, f"would stop its API server and give the load balancers {LB_SETTLE:g} s to drop it", "ok")
        if plan.leaves_etcd:
            say(name, f"would remove its etcd member through {view.via.name}", "ok")
        if skip_reset:
            say(name, "would not touch the host (--skip-reset)", "ok")
        else:
            for line in teardown(transport, plan.reset_plan(), plan.host, apply=False):
                say(name, "would " + line, "ok")
        if exists:
            say(name, "would delete the Node", "ok")
        return
    confirm()
    if exists:
        lines = drain(kubectl, name, timeout=timeout, force=force, gone=skip_reset)
        evicted = [line for line in lines if line.startswith("pod/") and line.endswith(" evicted")]
        say(name, f"cordoned and drained ({len(evicted)} pods evicted)", "changed")
    else:
        say(name, "no Node object: nothing to drain", "ok")
    if plan.host.has(Role.CONTROL_PLANE) and not skip_reset:
        say(name, retire_api_server(transport, plan.cluster, plan.host), "changed")
    if plan.leaves_etcd:
        say(name, leave_etcd(transport, plan.cluster, plan.host, view.via), "changed")
    if skip_reset:
        say(name, "host not touched (--skip-reset)", "ok")
    else:
        say(name, "tearing down: kubelet, containers, mounts, files, interfaces, iptables", "ok")
        for line in teardown(transport, plan.reset_plan(), plan.host, apply=True):
            say(name, line, "changed")
    if exists:
        kubectl.run("delete", "node", name, "--ignore-not-found", timeout=120)
        say(name, "Node deleted", "changed")
