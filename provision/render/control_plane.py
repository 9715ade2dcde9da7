"""kube-apiserver, kube-controller-manager and kube-scheduler static Pods, as kubeadm writes them
(cmd/kubeadm/app/phases/controlplane/manifests.go and volumes.go), plus kubeprov's hardening
options. Every flag is in a dict of kubeadm's base values; the cluster file's extraArgs replace
values by key. Their flag sets did not change between Kubernetes 1.28 and 1.35; what moves with
the version (etcd) lives in etcd.py. docs/flags.md explains each flag.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from provision.config.models import CNI, Cluster, EtcdTopology, Host, Role
from provision.pki.store import Material
from provision.render import flags, staticpod
from provision.render.etcd import CLIENT_PORT, client_url
from provision.render.ha import apiserver_bind_address
from provision.render.security import apiserver_hardening
from provision.render.staticpod import Mount, same_path
from provision.render.tree import Tree

KUBERNETES_DIR = PurePosixPath("/etc/kubernetes")
PKI = KUBERNETES_DIR / "pki"
KCM_PORT, SCHEDULER_PORT = 10257, 10259
FLEXVOLUME_DIR = "/usr/libexec/kubernetes/kubelet-plugins/volume/exec"

# kubeadm mounts the host's CA bundle directories that exist; these are the ones a Debian or
# Ubuntu host has (ca-certificates). /etc/pki (RHEL) is absent there, so it is not mounted.
CA_DIRS = {
    "ca-certs": "/etc/ssl/certs",
    "etc-ca-certificates": "/etc/ca-certificates",
    "usr-local-share-ca-certificates": "/usr/local/share/ca-certificates",
    "usr-share-ca-certificates": "/usr/share/ca-certificates",
}


def pki(name: str) -> str:
    return str(PKI / name)


def image(cluster: Cluster, component: str) -> str:
    return f"{cluster.image_repository}/{component}:{cluster.kubernetes_version}"


def _ca_mounts() -> list[Mount]:
    return [same_path(name, path, True, "DirectoryOrCreate") for name, path in CA_DIRS.items()]


def _k8s_certs() -> Mount:
    return same_path("k8s-certs", str(PKI), True, "DirectoryOrCreate")


def _kubeconfig(file: str) -> Mount:
    return same_path("kubeconfig", str(KUBERNETES_DIR / file), True, "FileOrCreate")


# --- kube-apiserver ---------------------------------------------------------------------------


def apiserver_flags(cluster: Cluster, host: Host, material: Material) -> dict[str, str]:
    """kubeadm's base flags plus kubeprov's defaults for this host, before extraArgs."""
    extra = cluster.control_plane.api_server.extra_args
    base = {
        "advertise-address": host.advertise_address,
        "allow-privileged": "true",
        "authorization-mode": "Node,RBAC",
        "client-ca-file": pki("ca.crt"),
        "enable-admission-plugins": "NodeRestriction",
        "enable-bootstrap-token-auth": "true",
        "etcd-cafile": pki("etcd/ca.crt"),
        "etcd-certfile": pki("apiserver-etcd-client.crt"),
        "etcd-keyfile": pki("apiserver-etcd-client.key"),
        "etcd-servers": etcd_servers(cluster, host),
        "kubelet-client-certificate": pki("apiserver-kubelet-client.crt"),
        "kubelet-client-key": pki("apiserver-kubelet-client.key"),
        "kubelet-preferred-address-types": "InternalIP,ExternalIP,Hostname",
        "proxy-client-cert-file": pki("front-proxy-client.crt"),
        "proxy-client-key-file": pki("front-proxy-client.key"),
        "requestheader-allowed-names": "front-proxy-client",
        "requestheader-client-ca-file": pki("front-proxy-ca.crt"),
        "requestheader-extra-headers-prefix": "X-Remote-Extra-",
        "requestheader-group-headers": "X-Remote-Group",
        "requestheader-username-headers": "X-Remote-User",
        "secure-port": str(cluster.api_server_port),
        "service-account-issuer": f"https://kubernetes.default.svc.{cluster.networking.dns_domain}",
        "service-account-key-file": pki("sa.pub"),
        "service-account-signing-key-file": pki("sa.key"),
        "service-cluster-ip-range": str(cluster.networking.service_subnet),
        "tls-cert-file": pki("apiserver.crt"),
        "tls-private-key-file": pki("apiserver.key"),
    }
    if "authorization-config" in extra:
        # kubeadm: a structured authorization config excludes --authorization-mode.
        del base["authorization-mode"]
    if cluster.kubelet.server_tls_bootstrap:
        # Kubelets then serve certificates signed by the cluster CA, so the API server can
        # verify them (CIS 1.2.5); with self-signed kubelet certificates it could not.
        base["kubelet-certificate-authority"] = pki("ca.crt")
    if not cluster.control_plane.profiling:
        base["profiling"] = "false"
    bind = apiserver_bind_address(cluster, host)
    if bind is not None:
        # haproxy owns VIP:port on this host; the API server must not hold the wildcard socket.
        base["bind-address"] = bind
    base.update(apiserver_hardening(cluster, material).flags)
    return base


def etcd_servers(cluster: Cluster, host: Host) -> str:
    """Stacked: the local member on loopback (or what etcd.extraArgs advertises, as kubeadm
    does); external: every member's client URL."""
    if cluster.etcd.topology is EtcdTopology.EXTERNAL:
        return ",".join(client_url(member.advertise_address) for member in cluster.etcd_members)
    advertised = cluster.etcd.extra_args.get("advertise-client-urls")
    if advertised:
        return advertised
    return client_url(staticpod.loopback_for(host.advertise_address), CLIENT_PORT)


def apiserver_pod(cluster: Cluster, host: Host, material: Material) -> dict:
    spec = cluster.control_plane.api_server
    hardening = apiserver_hardening(cluster, material)
    mounts = staticpod.by_name([_k8s_certs(), *_ca_mounts()], hardening.mounts, staticpod.extra_mounts(spec.extra_volumes))
    probe_host = staticpod.probe_host(host.advertise_address)
    port = cluster.api_server_port
    return staticpod.component_pod(
        "kube-apiserver",
        image(cluster, "kube-apiserver"),
        flags.command("kube-apiserver", apiserver_flags(cluster, host, material), spec.extra_args),
        mounts,
        probes={
            "livenessProbe": staticpod.liveness(probe_host, "/livez", port, "HTTPS"),
            "readinessProbe": staticpod.readiness(probe_host, "/readyz", port, "HTTPS"),
            "startupProbe": staticpod.startup(probe_host, "/livez", port, "HTTPS"),
        },
        requests={"cpu": "250m"},
        annotations={
            "kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint": staticpod.join_host_port(
                host.advertise_address, port
            )
        },
    )


# --- kube-controller-manager ------------------------------------------------------------------


def controller_manager_flags(cluster: Cluster, material: Material) -> dict[str, str]:
    kubeconfig = str(KUBERNETES_DIR / "controller-manager.conf")
    external_ca = material.cas["ca"][1] is None
    base = {
        "authentication-kubeconfig": kubeconfig,
        "authorization-kubeconfig": kubeconfig,
        "bind-address": "127.0.0.1",
        "client-ca-file": pki("ca.crt"),
        "cluster-name": cluster.name,
        # With an external CA (no ca.key here) kubeadm passes empty paths so the CSR signer
        # stays off instead of failing on a missing key.
        # While `certs rotate-ca ca` makes ca.crt a bundle, the signer gets the signing CA alone
        # (it refuses a file of more than one certificate).
        "cluster-signing-cert-file": "" if external_ca else pki("ca-signing.crt" if "ca" in material.signing else "ca.crt"),
        "cluster-signing-key-file": "" if external_ca else pki("ca.key"),
        "controllers": "*,bootstrapsigner,tokencleaner",
        "kubeconfig": kubeconfig,
        "leader-elect": "true",
        "requestheader-client-ca-file": pki("front-proxy-ca.crt"),
        "root-ca-file": pki("ca.crt"),
        "service-account-private-key-file": pki("sa.key"),
        "service-cluster-ip-range": str(cluster.networking.service_subnet),
        "use-service-account-credentials": "true",
    }
    if cluster.cni is CNI.BRIDGE:
        # The bridge CNI renders each node's pod CIDR statically; a second allocator in the
        # controller-manager would hand out different ranges.
        base["allocate-node-cidrs"] = "false"
    else:
        base["allocate-node-cidrs"] = "true"
        base["cluster-cidr"] = str(cluster.networking.pod_subnet)
    if not cluster.control_plane.profiling:
        base["profiling"] = "false"
    return base


def controller_manager_pod(cluster: Cluster, material: Material) -> dict:
    spec = cluster.control_plane.controller_manager
    mounts = staticpod.by_name(
        [
            _k8s_certs(),
            *_ca_mounts(),
            _kubeconfig("controller-manager.conf"),
            # Read-write: flexvolume drivers talk to their backends through sockets in there.
            same_path("flexvolume-dir", FLEXVOLUME_DIR, False, "DirectoryOrCreate"),
        ],
        staticpod.extra_mounts(spec.extra_volumes),
    )
    probe_host = staticpod.probe_host(spec.extra_args.get("bind-address", "127.0.0.1"))
    return staticpod.component_pod(
        "kube-controller-manager",
        image(cluster, "kube-controller-manager"),
        flags.command("kube-controller-manager", controller_manager_flags(cluster, material), spec.extra_args),
        mounts,
        probes={
            "livenessProbe": staticpod.liveness(probe_host, "/healthz", KCM_PORT, "HTTPS"),
            "startupProbe": staticpod.startup(probe_host, "/healthz", KCM_PORT, "HTTPS"),
        },
        requests={"cpu": "200m"},
    )


# --- kube-scheduler ---------------------------------------------------------------------------


def scheduler_flags(cluster: Cluster) -> dict[str, str]:
    kubeconfig = str(KUBERNETES_DIR / "scheduler.conf")
    base = {
        "authentication-kubeconfig": kubeconfig,
        "authorization-kubeconfig": kubeconfig,
        "bind-address": "127.0.0.1",
        "kubeconfig": kubeconfig,
        "leader-elect": "true",
    }
    if not cluster.control_plane.profiling:
        base["profiling"] = "false"
    return base


def scheduler_pod(cluster: Cluster) -> dict:
    spec = cluster.control_plane.scheduler
    mounts = staticpod.by_name([_kubeconfig("scheduler.conf")], staticpod.extra_mounts(spec.extra_volumes))
    probe_host = staticpod.probe_host(spec.extra_args.get("bind-address", "127.0.0.1"))
    return staticpod.component_pod(
        "kube-scheduler",
        image(cluster, "kube-scheduler"),
        flags.command("kube-scheduler", scheduler_flags(cluster), spec.extra_args),
        mounts,
        probes={
            "livenessProbe": staticpod.liveness(probe_host, "/healthz", SCHEDULER_PORT, "HTTPS"),
            "startupProbe": staticpod.startup(probe_host, "/healthz", SCHEDULER_PORT, "HTTPS"),
        },
        requests={"cpu": "100m"},
    )


# --- the host renderer ------------------------------------------------------------------------


COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")


def after_local_etcd_votes(cluster: Cluster, host: Host) -> set:
    """The manifests a joining control plane of a stacked etcd gets only once its etcd member
    votes: the API server reads its local member, which as a learner serves it nothing, so started
    earlier it crash-loops into the kubelet's back-off (a minute and more), and the controller
    manager and scheduler behind it. The first control plane's member votes from the start."""
    if cluster.etcd.topology is not EtcdTopology.STACKED or host not in cluster.control_planes[1:]:
        return set()
    return {staticpod.manifest_path(name) for name in COMPONENTS}


def render_control_plane(cluster: Cluster, host: Host, material: Material) -> Tree:
    if not host.has(Role.CONTROL_PLANE):
        return {}
    tree: Tree = {
        staticpod.manifest_path(COMPONENTS[0]): staticpod.manifest(apiserver_pod(cluster, host, material)),
        staticpod.manifest_path(COMPONENTS[1]): staticpod.manifest(controller_manager_pod(cluster, material)),
        staticpod.manifest_path(COMPONENTS[2]): staticpod.manifest(scheduler_pod(cluster)),
    }
    tree.update(apiserver_hardening(cluster, material).files)
    return tree

