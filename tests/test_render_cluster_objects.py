"""The cluster objects under DIR/_cluster/: kubeadm-config, kubelet-config, cluster-info, kube-proxy
and CoreDNS, as `kubeadm init` would create them.

Every object is checked by the real OpenAPI schemas of each supported minor (kubernetes-validate,
strict), the embedded configs by the field lists of their Go types (tests/data, transcribed from
kubernetes/kubernetes), cluster-info's kubeconfig by the real kubectl, and the whole output of a
3-control-plane cluster against golden files (KUBEPROV_UPDATE_GOLDEN=1 rewrites them).
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import ipaddress
import json
import os
import re
import subprocess
from pathlib import Path, PurePosixPath

import kubernetes_validate
import pytest
import yaml
from testkit import VENV_BIN, hosts, merge, run_cli
from kubernetes_validate.utils import all_versions

from provision.config.models import MAX_MINOR, MIN_MINOR, Cluster
from provision.pki.store import PKIStore, read_material
from provision.render import render_cluster, render_hosts
from provision.render.cluster_objects import render_cluster_objects, unsigned_cluster_info_kubeconfig

DATA = Path(__file__).parent / "data"
GOLDEN = Path(__file__).parent / "golden" / "cluster_objects"
KUBECTL = VENV_BIN / "kubectl"

# The minors kubeprov supports for which kubernetes-validate ships schemas (it ships up to some
# release; newer minors fall back to its newest schema, which would prove nothing new).
_newest_schema = max(int(v.split(".")[1]) for v in all_versions())
MINORS = [m for m in range(MIN_MINOR, MAX_MINOR + 1) if m <= _newest_schema]

BASE = {
    "apiVersion": "kubeprov.io/v1alpha1",
    "kind": "Cluster",
    "name": "golden",
    "kubernetesVersion": "v1.31.4",
    "hosts": hosts(3, 1),
    "controlPlaneEndpoint": "10.0.0.100:6443",  # a VIP: no host has it
}


def make(**overrides) -> Cluster:
    return Cluster.model_validate(merge(BASE, overrides))


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Real PKI for the base cluster: (cluster dir, Material). The cluster-object renderers read
    only the cluster CA certificate from it, so variants of the base cluster share it."""
    root = tmp_path_factory.mktemp("pki")
    store = PKIStore(make(), root)
    store.generate()
    return root, read_material(store)


@pytest.fixture(scope="module")
def material(pki):
    return pki[1]


def documents(files: dict[str, bytes]) -> list[dict]:
    return [doc for data in files.values() for doc in yaml.safe_load_all(data) if doc is not None]


def find(files: dict[str, bytes], kind: str, name: str) -> dict:
    matches = [d for d in documents(files) if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


# --- field lists transcribed from the Go types -----------------------------------------------

_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


def unknown_fields(value, spec, path: str = "") -> list[str]:
    """Problems of `value` against a field list (tests/data/*-fields.yaml notation)."""
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return [f"{path}: expected an object, got {value!r}"]
        problems = []
        for key, item in value.items():
            if key not in spec:
                problems.append(f"{path}.{key}: no such field")
            else:
                problems += unknown_fields(item, spec[key], f"{path}.{key}")
        return problems
    if isinstance(spec, list):
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {value!r}"]
        return [p for i, item in enumerate(value) for p in unknown_fields(item, spec[0], f"{path}[{i}]")]
    ok = {
        "string": lambda v: isinstance(v, str),
        "bool": lambda v: isinstance(v, bool),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "duration": lambda v: isinstance(v, str) and bool(_DURATION.match(v)),
        "[]string": lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v),
        "map[string]string": lambda v: isinstance(v, dict) and all(isinstance(i, str) for i in v.values()),
        "map[string]bool": lambda v: isinstance(v, dict) and all(isinstance(i, bool) for i in v.values()),
        "object": lambda v: isinstance(v, dict),
    }[spec](value)
    return [] if ok else [f"{path}: {value!r} is not a {spec}"]


CLUSTER_CONFIGURATION_FIELDS = yaml.safe_load((DATA / "kubeadm-cluster-configuration-fields.yaml").read_text())
KUBE_PROXY_FIELDS = yaml.safe_load((DATA / "kube-proxy-configuration-v1alpha1-fields.yaml").read_text())


def cluster_configuration(files: dict[str, bytes]) -> dict:
    return yaml.safe_load(find(files, "ConfigMap", "kubeadm-config")["data"]["ClusterConfiguration"])


# --- schema validation -----------------------------------------------------------------------

VARIANTS = {
    "stacked-3cp": {},
    "external-etcd": {
        "hosts": hosts(2, 1) + [{"name": f"etcd{i}", "address": f"10.0.1.{i}", "roles": ["etcd"]} for i in (1, 2, 3)],
        "etcd": {"topology": "external"},
    },
    "ipvs-custom-registry": {
        "kubeProxy": {"mode": "ipvs"},
        "imageRepository": "registry.example.internal/k8s",
        "networking": {"dnsDomain": "corp.example", "serviceSubnet": "172.20.0.0/16", "podSubnet": "10.32.0.0/12"},
    },
    "ipv6-no-endpoint": {
        "hosts": [{"name": "cp1", "address": "fd00::11", "roles": ["control-plane"]}],
        "controlPlaneEndpoint": None,
        "networking": {"serviceSubnet": "fd00:96::/112", "podSubnet": "fd00:244::/56"},
    },
}


def test_minors_cover_what_kubeprov_supports():
    assert MINORS[0] == 28 and MINORS[-1] == min(35, _newest_schema), MINORS


@pytest.mark.parametrize("minor", MINORS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_object_validates_strictly(variant, minor, material):
    cluster = make(kubernetesVersion=f"v1.{minor}.3", **VARIANTS[variant])
    files = render_cluster_objects(cluster, material)
    docs = documents(files)
    assert len(docs) >= 18
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, f"1.{minor}.0", strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{variant} 1.{minor}: {doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_registered_and_written_by_render(tmp_path, pki):
    """`kubeprov render` puts these files under DIR/_cluster/ (the CLI, end to end)."""
    root, material = pki
    cluster_file = tmp_path / "cluster.yaml"
    cluster_file.write_text(yaml.safe_dump(merge(BASE, {"clusterDir": str(root)})))
    code, out, err = run_cli("render", "-c", cluster_file, "--out", tmp_path / "out")
    assert code == 0, err
    written = {p.name: p.read_bytes() for p in (tmp_path / "out" / "_cluster").iterdir()}
    assert written == render_cluster(make(), material)  # with the other renderers' files (CNI)
    ours = render_cluster_objects(make(), material)
    assert set(ours) == {"kubeadm-config.yaml", "kubelet-config.yaml", "cluster-info.yaml", "kube-proxy.yaml", "coredns.yaml"}
    assert {name: written[name] for name in ours} == ours


def test_render_is_deterministic(material):
    assert render_cluster_objects(make(), material) == render_cluster_objects(make(), material)


# --- kubeadm-config --------------------------------------------------------------------------

EXTRA = {
    "controlPlane": {
        "apiServer": {"extraArgs": {"v": "2", "audit-log-maxage": "7"}},
        "controllerManager": {"extraArgs": {"node-monitor-grace-period": "20s"}},
        "scheduler": {"extraArgs": {"v": "3"}},
    },
    "etcd": {"extraArgs": {"quota-backend-bytes": "8589934592", "auto-compaction-retention": "8"}},
}


@pytest.mark.parametrize("minor", MINORS)
def test_cluster_configuration_version_switch_and_fields(minor, material):
    """v1beta3 up to 1.30, v1beta4 from 1.31 (the version each kubeadm uploads); every field we
    write exists in that version's Go type."""
    cluster = make(kubernetesVersion=f"v1.{minor}.0", **EXTRA)
    config = cluster_configuration(render_cluster_objects(cluster, material))
    version = "v1beta3" if minor < 31 else "v1beta4"
    assert config["apiVersion"] == f"kubeadm.k8s.io/{version}"
    assert config["kind"] == "ClusterConfiguration"
    assert unknown_fields(config, CLUSTER_CONFIGURATION_FIELDS[version]) == []


def _args(value, version: str) -> dict:
    """extraArgs back to a dict, insisting on the version's shape."""
    if version == "v1beta3":
        assert isinstance(value, dict), value
        return value
    assert isinstance(value, list) and all(set(a) == {"name", "value"} for a in value), value
    names = [a["name"] for a in value]
    assert names == sorted(names), "kubeadm keeps v1beta4 args sorted by name"
    return {a["name"]: a["value"] for a in value}


@pytest.mark.parametrize("minor,version", [(30, "v1beta3"), (31, "v1beta4")])
def test_extra_args_shape(minor, version, material):
    cluster = make(kubernetesVersion=f"v1.{minor}.2", **EXTRA)
    config = cluster_configuration(render_cluster_objects(cluster, material))
    # The cluster file's extraArgs, next to what kubeprov adds beyond kubeadm (next test).
    assert _args(config["apiServer"]["extraArgs"], version).items() >= {"v": "2", "audit-log-maxage": "7"}.items()
    assert _args(config["controllerManager"]["extraArgs"], version).items() >= {"node-monitor-grace-period": "20s"}.items()
    assert _args(config["scheduler"]["extraArgs"], version).items() >= {"v": "3"}.items()
    assert _args(config["etcd"]["local"]["extraArgs"], version) == {
        "quota-backend-bytes": "8589934592",
        "auto-compaction-retention": "8",
    }


MANIFESTS = PurePosixPath("/etc/kubernetes/manifests")
POD_OF = {"apiServer": "kube-apiserver", "controllerManager": "kube-controller-manager", "scheduler": "kube-scheduler"}


@pytest.mark.parametrize(
    "overrides",
    [EXTRA, {"kubelet": {"serverTLSBootstrap": True}, "cni": "bridge"}, {"controlPlane": {"profiling": True, "encryptSecrets": False}}],
    ids=["extra-args", "tls-bootstrap-bridge", "profiling-no-encryption"],
)
def test_cluster_configuration_regenerates_our_pods(overrides, material):
    """kubeadm regenerates the static pods from ClusterConfiguration on upgrade: every flag and
    volume it records must be what our rendered pods run, so nothing (audit, encryption at rest)
    is lost, and the flags kubeprov adds beyond kubeadm's defaults must be among them."""
    cluster = make(**overrides)
    config = cluster_configuration(render_cluster_objects(cluster, material))
    trees = render_hosts(cluster, material)
    for field, pod_name in POD_OF.items():
        args = _args(config[field].get("extraArgs", []), "v1beta4")
        volumes = config[field].get("extraVolumes", [])
        for host in cluster.control_planes:
            pod = yaml.safe_load(trees[host.name][MANIFESTS / f"{pod_name}.yaml"].content)["spec"]
            command = pod["containers"][0]["command"]
            for name, value in args.items():
                assert f"--{name}={value}" in command, f"{pod_name} on {host.name} lacks --{name}={value}"
            mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
            host_paths = {v["name"]: v["hostPath"] for v in pod["volumes"]}
            for volume in volumes:
                assert host_paths[volume["name"]]["path"] == volume["hostPath"]
                assert host_paths[volume["name"]].get("type", "") == volume.get("pathType", "")
                assert mounts[volume["name"]]["mountPath"] == volume["mountPath"]
                assert mounts[volume["name"]].get("readOnly", False) == volume.get("readOnly", False)
            # kubeprov's own additions, read off the rendered pod (independent of the recorder).
            for flag in ("profiling", "encryption-provider-config", "audit-policy-file", "kubelet-certificate-authority", "allocate-node-cidrs"):
                on_pod = [a for a in command if a.startswith(f"--{flag}=")]
                kubeadm_sets_it = flag == "allocate-node-cidrs" and on_pod == ["--allocate-node-cidrs=true"]
                if on_pod and not kubeadm_sets_it:
                    assert on_pod == [f"--{flag}={args.get(flag)}"], f"{pod_name}: {on_pod[0]} not recorded for kubeadm"


def test_cluster_configuration_reflects_the_cluster(material):
    cluster = make(
        name="prod",
        imageRepository="mirror.example/k8s",
        certificates={"apiServerExtraSANs": ["api.example.com", "192.0.2.50"], "keyAlgorithm": "ECDSA-P256", "validityDays": 90},
        controlPlane={"apiServer": {"extraVolumes": [{"name": "audit", "hostPath": "/var/log/audit", "mountPath": "/var/log/audit"}]}},
        networking={"dnsDomain": "k8s.example", "podSubnet": "10.200.0.0/16", "serviceSubnet": "10.100.0.0/16"},
    )
    config = cluster_configuration(render_cluster_objects(cluster, material))
    assert config["kubernetesVersion"] == "v1.31.4"
    assert config["clusterName"] == "prod"
    assert config["controlPlaneEndpoint"] == "10.0.0.100:6443"
    assert config["imageRepository"] == "mirror.example/k8s"
    assert config["certificatesDir"] == "/etc/kubernetes/pki"
    assert config["networking"] == {"dnsDomain": "k8s.example", "podSubnet": "10.200.0.0/16", "serviceSubnet": "10.100.0.0/16"}
    assert config["etcd"] == {"local": {"dataDir": "/var/lib/etcd"}}
    assert config["apiServer"]["certSANs"] == ["api.example.com", "192.0.2.50"]
    assert {"name": "audit", "hostPath": "/var/log/audit", "mountPath": "/var/log/audit"} in config["apiServer"]["extraVolumes"]
    assert config["encryptionAlgorithm"] == "ECDSA-P256"
    assert config["certificateValidityPeriod"] == f"{90 * 24}h0m0s"
    assert config["caCertificateValidityPeriod"] == f"{3650 * 24}h0m0s"


def test_external_etcd_endpoints_and_client_files(material):
    cluster = make(**VARIANTS["external-etcd"])
    config = cluster_configuration(render_cluster_objects(cluster, material))
    assert config["etcd"] == {
        "external": {
            "endpoints": ["https://10.0.1.1:2379", "https://10.0.1.2:2379", "https://10.0.1.3:2379"],
            "caFile": "/etc/kubernetes/pki/etcd/ca.crt",
            "certFile": "/etc/kubernetes/pki/apiserver-etcd-client.crt",
            "keyFile": "/etc/kubernetes/pki/apiserver-etcd-client.key",
        }
    }


def test_no_endpoint_means_none_recorded(material):
    config = cluster_configuration(render_cluster_objects(make(controlPlaneEndpoint=None), material))
    assert "controlPlaneEndpoint" not in config


# --- kubelet-config and the component-config hash ----------------------------------------------


def _kubeadm_checksum(data: dict[str, str]) -> str:
    # componentconfigs.ChecksumForConfigMap: sha256 over the values in sorted-key order.
    return "sha256:" + hashlib.sha256("".join(data[k] for k in sorted(data)).encode()).hexdigest()


def test_kubelet_config_map_is_what_nodes_run(material):
    cluster = make()
    files = render_cluster_objects(cluster, material)
    cm = find(files, "ConfigMap", "kubelet-config")
    assert cm["metadata"]["namespace"] == "kube-system"
    node_file = render_hosts(cluster, material)["w1"][PurePosixPath("/var/lib/kubelet/config.yaml")]
    assert cm["data"]["kubelet"].encode() == node_file.content
    assert cm["metadata"]["annotations"]["kubeadm.kubernetes.io/component-config.hash"] == _kubeadm_checksum(cm["data"])
    # Nodes (and joining nodes' bootstrap tokens) may read it, as kubeadm grants.
    binding = find(files, "RoleBinding", "kubeadm:kubelet-config")
    assert {s["name"] for s in binding["subjects"]} == {"system:nodes", "system:bootstrappers:kubeadm:default-node-token"}
    role = find(files, "Role", binding["roleRef"]["name"])
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["kubelet-config"], "verbs": ["get"]}]


# --- cluster-info ----------------------------------------------------------------------------


def kubectl_view(path: Path) -> dict:
    proc = subprocess.run(
        [str(KUBECTL), "config", "view", "--kubeconfig", str(path), "--raw", "-o", "json"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize(
    "overrides,server",
    [
        ({}, "https://10.0.0.100:6443"),
        ({"controlPlaneEndpoint": "api.example.com"}, "https://api.example.com:6443"),
        ({"controlPlaneEndpoint": None}, "https://10.0.0.11:6443"),  # the first control plane
        (VARIANTS["ipv6-no-endpoint"], "https://[fd00::11]:6443"),
    ],
)
def test_cluster_info_kubeconfig_read_by_kubectl(overrides, server, pki, tmp_path):
    root, material = pki
    cluster = make(**overrides)
    files = render_cluster_objects(cluster, material)
    cm = find(files, "ConfigMap", "cluster-info")
    assert cm["metadata"]["namespace"] == "kube-public"
    assert cm["data"]["kubeconfig"].encode() == unsigned_cluster_info_kubeconfig(cluster, material)
    path = tmp_path / "cluster-info.conf"
    path.write_text(cm["data"]["kubeconfig"])
    view = kubectl_view(path)
    assert len(view["clusters"]) == 1
    entry = view["clusters"][0]["cluster"]
    assert entry["server"] == server
    assert base64.b64decode(entry["certificate-authority-data"]) == (root / "pki" / "ca.crt").read_bytes()
    assert not view.get("users") and not view.get("contexts")  # no credentials in a public object
    # Anonymous clients may read exactly this ConfigMap, nothing else.
    binding = find(files, "RoleBinding", "kubeadm:bootstrap-signer-clusterinfo")
    assert binding["metadata"]["namespace"] == "kube-public"
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:anonymous"}]
    role = find(files, "Role", "kubeadm:bootstrap-signer-clusterinfo")
    assert role["rules"][0]["resourceNames"] == ["cluster-info"] and role["rules"][0]["verbs"] == ["get"]


# --- kube-proxy ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["iptables", "ipvs"])
def test_kube_proxy_configuration(mode, material):
    cluster = make(kubeProxy={"mode": mode}, networking={"podSubnet": "10.50.0.0/16"})
    files = render_cluster_objects(cluster, material)
    cm = find(files, "ConfigMap", "kube-proxy")
    config = yaml.safe_load(cm["data"]["config.conf"])
    assert unknown_fields(config, KUBE_PROXY_FIELDS) == []
    assert config["apiVersion"] == "kubeproxy.config.k8s.io/v1alpha1" and config["kind"] == "KubeProxyConfiguration"
    assert config["mode"] == mode
    assert config["clusterCIDR"] == "10.50.0.0/16"
    assert config["bindAddress"] == "0.0.0.0"
    assert cm["metadata"]["annotations"]["kubeadm.kubernetes.io/component-config.hash"] == _kubeadm_checksum(cm["data"])

    # The DaemonSet mounts this ConfigMap where both the config and its kubeconfig are looked for.
    ds = find(files, "DaemonSet", "kube-proxy")
    pod = ds["spec"]["template"]["spec"]
    container = pod["containers"][0]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "kube-proxy")["mountPath"]
    assert next(v for v in pod["volumes"] if v["name"] == "kube-proxy")["configMap"]["name"] == "kube-proxy"
    assert f"--config={mount}/config.conf" in container["command"]
    assert config["clientConnection"]["kubeconfig"] == f"{mount}/kubeconfig.conf"
    kubeconfig = yaml.safe_load(cm["data"]["kubeconfig.conf"])
    assert kubeconfig["clusters"][0]["cluster"] == {
        "certificate-authority": "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
        "server": "https://10.0.0.100:6443",
    }
    assert kubeconfig["users"][0]["user"] == {"tokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token"}

    assert container["image"] == "registry.k8s.io/kube-proxy:v1.31.4"
    assert container["securityContext"] == {"privileged": True}
    assert pod["hostNetwork"] is True
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["serviceAccountName"] == "kube-proxy"
    assert {"operator": "Exists"} in pod["tolerations"]  # every node, whatever its taints
    crb = find(files, "ClusterRoleBinding", "kubeadm:node-proxier")
    assert crb["roleRef"]["name"] == "system:node-proxier"
    assert crb["subjects"] == [{"kind": "ServiceAccount", "name": "kube-proxy", "namespace": "kube-system"}]


def test_kube_proxy_kubeconfig_read_by_kubectl(material, tmp_path):
    cm = find(render_cluster_objects(make(), material), "ConfigMap", "kube-proxy")
    path = tmp_path / "kubeconfig.conf"
    path.write_text(cm["data"]["kubeconfig.conf"])
    view = kubectl_view(path)
    assert view["current-context"] == "default"
    assert view["clusters"][0]["cluster"]["server"] == "https://10.0.0.100:6443"


def test_kube_proxy_ipv6_binds_the_v6_family(material):
    cm = find(render_cluster_objects(make(**VARIANTS["ipv6-no-endpoint"]), material), "ConfigMap", "kube-proxy")
    assert yaml.safe_load(cm["data"]["config.conf"])["bindAddress"] == "::"


# --- CoreDNS ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "service_subnet,pod_subnet",
    [
        ("10.96.0.0/12", "10.244.0.0/16"),
        ("172.20.0.0/16", "10.244.0.0/16"),
        ("192.168.128.0/20", "10.244.0.0/16"),
        ("10.0.8.0/28", "10.244.0.0/16"),
        ("fd00:10:96::/112", "fd00:10:244::/56"),
    ],
)
def test_dns_service_is_the_tenth_address(service_subnet, pod_subnet, material):
    cluster = make(
        hosts=[{"name": "cp1", "address": "192.0.2.11", "internalAddress": "10.1.0.11" if ":" not in service_subnet else "fd00:1::11", "roles": ["control-plane"]}],
        controlPlaneEndpoint=None,
        networking={"serviceSubnet": service_subnet, "podSubnet": pod_subnet},
    )
    expected = str(ipaddress.ip_network(service_subnet)[10])  # network address + 10
    files = render_cluster_objects(cluster, material)
    service = find(files, "Service", "kube-dns")
    assert service["spec"]["clusterIP"] == expected
    ports = {(p["port"], p["protocol"]) for p in service["spec"]["ports"]}
    assert ports == {(53, "UDP"), (53, "TCP"), (9153, "TCP")}
    # What every kubelet is told to use as its resolver.
    kubelet = yaml.safe_load(find(files, "ConfigMap", "kubelet-config")["data"]["kubelet"])
    assert kubelet["clusterDNS"] == [expected]


def _corefile(files) -> str:
    return find(files, "ConfigMap", "coredns")["data"]["Corefile"]


@pytest.mark.parametrize("minor", MINORS)
def test_corefile_serves_the_cluster_domain(minor, material):
    files = render_cluster_objects(make(kubernetesVersion=f"v1.{minor}.0", networking={"dnsDomain": "corp.example"}), material)
    corefile = _corefile(files)
    assert re.search(r"^\s*kubernetes corp\.example in-addr\.arpa ip6\.arpa \{$", corefile, re.M)
    assert "forward . /etc/resolv.conf" in corefile
    assert corefile.count("{") == corefile.count("}")
    # From 1.32 kubeadm no longer caches answers for the cluster's own zone (kubernetes#128359).
    disabled = "disable success corp.example" in corefile and "disable denial corp.example" in corefile
    assert disabled == (minor >= 32)


@pytest.mark.parametrize("minor", MINORS)
def test_coredns_deployment(minor, material):
    from provision.versions import DEFAULTS  # kubeadm's CoreDNS pin per minor, a table of facts

    files = render_cluster_objects(make(kubernetesVersion=f"v1.{minor}.1"), material)
    deployment = find(files, "Deployment", "coredns")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert spec["replicas"] == 2
    assert container["image"] == f"registry.k8s.io/coredns/coredns:{DEFAULTS[minor].coredns}"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}
    named_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert named_ports[container["livenessProbe"]["httpGet"]["port"]] == 8080  # CoreDNS's health plugin
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert named_ports[container["readinessProbe"]["httpGet"]["port"]] == 8181  # its ready plugin
    term = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchExpressions"][0]["values"] == [spec["selector"]["matchLabels"]["k8s-app"]]
    assert pod["serviceAccountName"] == "coredns"
    assert pod["dnsPolicy"] == "Default"
    service = find(files, "Service", "kube-dns")
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"] == spec["template"]["metadata"]["labels"]
    binding = find(files, "ClusterRoleBinding", "system:coredns")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"}
    assert find(files, "ClusterRole", "system:coredns")["rules"]


def test_coredns_image_in_a_custom_repository(material):
    """kubeadm expects a mirror to hold CoreDNS flat (<repo>/coredns); only registry.k8s.io nests it."""
    files = render_cluster_objects(make(imageRepository="mirror.example/k8s"), material)
    image = find(files, "Deployment", "coredns")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith("mirror.example/k8s/coredns:v")
    proxy = find(files, "DaemonSet", "kube-proxy")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert proxy == "mirror.example/k8s/kube-proxy:v1.31.4"


# --- golden files ----------------------------------------------------------------------------

CA_PLACEHOLDER = "<base64 of the cluster's ca.crt>"


def _goldenize(data: bytes, material) -> str:
    """The CA certificate differs per run (fresh PKI): replace it by a placeholder."""
    ca_b64 = base64.b64encode(material.cas["ca"][0]).decode()
    return data.decode().replace(ca_b64, CA_PLACEHOLDER)


def test_golden_three_control_planes(material):
    cluster = make(**EXTRA)
    files = {name: _goldenize(data, material) for name, data in render_cluster_objects(cluster, material).items()}
    directory = GOLDEN / "3cp-stacked"
    for text in files.values():
        assert "PRIVATE KEY" not in text and "LS0tLS1CRUdJTi" not in text, "key or certificate material in a golden file"
    if os.environ.get("KUBEPROV_UPDATE_GOLDEN") == "1":
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.yaml"):
            stale.unlink()
        for name, text in files.items():
            (directory / name).write_text(text)
    expected = {p.name: p.read_text() for p in sorted(directory.glob("*.yaml"))}
    assert sorted(files) == sorted(expected), "file set changed; KUBEPROV_UPDATE_GOLDEN=1 rewrites the golden files"
    diffs = [
        "".join(difflib.unified_diff(expected[name].splitlines(True), files[name].splitlines(True), f"golden/{name}", f"rendered/{name}"))
        for name in sorted(files)
        if files[name] != expected[name]
    ]
    assert not diffs, "rendered output differs from the golden files (KUBEPROV_UPDATE_GOLDEN=1 rewrites them):\n" + "\n".join(diffs)
