"""`kubeprov upgrade plan`: what an upgrade to a version would change, read from the running cluster.

The running versions come from the cluster itself (each Node's kubelet, each control plane's
static pods, kube-proxy's image), the same way kubeadm's own `upgrade plan` reads them; the
changes are what `up` would do with kubernetesVersion set to the target: the same renderers,
facts and diff (provision/phases/files.py: pending), so the plan names each file per host.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from provision.config.models import Cluster
from provision.errors import KubeprovError
from provision.upgrade.skew import Running, Version, etcd_target, shown, skew_problems, upgrade_problems, version

COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")


@dataclass
class Plan:
    current: Running
    target: Version
    problems: list[str]  # why this upgrade cannot be applied (empty: it can)
    skew: list[str]  # where the running cluster is outside the skew policy now
    components: list[dict] = field(default_factory=list)  # {"component", "host", "current", "target"}
    files: dict[str, list[str]] = field(default_factory=dict)  # host → "replace /etc/…" lines
    nodes: dict[str, str] = field(default_factory=dict)  # host → what prepare would do there
    objects: list[str] = field(default_factory=list)  # cluster objects an apply would change ("DaemonSet/kube-system/kube-proxy")

    def as_json(self) -> dict:
        return {"target": shown(self.target), "allowed": not self.problems, "problems": self.problems, "skew": self.skew,
                "components": self.components, "files": self.files, "nodes": self.nodes, "objects": self.objects}


def _tag(image: str) -> str:
    return image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""


def read_running(listing: dict) -> Running:
    """Versions from `kubectl get nodes,pods -n kube-system -o json`."""
    kubelets, proxies, by_component = {}, {}, {c: {} for c in COMPONENTS}
    etcd = None
    for item in listing["items"]:
        if item["kind"] == "Node":
            info = item["status"].get("nodeInfo", {})
            if info.get("kubeletVersion"):
                kubelets[item["metadata"]["name"]] = version(info["kubeletVersion"])
            continue
        node = item["spec"].get("nodeName", "")
        for container in item["spec"].get("containers", []):
            tag = _tag(container.get("image", ""))
            name = container.get("name")
            if name in by_component and tag.startswith("v"):
                by_component[name][node] = version(tag)
            elif name == "kube-proxy" and tag.startswith("v"):
                proxies[node] = version(tag)
            elif name == "etcd" and tag:
                etcd = tag
    return Running(apiservers=by_component["kube-apiserver"], kubelets=kubelets,
                   controller_managers=by_component["kube-controller-manager"],
                   schedulers=by_component["kube-scheduler"], kube_proxies=proxies, etcd=etcd)


def plan(ctx, target_version: str) -> Plan:
    """`ctx`: an UpContext of the cluster as it runs (its PKI, its transport)."""
    from provision.phases.context import UpContext
    from provision.phases.files import desired_tree
    from provision.phases.writer import pending
    from provision.kube.live import identity
    from provision.phases.nodes import applied_states
    from provision.phases.objects import live_objects, object_documents

    target = version(target_version)
    listing = ctx.kubectl(local=False).run("get", "nodes,pods", "-n", "kube-system", "-o", "json")
    current = read_running(listing.json("kubectl get nodes,pods -n kube-system -o json"))
    result = Plan(current, target, upgrade_problems(current, target), skew_problems(current))
    for component, versions in (("kube-apiserver", current.apiservers), ("kube-controller-manager", current.controller_managers),
                                ("kube-scheduler", current.schedulers), ("kubelet", current.kubelets),
                                ("kube-proxy", current.kube_proxies)):
        for host, v in sorted(versions.items()):
            result.components.append({"component": component, "host": host, "current": shown(v), "target": shown(target)})
    if current.etcd and ctx.cluster.etcd.topology.value == "stacked":
        result.components.append({"component": "etcd", "host": "(stacked)", "current": current.etcd,
                                  "target": etcd_target(current.etcd, target)})
    if result.problems:
        return result
    upgraded: Cluster = ctx.cluster.model_copy(update={"kubernetes_version": shown(target)})
    after = UpContext(upgraded, ctx.options, ctx.transport)
    for host in upgraded.hosts:
        verbs = {"created": "create", "content": "replace", "mode": "chmod/chown"}
        result.files[host.name] = [f"{verbs[c.what]} {c.path}" for c in pending(after, host, desired_tree(after, host))]
    result.objects = ["/".join(part for part in identity(d) if part) for d in live_objects(after).stale(object_documents(after))]
    try:
        for state in applied_states(after, upgraded.hosts):
            result.nodes[state.host] = "has this exact state" if state.current else f"prepare: {state.reason}"
    except KubeprovError as exc:  # e.g. an artifact source without the target version
        result.nodes = {h.name: f"prepare cannot plan it: {exc}" for h in upgraded.hosts}
    return result
