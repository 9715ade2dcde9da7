"""The last phase: what a user of the cluster will see, asked through the endpoint with admin.conf:
every node Ready, every control-plane pod Ready, a kube-proxy on every node, etcd healthy."""

from __future__ import annotations

import time
from pathlib import PurePosixPath

from provision.config.models import Cluster, EtcdTopology, Host
from provision.errors import KubeprovError
from provision.kube.kubectl import Kubectl
from provision.phases.context import UpContext
from provision.phases.etcd import external, run_etcd_health, wait_etcd_healthy


def _condition_ready(obj: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in obj["status"].get("conditions", []))


def expected_static_pods(cluster: Cluster, only: Host | None = None) -> list[str]:
    """The mirror pods every control plane (or just `only`) must show: its components, stacked
    etcd, the HA pods."""
    from provision.render.ha import render_ha

    names = []
    for host in ([only] if only else cluster.control_planes):
        components = ["kube-apiserver", "kube-controller-manager", "kube-scheduler"]
        if cluster.etcd.topology is EtcdTopology.STACKED:
            components.append("etcd")
        components += [PurePosixPath(p).stem for p in render_ha(cluster, host, None) if str(p).startswith("/etc/kubernetes/manifests/")]
        names += [f"{c}-{host.name}" for c in components]
    return sorted(names)


def run_verify(ctx: UpContext) -> None:
    from concurrent.futures import ThreadPoolExecutor

    kubectl = ctx.kubectl(local=False)  # admin.conf against the endpoint: what a user will use
    # Three questions, each its own round trip, asked at once: etcd's health on its hosts,
    # admin.conf's rights, and the nodes and pods (asked again until they are Ready).
    with ThreadPoolExecutor(2) as pool:
        etcd = pool.submit(run_etcd_health if external(ctx) else lambda c: wait_etcd_healthy(c, c.cluster.control_planes, timeout=30), ctx)
        admin = pool.submit(kubectl.run, "auth", "can-i", "*", "*", check=False)
        wait_nodes_and_pods(ctx, kubectl)
        can = admin.result()
        if can.stdout.strip() != "yes":
            raise KubeprovError(f"admin.conf cannot act as cluster admin (`kubectl auth can-i '*' '*'` says "
                                f"{can.stdout.strip() or can.summary()!r})")
        etcd.result()
    for h in ctx.cluster.nodes:
        ctx.say(h.name, "Ready")
    ctx.say("local", f"{len(expected_static_pods(ctx.cluster))} control-plane pods Ready, etcd healthy, admin.conf works: "
                     f"{ctx.store.kubeconfig_path('admin.conf', None)}")


def wait_nodes_and_pods(ctx: UpContext, kubectl: Kubectl) -> None:
    """Every node Ready, every control-plane pod and a kube-proxy per node Ready. A static pod
    whose mirror pod its kubelet has still not made gets a placeholder (provision/kube/mirror_pods.py;
    the kubelet phases place them earlier: phases/kubelet.py: nudge_mirror_pods)."""
    from provision.kube import mirror_pods

    # Rendered once, not per poll: each host's static pods (its HA manifests are rendered to name them).
    static_pods = [(host, expected_static_pods(ctx.cluster, host)) for host in ctx.cluster.control_planes]
    expected = sorted(name for _, names in static_pods for name in names)
    deadline = time.monotonic() + ctx.options.node_timeout
    placed: set[str] = set()
    while True:
        result = kubectl.run("get", "nodes,pods", "-n", "kube-system", "-o", "json", check=False)
        if not result.ok:
            raise KubeprovError(f"{kubectl.host.name}: kubectl get nodes,pods failed (exit {result.exit_code}): {result.summary()}")
        items = result.json("kubectl get nodes,pods -o json")["items"]
        ready = {n["metadata"]["name"] for n in items if n["kind"] == "Node" and _condition_ready(n)}
        pods = {p["metadata"]["name"]: p for p in items if p["kind"] == "Pod"}
        not_ready = [name for name in expected if name not in pods or not _condition_ready(pods[name])]
        # A Ready kube-proxy pod on every node: the controller manager and the scheduler are at
        # work (a static pod can be Ready while its controller manager waits for leadership).
        proxied = {p["spec"].get("nodeName") for name, p in pods.items() if name.startswith("kube-proxy-") and _condition_ready(p)}
        not_ready += [f"kube-proxy on {h.name}" for h in ctx.cluster.nodes if h.name not in proxied]
        missing = [h.name for h in ctx.cluster.nodes if h.name not in ready]
        if not missing and not not_ready:
            return
        registered = {n["metadata"]["name"] for n in items if n["kind"] == "Node"}
        for host, names in static_pods:
            absent = [name for name in names if name not in pods]
            if absent and host.name in registered:  # a kubelet makes no mirror pod before its Node exists
                mirror_pods.place(kubectl, ctx.cluster, host, absent)
                if set(absent) - placed:
                    ctx.say(host.name, mirror_pods.placed_line(absent), "changed")
                placed |= set(absent)
        if time.monotonic() > deadline:
            raise KubeprovError(f"not ready after {ctx.options.node_timeout:g} s: nodes {', '.join(missing) or 'ok'}; "
                                f"pods not Ready: {', '.join(not_ready) or 'none'}")
        time.sleep(1)
