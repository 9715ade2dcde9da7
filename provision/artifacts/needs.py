"""What a cluster needs on its hosts, whatever the source: the air-gap manifest's content.

Images are read from the renderers' own output, never typed a second time: the cluster objects
that carry pods (kube-proxy, CoreDNS, the CNI) and each host's static pods (etcd, kube-vip,
haproxy, keepalived — none of these renderers needs PKI material), plus the control-plane
images by the same function their pods use, and the sandbox image containerd and the kubelet
are configured with. A test renders whole clusters and checks this list against every `image:`.
"""

from __future__ import annotations

from dataclasses import dataclass


from provision import yamltext
from provision.artifacts import pins
from provision.config.models import Cluster, EtcdTopology, Host, Role
from provision.render.addons.coredns import coredns_objects
from provision.render.addons.kube_proxy import kube_proxy_objects
from provision.render.cni import calico, cni_objects
from provision.render.cni.flannel import FLANNEL_CNI_PLUGIN_IMAGE, FLANNEL_IMAGE
from provision.render.containerd import BINARY as CONTAINERD_BINARY, CNI_BIN_DIR
from provision.render.control_plane import image as control_plane_image
from provision.render.etcd import ETCD_BINARY, render_etcd
from provision.render.ha import HAPROXY_IMAGE, KEEPALIVED_IMAGE, KUBE_VIP_IMAGE, render_ha
from provision.render.kubelet import pause_image

# Where binaries land on a host: where Debian's and pkgs.k8s.io's packages put them, so the
# rendered units (ExecStart=/usr/bin/kubelet, /usr/bin/etcd) hold whatever the source.
BIN = "/usr/bin"
CONTROL_PLANE_COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
# The plugins a node needs in CNI_BIN_DIR: the bridge CNI's conflist (bridge, host-local,
# portmap), flannel's delegates (bridge, host-local, portmap) and containerd's loopback.
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")
# Images the renderers name only in some clusters (a load balancer, kube-vip, a CNI other than the
# bridge). A bundle made for several clusters may carry them; a cluster that uses none of them
# needs them on no host, unlike an image no renderer names (an operator's workload).
OPTIONAL_IMAGES = (KUBE_VIP_IMAGE, HAPROXY_IMAGE, KEEPALIVED_IMAGE, FLANNEL_IMAGE, FLANNEL_CNI_PLUGIN_IMAGE,
                   calico.CNI_IMAGE, calico.NODE_IMAGE, calico.KUBE_CONTROLLERS_IMAGE)


@dataclass(frozen=True)
class Component:
    """A piece of node software: the files it installs (name → path on the host) and who needs it."""

    name: str
    version: str
    files: dict[str, str]
    hosts: tuple[str, ...]
    when: str = ""  # the setting that makes a cluster need it; empty: every cluster
    optional: bool = False  # a bundle may lack it: prepare then installs none (it is a tool, nothing runs on it)


@dataclass(frozen=True)
class ImageNeed:
    ref: str  # exactly as the manifests write it
    hosts: tuple[str, ...]  # the nodes that may run it
    when: str = ""


def _names(hosts: list[Host]) -> tuple[str, ...]:
    return tuple(h.name for h in hosts)


def components(cluster: Cluster) -> list[Component]:
    nodes, cps = _names(cluster.nodes), _names(cluster.control_planes)
    found = [
        Component("kubelet", cluster.kubernetes_version, {"kubelet": f"{BIN}/kubelet"}, nodes),
        Component("kubectl", cluster.kubernetes_version, {"kubectl": f"{BIN}/kubectl"}, cps),
        Component("crictl", pins.CRICTL[cluster.minor], {"crictl": f"{BIN}/crictl"}, nodes, optional=True),
        Component(
            "containerd", pins.CONTAINERD,
            # ctr: the images role imports the bundle's tarballs with it
            {"containerd": CONTAINERD_BINARY, "containerd-shim-runc-v2": f"{BIN}/containerd-shim-runc-v2", "ctr": f"{BIN}/ctr"},
            nodes,
        ),
        Component("runc", pins.RUNC, {"runc": "/usr/sbin/runc"}, nodes),
        Component("cni-plugins", pins.CNI_PLUGINS, {p: f"{CNI_BIN_DIR}/{p}" for p in CNI_PLUGINS}, nodes),
    ]
    if cluster.etcd.topology is EtcdTopology.EXTERNAL:
        found.append(
            Component(
                "etcd", pins.etcd(cluster.minor), {"etcd": ETCD_BINARY, "etcdctl": f"{BIN}/etcdctl"},
                _names(cluster.etcd_members), when="etcd.topology=external",
            )
        )
    return found


def images_in(obj) -> list[str]:
    """Every container image an object (or list of them) refers to, in order."""
    found: list[str] = []
    if isinstance(obj, dict):
        for key in ("initContainers", "containers", "ephemeralContainers"):
            for container in obj.get(key) or []:
                if isinstance(container, dict) and isinstance(container.get("image"), str):
                    found.append(container["image"])
        for key, value in obj.items():
            if key not in ("initContainers", "containers", "ephemeralContainers"):
                found += images_in(value)
    elif isinstance(obj, list):
        for item in obj:
            found += images_in(item)
    return found


def _static_pod_images(cluster: Cluster, host: Host) -> list[tuple[str, str]]:
    """(image, why) of the static pods rendered for this host."""
    found: list[tuple[str, str]] = []
    if host.has(Role.CONTROL_PLANE):
        found += [(control_plane_image(cluster, c), "") for c in CONTROL_PLANE_COMPONENTS]
    for renderer, why in ((render_etcd, "etcd.topology=stacked"), (render_ha, f"loadBalancer {cluster.load_balancer_mode.value}")):
        for path, file in renderer(cluster, host, None).items():
            if path.suffix == ".yaml" and path.parent.name == "manifests":
                found += [(ref, why) for ref in images_in(yamltext.load(file.content))]
    return found


def images(cluster: Cluster) -> list[ImageNeed]:
    """Every image the cluster's hosts run, with the hosts that need it (sorted by reference)."""
    nodes = _names(cluster.nodes)
    hosts_of: dict[str, set[str]] = {}
    why_of: dict[str, str] = {}

    def add(ref: str, hosts, why: str = "") -> None:
        hosts_of.setdefault(ref, set()).update(hosts)
        why_of.setdefault(ref, why)

    add(pause_image(cluster), nodes)
    for objects, why in (
        (kube_proxy_objects(cluster), ""),
        (coredns_objects(cluster), ""),
        (cni_objects(cluster), f"cni={cluster.cni.value}"),
    ):
        for ref in images_in(objects):
            add(ref, nodes, why)  # DaemonSets run everywhere; a Deployment's pods may land on any node
    for host in cluster.hosts:
        for ref, why in _static_pod_images(cluster, host):
            add(ref, [host.name], why)
    order = {h.name: i for i, h in enumerate(cluster.hosts)}
    return [
        ImageNeed(ref, tuple(sorted(hosts_of[ref], key=order.__getitem__)), why_of[ref]) for ref in sorted(hosts_of)
    ]
