"""The highly available API endpoint: kube-vip, or haproxy + keepalived, on the control planes,
and an optional local API load balancer on the workers. All of it runs as static pods, so the
kubelet starts it before (and without) the API server.

kube-vip (load balancer mode `kube-vip`)
    An ARP VIP that moves between control planes by leader election on a Lease
    (kube-system/plndr-cp-lock). kube-vip only moves the address: clients reach the API server
    of the leader directly, so the endpoint port must be the API server port. kube-vip talks to
    the local API server as `kubernetes:<port>` (a hostAlias to 127.0.0.1) with the kubeconfig
    mounted at /etc/kubernetes/admin.conf inside the pod.

    The ≥ 1.29 pitfall (kube-vip issue #684): admin.conf is in the group kubeadm:cluster-admins,
    which has no rights until the ClusterRoleBinding of that name exists, and that binding is
    created through the API that is only reachable once kube-vip holds the VIP. So on the FIRST
    control plane the pod mounts super-admin.conf (system:masters) while the cluster bootstraps.
    Once the binding exists, `up` swaps in `render_kube_vip_after_bootstrap(...)` for that host
    (same pod, admin.conf mounted) and the kubelet restarts the pod; super-admin.conf then has no
    user left on the node. Joining control planes only start after the binding exists, so they
    use admin.conf from the start. Before 1.29 admin.conf is system:masters: admin.conf everywhere.

haproxy + keepalived (load balancer mode `haproxy-keepalived`)
    keepalived holds the VIP (VRRP, unicast between the control planes, priority by host order,
    FAULT - and so the VIP moves - when the local haproxy cannot serve: it is down, or it has no
    API server left that answers /readyz); haproxy on every control plane forwards endpoint port
    → every API server, checking /readyz over TLS. keepalived does not track the local API
    server: while it restarts (a roll, an upgrade), the VIP holder's haproxy serves through the
    others, and moving the VIP would only cut the connections it carries.
    Port clash: when the endpoint port equals apiServerPort, haproxy and the API server want the
    same port on the same host. haproxy therefore binds the VIP only (`bind VIP:port transparent`:
    haproxy then sets IP_TRANSPARENT, falling back to IP_FREEBIND, which needs no privilege, so
    backups bind an address they do not hold yet), and the API server must
    then bind its advertise address instead of 0.0.0.0 - `apiserver_bind_address` says so to
    the API server renderer. With different ports nothing clashes and the API server keeps its
    defaults; haproxy still binds the VIP only, so it never answers on the node's own address.

Worker local load balancer (loadBalancer.workerLocalLB)
    haproxy on 127.0.0.1:<workerLocalLBPort> → every control plane; workers' kubelet.conf points
    there (provision/pki/kubeconfigs.py), and the API server certificate carries 127.0.0.1.

Both health checks ask /readyz anonymously, which kubeadm's defaults allow
(system:public-info-viewer); with --anonymous-auth=false they would fail.
"""

from __future__ import annotations

import ipaddress
from pathlib import PurePosixPath


from provision import yamltext
from provision.config.models import Cluster, Host, LoadBalancerMode, Role, is_ip
from provision.pki.store import Material
from provision.render.templates import render_text
from provision.render.tree import File, Tree

# Pinned images. Bump deliberately: the manifests below follow these versions' interfaces.
KUBE_VIP_IMAGE = "ghcr.io/kube-vip/kube-vip:v0.8.9"  # env-var configuration, `manager` command
HAPROXY_IMAGE = "docker.io/library/haproxy:2.8.5-alpine"  # official image; reads /usr/local/etc/haproxy/haproxy.cfg
KEEPALIVED_IMAGE = "docker.io/osixia/keepalived:2.0.20"  # as kubeadm's HA notes use; ships curl

MANIFESTS = PurePosixPath("/etc/kubernetes/manifests")
KUBE_VIP_MANIFEST = MANIFESTS / "kube-vip.yaml"
HAPROXY_MANIFEST = MANIFESTS / "haproxy.yaml"
KEEPALIVED_MANIFEST = MANIFESTS / "keepalived.yaml"
HAPROXY_CFG = PurePosixPath("/etc/haproxy/haproxy.cfg")
KEEPALIVED_CONF = PurePosixPath("/etc/keepalived/keepalived.conf")
ADMIN_CONF = "/etc/kubernetes/admin.conf"
SUPER_ADMIN_CONF = "/etc/kubernetes/super-admin.conf"

# haproxy answers its own liveness probe here (monitor-uri); nothing of Kubernetes uses 8081.
HAPROXY_HEALTH_PORT = 8081
# …and here whether it can serve (an API server answering /readyz behind it): keepalived's check.
HAPROXY_SERVING_PORT = 8082
KUBE_VIP_LEASE = "plndr-cp-lock"


# --- what the endpoint looks like --------------------------------------------------------------


def _vip(cluster: Cluster) -> tuple[str, int]:
    """The VIP and its port: controlPlaneEndpoint, which the model (config/models.py:
    _check_load_balancer) requires for either mode, as an IP for haproxy-keepalived and on
    apiServerPort for kube-vip."""
    return cluster.endpoint


def _host_prefix(address: str) -> int:
    return 32 if ipaddress.ip_address(address).version == 4 else 128


def apiserver_bind_address(cluster: Cluster, host: Host) -> str | None:
    """The --bind-address the API server needs on `host`, or None to keep its default (0.0.0.0).

    Only haproxy-keepalived with endpoint port == apiServerPort needs one: haproxy then owns
    VIP:port on the same host, and a wildcard API server socket on that port would clash.
    """
    if not host.has(Role.CONTROL_PLANE) or cluster.load_balancer_mode is not LoadBalancerMode.HAPROXY_KEEPALIVED:
        return None
    _, port = cluster.endpoint
    return host.advertise_address if port == cluster.api_server_port else None


# --- kube-vip ----------------------------------------------------------------------------------


def _kube_vip_kubeconfig(cluster: Cluster, host: Host, bootstrapping: bool) -> str:
    first = host.name == cluster.first_control_plane.name
    return SUPER_ADMIN_CONF if bootstrapping and first and cluster.minor >= 29 else ADMIN_CONF


def kube_vip_pod(cluster: Cluster, host: Host, *, bootstrapping: bool = True) -> dict:
    vip, port = _vip(cluster)
    env = {
        "vip_arp": "true",
        "port": str(port),
        "vip_interface": cluster.load_balancer.interface,
        "vip_subnet": str(_host_prefix(vip)) if is_ip(vip) else "32",
        "dns_mode": "first",
        "cp_enable": "true",
        "cp_namespace": "kube-system",
        "svc_enable": "false",
        "vip_leaderelection": "true",
        "vip_leasename": KUBE_VIP_LEASE,
        "vip_leaseduration": "5",
        "vip_renewdeadline": "3",
        "vip_retryperiod": "1",
        "address": vip,
    }
    container = {
        "name": "kube-vip",
        "image": KUBE_VIP_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "args": ["manager"],
        "env": [{"name": "vip_nodename", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
        + [{"name": name, "value": value} for name, value in env.items()],
        "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}},
        # kube-vip reads this path; which file backs it is the bootstrap question above.
        "volumeMounts": [{"name": "kubeconfig", "mountPath": ADMIN_CONF, "readOnly": True}],
    }
    return _static_pod(
        "kube-vip",
        [container],
        [{"name": "kubeconfig", "hostPath": {"path": _kube_vip_kubeconfig(cluster, host, bootstrapping), "type": "File"}}],
        host_aliases=[{"ip": "127.0.0.1", "hostnames": ["kubernetes"]}],
    )


def render_kube_vip_after_bootstrap(cluster: Cluster, host: Host) -> Tree:
    """kube-vip's manifest once kubeadm:cluster-admins is bound: admin.conf on every host."""
    if not host.has(Role.CONTROL_PLANE) or cluster.load_balancer_mode is not LoadBalancerMode.KUBE_VIP:
        return {}
    return {KUBE_VIP_MANIFEST: File(_yaml(kube_vip_pod(cluster, host, bootstrapping=False)))}


# --- haproxy + keepalived ----------------------------------------------------------------------


def _address_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def haproxy_cfg(cluster: Cluster, bind: str, *, foreign: bool) -> str:
    """TCP pass-through to every control plane's API server, checked on /readyz over TLS.
    `foreign`: `bind` is an address this host may not hold (the VIP on a backup)."""
    return render_text(
        "haproxy.cfg.j2",
        health_port=HAPROXY_HEALTH_PORT,
        serving_port=HAPROXY_SERVING_PORT,
        bind=bind,
        transparent=foreign,
        servers=[(cp.name, _address_port(cp.advertise_address, cluster.api_server_port)) for cp in cluster.control_planes],
    )


def keepalived_conf(cluster: Cluster, host: Host) -> str:
    vip, _ = _vip(cluster)
    cps = cluster.control_planes
    index = [cp.name for cp in cps].index(host.name)
    lb = cluster.load_balancer
    return render_text(
        "keepalived.conf.j2",
        router_id=host.name,
        serving_url=f"http://127.0.0.1:{HAPROXY_SERVING_PORT}/serving",
        interface=lb.interface,
        virtual_router_id=lb.virtual_router_id,
        priority=150 - index,  # host order: the first control plane is preferred
        source_address=host.advertise_address,
        peers=[cp.advertise_address for cp in cps if cp.name != host.name],
        vip=vip,
        vip_prefix=_host_prefix(vip),
    )


def haproxy_pod(tier: str = "control-plane") -> dict:
    container = {
        "name": "haproxy",
        "image": HAPROXY_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "livenessProbe": {
            "httpGet": {"host": "127.0.0.1", "path": "/healthz", "port": HAPROXY_HEALTH_PORT, "scheme": "HTTP"},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "resources": {"requests": {"cpu": "25m", "memory": "32Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "config", "mountPath": "/usr/local/etc/haproxy/haproxy.cfg", "readOnly": True}],
    }
    volumes = [{"name": "config", "hostPath": {"path": str(HAPROXY_CFG), "type": "File"}}]
    return _static_pod("haproxy", [container], volumes, tier=tier)


def keepalived_pod() -> dict:
    container = {
        "name": "keepalived",
        "image": KEEPALIVED_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
        "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_BROADCAST", "NET_RAW"]}},
        "volumeMounts": [{"name": "config", "mountPath": "/usr/local/etc/keepalived/keepalived.conf", "readOnly": True}],
    }
    volumes = [{"name": "config", "hostPath": {"path": str(KEEPALIVED_CONF), "type": "File"}}]
    return _static_pod("keepalived", [container], volumes)


# --- the host renderer -------------------------------------------------------------------------


def render_ha(cluster: Cluster, host: Host, material: Material) -> Tree:
    tree: Tree = {}
    mode = cluster.load_balancer_mode
    if host.has(Role.CONTROL_PLANE):
        if mode is LoadBalancerMode.KUBE_VIP:
            tree[KUBE_VIP_MANIFEST] = File(_yaml(kube_vip_pod(cluster, host, bootstrapping=True)))
        elif mode is LoadBalancerMode.HAPROXY_KEEPALIVED:
            vip, port = _vip(cluster)
            tree[HAPROXY_CFG] = File(haproxy_cfg(cluster, _address_port(vip, port), foreign=True).encode())
            tree[KEEPALIVED_CONF] = File(keepalived_conf(cluster, host).encode())
            tree[HAPROXY_MANIFEST] = File(_yaml(haproxy_pod()))
            tree[KEEPALIVED_MANIFEST] = File(_yaml(keepalived_pod()))
    elif host in cluster.workers and cluster.load_balancer.worker_local_lb:
        bind = _address_port("127.0.0.1", cluster.load_balancer.worker_local_lb_port)
        tree[HAPROXY_CFG] = File(haproxy_cfg(cluster, bind, foreign=False).encode())
        tree[HAPROXY_MANIFEST] = File(_yaml(haproxy_pod(tier="node")))
    return tree


# --- shared shape ------------------------------------------------------------------------------


def _static_pod(
    name: str, containers: list[dict], volumes: list[dict], *, host_aliases: list[dict] | None = None, tier: str = "control-plane"
) -> dict:
    spec: dict = {"containers": containers}
    if host_aliases:
        spec["hostAliases"] = host_aliases
    spec.update(
        {
            "hostNetwork": True,
            "priority": 2000001000,  # system-node-critical, as kubeadm writes it for static pods
            "priorityClassName": "system-node-critical",
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "volumes": volumes,
        }
    )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "labels": {"component": name, "tier": tier},
            "name": name,
            "namespace": "kube-system",
        },
        "spec": spec,
    }


def _yaml(doc: dict) -> bytes:
    return yamltext.dump(doc).encode()
