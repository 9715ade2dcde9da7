"""The cluster objects `up` applies once the API answers, as `kubeadm init` creates them.

    kubeadm-config.yaml  kube-system/kubeadm-config: the ClusterConfiguration, so a real `kubeadm`
                         (upgrade, join, certs) can later operate the cluster; + its read Role
    kubelet-config.yaml  kube-system/kubelet-config: the KubeletConfiguration every node runs
    cluster-info.yaml    kube-public/cluster-info: CA + endpoint for token discovery; readable
                         by anonymous clients
    kube-proxy.yaml      addons/kube_proxy.py
    coredns.yaml         addons/coredns.py

ClusterConfiguration is written as kubeadm.k8s.io/v1beta3 before Kubernetes 1.31 and v1beta4 from
1.31, the version each kubeadm writes itself; the two differ in the shape of extraArgs (a map in
v1beta3, a list of {name, value} in v1beta4) and in a few fields (see `cluster_configuration`).
"""

from __future__ import annotations

import base64

from provision.config.models import CNI, Cluster, Component, EtcdTopology, is_ip
from provision.pki.certlist import CA_BY_NAME, CERTS
from provision.pki.kubeconfigs import endpoint_url, server_url
from provision.pki.store import Material
from provision.render.addons import k8s
from provision.render.addons.coredns import coredns_objects
from provision.render.addons.kube_proxy import kube_proxy_objects
from provision.render.kubelet import dump_yaml, kubelet_configuration
from provision.render.pki_files import PKI_DIR
from provision.render.security import apiserver_hardening
from provision.render.staticpod import Mount, extra_mounts

KUBEADM_API = "kubeadm.k8s.io"
FIRST_V1BETA4_MINOR = 31
ETCD_CLIENT_PORT = 2379

KUBEADM_CONFIG = "kubeadm-config"
KUBELET_CONFIG = "kubelet-config"
CLUSTER_INFO = "cluster-info"


# --- kubeadm-config -------------------------------------------------------------------------


def kubeadm_api_version(cluster: Cluster) -> str:
    return f"{KUBEADM_API}/{'v1beta4' if cluster.minor >= FIRST_V1BETA4_MINOR else 'v1beta3'}"


def _extra_args(args: dict[str, str], v1beta4: bool) -> dict | list:
    # v1beta4 turned the map into a list so a flag may repeat; kubeadm keeps it sorted by name.
    if v1beta4:
        return [{"name": name, "value": value} for name, value in sorted(args.items())]
    return dict(sorted(args.items()))


def _component(component: Component, ours: dict[str, str], our_mounts: list[Mount], v1beta4: bool) -> dict:
    """A control-plane component's extraArgs/extraVolumes in kubeadm's field names: what kubeprov
    sets beyond kubeadm's defaults, then the cluster file's own (which win, as on the pod)."""
    args = {**ours, **component.extra_args}
    mounts = {m.name: m for m in [*our_mounts, *extra_mounts(component.extra_volumes)]}
    out: dict = {}
    if args:
        out["extraArgs"] = _extra_args(args, v1beta4)
    if mounts:
        out["extraVolumes"] = [
            {"name": m.name, "hostPath": m.host_path, "mountPath": m.mount_path}
            | ({"readOnly": True} if m.read_only else {})
            | ({"pathType": m.path_type} if m.path_type else {})
            for m in (mounts[name] for name in sorted(mounts))
        ]
    return out


def beyond_kubeadm(cluster: Cluster, material: Material) -> dict[str, tuple[dict[str, str], list[Mount]]]:
    """Per component, the flags and volumes kubeprov's static pods have that kubeadm would not
    generate by itself (render/control_plane.py decides them). Recorded as extraArgs/extraVolumes
    so that `kubeadm upgrade` regenerates the same pods instead of silently dropping, say, the
    EncryptionConfiguration the API server needs to read its Secrets."""
    no_profiling = {} if cluster.control_plane.profiling else {"profiling": "false"}
    hardening = apiserver_hardening(cluster, material)
    api_server = {**no_profiling, **hardening.flags}
    if cluster.kubelet.server_tls_bootstrap:
        api_server["kubelet-certificate-authority"] = f"{PKI_DIR}/ca.crt"
    controller_manager = dict(no_profiling)
    if cluster.cni is CNI.BRIDGE:
        controller_manager["allocate-node-cidrs"] = "false"  # pod CIDRs are rendered per node
    return {
        "apiServer": (api_server, hardening.mounts),
        "controllerManager": (controller_manager, []),
        "scheduler": (dict(no_profiling), []),
    }


def _etcd(cluster: Cluster, v1beta4: bool) -> dict:
    if cluster.etcd.topology is EtcdTopology.EXTERNAL:
        client = next(spec for spec in CERTS if spec.name == "apiserver-etcd-client").base_name
        return {
            "external": {
                "endpoints": [server_url(h.advertise_address, ETCD_CLIENT_PORT) for h in cluster.etcd_members],
                "caFile": f"{PKI_DIR}/{CA_BY_NAME['etcd-ca'].base_name}.crt",
                "certFile": f"{PKI_DIR}/{client}.crt",
                "keyFile": f"{PKI_DIR}/{client}.key",
            }
        }
    local: dict = {"dataDir": cluster.etcd.data_dir}
    if cluster.etcd.extra_args:
        local["extraArgs"] = _extra_args(cluster.etcd.extra_args, v1beta4)
    return {"local": local}


def control_plane_endpoint(cluster: Cluster) -> str | None:
    """host:port as kubeadm records it; None when the cluster file names no endpoint (kubeadm
    then falls back to each node's advertise address, as kubeprov does)."""
    if not cluster.control_plane_endpoint:
        return None
    host, port = cluster.endpoint
    return f"[{host}]:{port}" if is_ip(host) and ":" in host else f"{host}:{port}"


def _hours(days: int) -> str:
    return f"{days * 24}h0m0s"  # a Go duration, as kubeadm marshals one


def cluster_configuration(cluster: Cluster, material: Material) -> dict:
    """The ClusterConfiguration kubeadm would upload for this cluster (uploadconfig phase)."""
    v1beta4 = cluster.minor >= FIRST_V1BETA4_MINOR
    cp = cluster.control_plane
    ours = beyond_kubeadm(cluster, material)
    api_server = _component(cp.api_server, *ours["apiServer"], v1beta4)
    if cluster.certificates.api_server_extra_sans:
        api_server["certSANs"] = list(cluster.certificates.api_server_extra_sans)
    if not v1beta4:
        api_server["timeoutForControlPlane"] = "4m0s"  # kubeadm's default; v1beta4 moved it to InitConfiguration
    config: dict = {
        "apiVersion": kubeadm_api_version(cluster),
        "kind": "ClusterConfiguration",
        "kubernetesVersion": cluster.kubernetes_version,
        "clusterName": cluster.name,
        "certificatesDir": str(PKI_DIR),
        "imageRepository": cluster.image_repository,
        "networking": {
            "dnsDomain": cluster.networking.dns_domain,
            "podSubnet": str(cluster.networking.pod_subnet),
            "serviceSubnet": str(cluster.networking.service_subnet),
        },
        "etcd": _etcd(cluster, v1beta4),
        "apiServer": api_server,
        "controllerManager": _component(cp.controller_manager, *ours["controllerManager"], v1beta4),
        "scheduler": _component(cp.scheduler, *ours["scheduler"], v1beta4),
        "dns": {},
    }
    endpoint = control_plane_endpoint(cluster)
    if endpoint:
        config["controlPlaneEndpoint"] = endpoint
    if v1beta4:
        # Fields v1beta4 added: what `kubeadm certs renew` and upgrades use for new certificates.
        config["proxy"] = {}
        config["encryptionAlgorithm"] = cluster.certificates.key_algorithm.value
        config["certificateValidityPeriod"] = _hours(cluster.certificates.validity_days)
        config["caCertificateValidityPeriod"] = _hours(cluster.certificates.ca_validity_days)
    return config


def kubeadm_config_objects(cluster: Cluster, material: Material) -> list[dict]:
    data = {"ClusterConfiguration": k8s.to_yaml(cluster_configuration(cluster, material))}
    role = "kubeadm:nodes-kubeadm-config"
    return [
        k8s.config_map(KUBEADM_CONFIG, k8s.KUBE_SYSTEM, data),
        # Joining nodes (bootstrap token) and nodes during upgrade read it.
        k8s.read_config_map_role(role, KUBEADM_CONFIG, k8s.KUBE_SYSTEM),
        k8s.role_binding(role, k8s.KUBE_SYSTEM, role, [k8s.group(k8s.BOOTSTRAP_TOKEN_GROUP), k8s.group(k8s.NODES_GROUP)]),
    ]


# --- kubelet-config -------------------------------------------------------------------------


def kubelet_config_objects(cluster: Cluster) -> list[dict]:
    # Byte for byte what nodes get in /var/lib/kubelet/config.yaml.
    data = {"kubelet": dump_yaml(kubelet_configuration(cluster)).decode()}
    role = "kubeadm:kubelet-config"
    return [
        k8s.config_map(KUBELET_CONFIG, k8s.KUBE_SYSTEM, data, signed=True),
        k8s.read_config_map_role(role, KUBELET_CONFIG, k8s.KUBE_SYSTEM),
        k8s.role_binding(role, k8s.KUBE_SYSTEM, role, [k8s.group(k8s.NODES_GROUP), k8s.group(k8s.BOOTSTRAP_TOKEN_GROUP)]),
    ]


# --- cluster-info ---------------------------------------------------------------------------


def unsigned_cluster_info_kubeconfig(cluster: Cluster, material: Material) -> bytes:
    """The `kubeconfig` key of cluster-info: admin.conf's cluster (CA data + endpoint), nameless,
    with no users or contexts, as kubeadm's clusterinfo phase writes it.

    Hook for bootstrap tokens: `up` signs exactly these bytes per token (a detached JWS, kubeadm's
    bootstrap signer format) and adds them as `jws-kubeconfig-<token-id>` keys next to this one.
    """
    ca_pem = material.cas["ca"][0]
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "", "cluster": {"certificate-authority-data": base64.b64encode(ca_pem).decode(), "server": endpoint_url(cluster)}}
        ],
        "contexts": None,
        "current-context": "",
        "preferences": {},
        "users": None,
    }
    return k8s.to_yaml(doc).encode()


def cluster_info_objects(cluster: Cluster, material: Material) -> list[dict]:
    data = {"kubeconfig": unsigned_cluster_info_kubeconfig(cluster, material).decode()}
    role = "kubeadm:bootstrap-signer-clusterinfo"
    return [
        k8s.config_map(CLUSTER_INFO, k8s.KUBE_PUBLIC, data),
        # Anyone may read it: joining nodes have no credentials yet and trust it via the JWS.
        k8s.read_config_map_role(role, CLUSTER_INFO, k8s.KUBE_PUBLIC),
        k8s.role_binding(role, k8s.KUBE_PUBLIC, role, [k8s.user("system:anonymous")]),
    ]


# --- the renderer ---------------------------------------------------------------------------


def render_cluster_objects(cluster: Cluster, material: Material) -> dict[str, bytes]:
    """File name under DIR/_cluster/ → multi-document YAML, each file in apply order."""
    return {
        "kubeadm-config.yaml": k8s.yaml_stream(*kubeadm_config_objects(cluster, material)),
        "kubelet-config.yaml": k8s.yaml_stream(*kubelet_config_objects(cluster)),
        "cluster-info.yaml": k8s.yaml_stream(*cluster_info_objects(cluster, material)),
        "kube-proxy.yaml": k8s.yaml_stream(*kube_proxy_objects(cluster)),
        "coredns.yaml": k8s.yaml_stream(*coredns_objects(cluster)),
    }
