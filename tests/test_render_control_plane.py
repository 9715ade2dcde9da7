"""Control-plane static pods: schema-valid for every supported minor, kubeadm's flags with
extraArgs overriding them, kubeprov's hardening options, the CIS checks that apply to these
files, golden files for three clusters, and the Secrets-at-rest key's life cycle.

Expectations come from kubeadm's documented behaviour and the CIS Kubernetes Benchmark text,
not from the renderer: the tests parse the rendered YAML back into flags.
"""

from __future__ import annotations

import base64
import difflib
import os
import re
from pathlib import Path, PurePosixPath

import kubernetes_validate
import pytest
import yaml

from provision.config.models import Cluster
from provision.errors import PKIError
from provision.pki import secrets
from provision.pki.store import PKIStore, read_material
from provision.render.control_plane import render_control_plane
from provision.render.etcd import render_etcd
from provision.render.security import ENCRYPTION_CONFIG
from testkit import cluster_dir_of, hosts, run_cli

GOLDEN = Path(__file__).parent / "golden"
DOCS = Path(__file__).parent.parent / "docs" / "flags.md"
MANIFESTS = PurePosixPath("/etc/kubernetes/manifests")


# --- helpers ----------------------------------------------------------------------------------


def cluster_of(tmp: Path, **overrides) -> Cluster:
    doc = {
        "apiVersion": "kubeprov.io/v1alpha1",
        "kind": "Cluster",
        "name": "test",
        "kubernetesVersion": "v1.31.4",
        "hosts": hosts(1),
        "certificates": {"keyAlgorithm": "ECDSA-P256"},  # fast; renderers do not read key types
        "clusterDir": str(tmp / "cluster-dir"),
    }
    doc.update(overrides)
    return Cluster.model_validate(doc)


def material_for(cluster: Cluster):
    store = PKIStore(cluster)
    store.generate()
    return read_material(store)


def render(cluster: Cluster, material=None) -> dict[str, dict[PurePosixPath, bytes]]:
    material = material or material_for(cluster)
    out = {}
    for host in cluster.hosts:
        tree = {**render_control_plane(cluster, host, material), **render_etcd(cluster, host, material)}
        out[host.name] = {path: f for path, f in tree.items()}
    return out


def pod(tree, name: str) -> dict:
    return yaml.safe_load(tree[MANIFESTS / f"{name}.yaml"].content)


def flags_of(pod_doc: dict) -> dict[str, str]:
    """`--key=value` arguments back into a dict; also checks they are sorted and unique."""
    command = pod_doc["spec"]["containers"][0]["command"]
    args = command[1:]
    assert args == sorted(args, key=lambda a: a.split("=", 1)[0]), "flags must be sorted by name"
    parsed = {}
    for arg in args:
        match = re.fullmatch(r"--([a-z0-9-]+)=(.*)", arg)
        assert match, f"not --key=value: {arg!r}"
        assert match.group(1) not in parsed, f"duplicate flag {arg}"
        parsed[match.group(1)] = match.group(2)
    return parsed


def newest_schema_minor() -> int:
    root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    minors = [int(m.group(1)) for p in root.iterdir() if (m := re.fullmatch(r"v1\.(\d+)\.0-local-strict", p.name))]
    return max(minors)


SUPPORTED = list(range(28, min(35, newest_schema_minor()) + 1))


@pytest.fixture(scope="module")
def three_cp(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("three")
    cluster = cluster_of(tmp, hosts=hosts(3, 1), controlPlaneEndpoint="10.0.0.100:6443")
    material = material_for(cluster)
    return cluster, material, render(cluster, material)


# --- schema: every manifest, every supported minor --------------------------------------------


@pytest.mark.parametrize("minor", SUPPORTED)
def test_manifests_validate_strictly(minor, tmp_path):
    assert SUPPORTED[-1] >= 34, "kubernetes-validate should ship schemas at least up to 1.34"
    stacked = cluster_of(tmp_path / "s", kubernetesVersion=f"v1.{minor}.0", hosts=hosts(1))
    external_hosts = hosts(1) + [
        {"name": "etcd1", "address": "192.0.2.31", "internalAddress": "10.0.0.31", "roles": ["etcd"]}
    ]
    external = cluster_of(tmp_path / "e", kubernetesVersion=f"v1.{minor}.0", hosts=external_hosts,
                          etcd={"topology": "external"})
    seen = set()
    for cluster in (stacked, external):
        for tree in render(cluster).values():
            for path, file in tree.items():
                if path.parent != MANIFESTS:
                    continue
                doc = yaml.safe_load(file.content)
                kubernetes_validate.validate(doc, f"1.{minor}", strict=True)  # raises on any error
                seen.add(path.name)
    assert seen == {"kube-apiserver.yaml", "kube-controller-manager.yaml", "kube-scheduler.yaml", "etcd.yaml"}


# --- kubeadm's shape --------------------------------------------------------------------------


def test_kubeadm_pod_shape(three_cp):
    cluster, _, trees = three_cp
    tree = trees["cp2"]
    expected_cpu = {"kube-apiserver": "250m", "kube-controller-manager": "200m", "kube-scheduler": "100m", "etcd": "100m"}
    for name, cpu in expected_cpu.items():
        doc = pod(tree, name)
        spec, container = doc["spec"], doc["spec"]["containers"][0]
        assert doc["metadata"]["namespace"] == "kube-system"
        assert doc["metadata"]["labels"] == {"component": name, "tier": "control-plane"}
        assert spec["hostNetwork"] is True
        assert spec["priorityClassName"] == "system-node-critical"
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert container["resources"]["requests"]["cpu"] == cpu
        assert container["imagePullPolicy"] == "IfNotPresent"
        assert [v["name"] for v in spec["volumes"]] == sorted(v["name"] for v in spec["volumes"])
        assert {m["name"] for m in container["volumeMounts"]} == {v["name"] for v in spec["volumes"]}
        assert tree[MANIFESTS / f"{name}.yaml"].mode == 0o600
    api = pod(tree, "kube-apiserver")
    assert api["metadata"]["annotations"] == {"kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint": "10.0.0.12:6443"}
    assert api["spec"]["containers"][0]["image"] == "registry.k8s.io/kube-apiserver:v1.31.4"
    # No control-plane files on the worker.
    assert trees["w1"] == {}


def test_probes_on_kubeadms_paths_and_ports(three_cp):
    _, _, trees = three_cp
    tree = trees["cp1"]

    def probe(name, kind):
        return pod(tree, name)["spec"]["containers"][0].get(kind)

    api = {k: probe("kube-apiserver", k)["httpGet"] for k in ("livenessProbe", "readinessProbe", "startupProbe")}
    assert api["livenessProbe"] == {"host": "10.0.0.11", "path": "/livez", "port": 6443, "scheme": "HTTPS"}
    assert api["readinessProbe"]["path"] == "/readyz"
    assert api["startupProbe"]["path"] == "/livez"
    for name, port in (("kube-controller-manager", 10257), ("kube-scheduler", 10259)):
        assert probe(name, "livenessProbe")["httpGet"] == {"host": "127.0.0.1", "path": "/healthz", "port": port, "scheme": "HTTPS"}
        assert probe(name, "startupProbe")["httpGet"]["path"] == "/healthz"
        assert probe(name, "readinessProbe") is None
    # kubeadm's timings: liveness 10/15/8/10; readiness 0/15/3/1; startup covers 4 minutes.
    live = probe("kube-apiserver", "livenessProbe")
    assert (live["initialDelaySeconds"], live["timeoutSeconds"], live["failureThreshold"], live["periodSeconds"]) == (10, 15, 8, 10)
    ready = probe("kube-apiserver", "readinessProbe")
    assert (ready["initialDelaySeconds"], ready["failureThreshold"], ready["periodSeconds"]) == (0, 3, 1)
    start = probe("kube-apiserver", "startupProbe")
    assert start["failureThreshold"] * start["periodSeconds"] >= 240


def test_host_path_volumes_as_kubeadm_on_debian(three_cp):
    _, _, trees = three_cp
    tree = trees["cp1"]

    def volumes(name):
        doc = pod(tree, name)
        mounts = {m["name"]: m for m in doc["spec"]["containers"][0]["volumeMounts"]}
        return {v["name"]: (v["hostPath"]["path"], v["hostPath"].get("type"), mounts[v["name"]].get("readOnly", False))
                for v in doc["spec"]["volumes"]}

    ca_dirs = {
        "ca-certs": ("/etc/ssl/certs", "DirectoryOrCreate", True),
        "etc-ca-certificates": ("/etc/ca-certificates", "DirectoryOrCreate", True),
        "usr-share-ca-certificates": ("/usr/share/ca-certificates", "DirectoryOrCreate", True),
        "usr-local-share-ca-certificates": ("/usr/local/share/ca-certificates", "DirectoryOrCreate", True),
    }
    api = volumes("kube-apiserver")
    assert ca_dirs.items() <= api.items()
    assert api["k8s-certs"] == ("/etc/kubernetes/pki", "DirectoryOrCreate", True)
    kcm = volumes("kube-controller-manager")
    assert ca_dirs.items() <= kcm.items()
    assert kcm["kubeconfig"] == ("/etc/kubernetes/controller-manager.conf", "FileOrCreate", True)
    assert kcm["flexvolume-dir"] == ("/usr/libexec/kubernetes/kubelet-plugins/volume/exec", "DirectoryOrCreate", False)
    assert volumes("kube-scheduler") == {"kubeconfig": ("/etc/kubernetes/scheduler.conf", "FileOrCreate", True)}


def test_every_file_flag_is_inside_a_mounted_volume(three_cp):
    """A path on the command line the container cannot see would crash the component."""
    _, _, trees = three_cp
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"):
        doc = pod(trees["cp1"], name)
        mounts = [m["mountPath"] for m in doc["spec"]["containers"][0]["volumeMounts"]]
        for flag, value in flags_of(doc).items():
            for part in value.split(","):
                if part.startswith("/"):
                    assert any(part == m or part.startswith(m.rstrip("/") + "/") for m in mounts), f"{name} --{flag}={part} not mounted"


# --- flags ------------------------------------------------------------------------------------


def test_kubeadm_base_flags(three_cp):
    cluster, _, trees = three_cp
    api = flags_of(pod(trees["cp1"], "kube-apiserver"))
    assert api["etcd-servers"] == "https://127.0.0.1:2379"
    assert api["service-account-issuer"] == "https://kubernetes.default.svc.cluster.local"
    assert api["service-cluster-ip-range"] == "10.96.0.0/12"
    assert api["advertise-address"] == "10.0.0.11"
    assert api["secure-port"] == "6443"
    kcm = flags_of(pod(trees["cp1"], "kube-controller-manager"))
    assert kcm["allocate-node-cidrs"] == "true" and kcm["cluster-cidr"] == "10.244.0.0/16"
    assert kcm["controllers"] == "*,bootstrapsigner,tokencleaner"
    assert kcm["cluster-name"] == "test"
    assert kcm["cluster-signing-key-file"] == "/etc/kubernetes/pki/ca.key"


def test_extra_args_replace_base_values_and_extra_volumes_merge_by_name(tmp_path):
    cluster = cluster_of(
        tmp_path,
        controlPlane={
            "apiServer": {
                "extraArgs": {"enable-admission-plugins": "NodeRestriction,EventRateLimit", "v": 2},
                "extraVolumes": [{"name": "ca-certs", "hostPath": "/opt/certs", "mountPath": "/etc/ssl/certs", "readOnly": True}],
            },
            "scheduler": {"extraArgs": {"bind-address": "0.0.0.0"}},
        },
        etcd={"extraArgs": {"snapshot-count": "5000", "listen-metrics-urls": "http://127.0.0.1:2391"}},
    )
    tree = render(cluster)["cp1"]
    api_doc = pod(tree, "kube-apiserver")
    api = flags_of(api_doc)
    assert api["enable-admission-plugins"] == "NodeRestriction,EventRateLimit"
    assert api["v"] == "2"
    assert sum(a.startswith("--enable-admission-plugins=") for a in api_doc["spec"]["containers"][0]["command"]) == 1
    vols = {v["name"]: v["hostPath"]["path"] for v in api_doc["spec"]["volumes"]}
    assert vols["ca-certs"] == "/opt/certs"
    scheduler = pod(tree, "kube-scheduler")
    assert flags_of(scheduler)["bind-address"] == "0.0.0.0"
    # kubeadm probes the pod IP (no host) when the component binds the unspecified address.
    assert "host" not in scheduler["spec"]["containers"][0]["livenessProbe"]["httpGet"]
    etcd = pod(tree, "etcd")
    assert flags_of(etcd)["snapshot-count"] == "5000"
    assert etcd["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] == 2391


def test_options_profiling_audit_encryption(tmp_path):
    default = render(cluster_of(tmp_path / "a"))["cp1"]
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        assert flags_of(pod(default, name))["profiling"] == "false"
    api = flags_of(pod(default, "kube-apiserver"))
    assert api["audit-policy-file"] == "/etc/kubernetes/audit/policy.yaml"
    assert PurePosixPath(api["audit-policy-file"]) in default
    assert PurePosixPath(api["encryption-provider-config"]) in default

    relaxed = render(cluster_of(tmp_path / "b", controlPlane={"profiling": True, "encryptSecrets": False, "audit": {"enabled": False}}))["cp1"]
    api = flags_of(pod(relaxed, "kube-apiserver"))
    assert not {"profiling", "audit-policy-file", "audit-log-path", "encryption-provider-config"} & api.keys()
    assert flags_of(pod(relaxed, "kube-scheduler")).get("profiling") is None
    assert ENCRYPTION_CONFIG not in relaxed


def test_audit_policy_keeps_secrets_out_of_the_log(tmp_path):
    tree = render(cluster_of(tmp_path))["cp1"]
    policy = yaml.safe_load(tree[PurePosixPath("/etc/kubernetes/audit/policy.yaml")].content)
    assert (policy["apiVersion"], policy["kind"]) == ("audit.k8s.io/v1", "Policy")
    # First matching rule wins: the first rule naming secrets must not log bodies.
    first = next(r for r in policy["rules"] if any("secrets" in g.get("resources", []) for g in r.get("resources", [])))
    assert first["level"] in ("None", "Metadata")
    assert policy["rules"][-1] == {"level": "Metadata"}


def test_bridge_cni_turns_node_cidr_allocation_off(tmp_path):
    kcm = flags_of(pod(render(cluster_of(tmp_path, cni="bridge"))["cp1"], "kube-controller-manager"))
    assert kcm["allocate-node-cidrs"] == "false"
    assert "cluster-cidr" not in kcm


def test_server_tls_bootstrap_lets_apiserver_verify_kubelets(tmp_path):
    api = flags_of(pod(render(cluster_of(tmp_path, kubelet={"serverTLSBootstrap": True}))["cp1"], "kube-apiserver"))
    assert api["kubelet-certificate-authority"] == "/etc/kubernetes/pki/ca.crt"


def test_authorization_config_replaces_authorization_mode(tmp_path):
    cluster = cluster_of(tmp_path, controlPlane={"apiServer": {"extraArgs": {"authorization-config": "/etc/kubernetes/authz.yaml"}}})
    api = flags_of(pod(render(cluster)["cp1"], "kube-apiserver"))
    assert "authorization-mode" not in api and api["authorization-config"] == "/etc/kubernetes/authz.yaml"


def test_external_etcd_servers_list_every_member(tmp_path):
    members = [{"name": f"etcd{i}", "address": f"192.0.2.3{i}", "internalAddress": f"10.0.0.3{i}", "roles": ["etcd"]} for i in (1, 2, 3)]
    cluster = cluster_of(tmp_path, hosts=hosts(2) + members, etcd={"topology": "external"})
    trees = render(cluster)
    api = flags_of(pod(trees["cp1"], "kube-apiserver"))
    assert api["etcd-servers"] == "https://10.0.0.31:2379,https://10.0.0.32:2379,https://10.0.0.33:2379"
    assert MANIFESTS / "etcd.yaml" not in trees["cp1"]


# --- CIS Kubernetes Benchmark (control plane): the automated checks on these files ------------
# Each predicate transcribes the benchmark's audit rule; kubeprov's defaults must pass all.

CIS_APISERVER = {
    "1.2.2 --token-auth-file is not set": lambda f: "token-auth-file" not in f,
    "1.2.4 --kubelet-client-certificate and --kubelet-client-key are set": lambda f: f.get("kubelet-client-certificate") and f.get("kubelet-client-key"),
    "1.2.6 --authorization-mode is not AlwaysAllow": lambda f: "AlwaysAllow" not in f["authorization-mode"].split(","),
    "1.2.7 --authorization-mode includes Node": lambda f: "Node" in f["authorization-mode"].split(","),
    "1.2.8 --authorization-mode includes RBAC": lambda f: "RBAC" in f["authorization-mode"].split(","),
    "1.2.10 admission plugin AlwaysAdmit is not set": lambda f: "AlwaysAdmit" not in f.get("enable-admission-plugins", ""),
    "1.2.13 admission plugin ServiceAccount is not disabled": lambda f: "ServiceAccount" not in f.get("disable-admission-plugins", ""),
    "1.2.14 admission plugin NamespaceLifecycle is not disabled": lambda f: "NamespaceLifecycle" not in f.get("disable-admission-plugins", ""),
    "1.2.15 admission plugin NodeRestriction is set": lambda f: "NodeRestriction" in f["enable-admission-plugins"].split(","),
    "1.2.16 --profiling is false": lambda f: f.get("profiling") == "false",
    "1.2.17 --audit-log-path is set": lambda f: bool(f.get("audit-log-path")),
    "1.2.18 --audit-log-maxage is 30 or as appropriate": lambda f: int(f["audit-log-maxage"]) >= 30,
    "1.2.19 --audit-log-maxbackup is 10 or as appropriate": lambda f: int(f["audit-log-maxbackup"]) >= 10,
    "1.2.20 --audit-log-maxsize is 100 or as appropriate": lambda f: int(f["audit-log-maxsize"]) >= 100,
    "1.2.22 --service-account-lookup is true": lambda f: f.get("service-account-lookup", "true") == "true",
    "1.2.23 --service-account-key-file is set": lambda f: bool(f.get("service-account-key-file")),
    "1.2.24 --etcd-certfile and --etcd-keyfile are set": lambda f: f.get("etcd-certfile") and f.get("etcd-keyfile"),
    "1.2.25 --tls-cert-file and --tls-private-key-file are set": lambda f: f.get("tls-cert-file") and f.get("tls-private-key-file"),
    "1.2.26 --client-ca-file is set": lambda f: bool(f.get("client-ca-file")),
    "1.2.27 --etcd-cafile is set": lambda f: bool(f.get("etcd-cafile")),
    "1.2.28 --encryption-provider-config is set": lambda f: bool(f.get("encryption-provider-config")),
}
CIS_KCM = {
    "1.3.2 --profiling is false": lambda f: f.get("profiling") == "false",
    "1.3.3 --use-service-account-credentials is true": lambda f: f.get("use-service-account-credentials") == "true",
    "1.3.4 --service-account-private-key-file is set": lambda f: bool(f.get("service-account-private-key-file")),
    "1.3.5 --root-ca-file is set": lambda f: bool(f.get("root-ca-file")),
    "1.3.6 RotateKubeletServerCertificate is not disabled": lambda f: "RotateKubeletServerCertificate=false" not in f.get("feature-gates", ""),
    "1.3.7 --bind-address is 127.0.0.1": lambda f: f.get("bind-address") == "127.0.0.1",
}
CIS_SCHEDULER = {
    "1.4.1 --profiling is false": lambda f: f.get("profiling") == "false",
    "1.4.2 --bind-address is 127.0.0.1": lambda f: f.get("bind-address") == "127.0.0.1",
}
CIS_ETCD = {
    "2.1 --cert-file and --key-file are set": lambda f: f.get("cert-file") and f.get("key-file"),
    "2.2 --client-cert-auth is true": lambda f: f.get("client-cert-auth") == "true",
    "2.3 --auto-tls is not true": lambda f: f.get("auto-tls", "false") != "true",
    "2.4 --peer-cert-file and --peer-key-file are set": lambda f: f.get("peer-cert-file") and f.get("peer-key-file"),
    "2.5 --peer-client-cert-auth is true": lambda f: f.get("peer-client-cert-auth") == "true",
    "2.6 --peer-auto-tls is not true": lambda f: f.get("peer-auto-tls", "false") != "true",
}


def test_cis_checks_pass_by_default(three_cp):
    _, material, trees = three_cp
    tree = trees["cp1"]
    failed = []
    for name, checks in (("kube-apiserver", CIS_APISERVER), ("kube-controller-manager", CIS_KCM),
                         ("kube-scheduler", CIS_SCHEDULER), ("etcd", CIS_ETCD)):
        flags = flags_of(pod(tree, name))
        failed += [f"{name}: {check}" for check, ok in checks.items() if not ok(flags)]
    api, etcd = flags_of(pod(tree, "kube-apiserver")), flags_of(pod(tree, "etcd"))
    # 1.2.29 encryption providers are configured (aescbc, kms or secretbox first).
    config = yaml.safe_load(tree[PurePosixPath(api["encryption-provider-config"])].content)
    first = config["resources"][0]["providers"][0]
    if not {"aescbc", "kms", "secretbox"} & first.keys():
        failed.append("1.2.29 first provider is not aescbc/kms/secretbox")
    # 2.7 a unique CA for etcd: etcd trusts a CA that is not the API server's client CA.
    if etcd["trusted-ca-file"] == api["client-ca-file"] or material.cas["etcd-ca"][0] == material.cas["ca"][0]:
        failed.append("2.7 etcd uses the cluster CA")
    # 1.1.1/1.1.3/1.1.5/1.1.7 manifest files 600 or stricter; the policy and encryption config too.
    for path, file in tree.items():
        if file.mode & 0o177:
            failed.append(f"1.1.x {path} mode {file.mode:o}")
    assert not failed, "CIS checks failing:\n" + "\n".join(failed)


# --- docs -------------------------------------------------------------------------------------


def test_flag_table_documents_every_flag(tmp_path):
    docs = DOCS.read_text()
    variants = [
        cluster_of(tmp_path / "a", kubernetesVersion="v1.28.0"),
        cluster_of(tmp_path / "b", kubernetesVersion="v1.35.0", cni="bridge", kubelet={"serverTLSBootstrap": True}),
    ]
    rendered = set()
    for cluster in variants:
        for tree in render(cluster).values():
            for path in tree:
                if path.parent == MANIFESTS:
                    component = path.stem
                    rendered |= {(component, flag) for flag in flags_of(pod(tree, component))}
    sections = {name: body for name, body in re.findall(r"^## (\S+)[^\n]*\n(.*?)(?=^## |\Z)", docs, re.S | re.M)}
    missing = [f"{c}: --{flag}" for c, flag in sorted(rendered) if f"`--{flag}`" not in sections.get(c, "")]
    assert not missing, "docs/flags.md lacks:\n" + "\n".join(missing)


# --- the Secrets-at-rest key ------------------------------------------------------------------


def test_encryption_key_made_once_private_and_never_printed(make_cluster):
    cluster_file = make_cluster(certificates={"keyAlgorithm": "ECDSA-P256"})
    code, out, err = run_cli("certs", "generate", "-c", cluster_file)
    assert code == 0, err
    key_path = cluster_dir_of(cluster_file) / "secrets" / "encryption-key"
    key = key_path.read_bytes()
    assert len(key) == 32
    assert key_path.stat().st_mode & 0o777 == 0o600
    assert key_path.parent.stat().st_mode & 0o777 == 0o700
    assert base64.b64encode(key).decode() not in out + err and key.hex() not in out + err
    code, out2, err2 = run_cli("certs", "generate", "-c", cluster_file)
    assert code == 0, err2
    assert key_path.read_bytes() == key, "the key must never be regenerated"
    assert base64.b64encode(key).decode() not in out2 + err2


def test_encryption_config_carries_the_stored_key(tmp_path):
    cluster = cluster_of(tmp_path)
    material = material_for(cluster)
    stored = secrets.encryption_key_path(tmp_path / "cluster-dir").read_bytes()
    assert material.encryption_key == stored
    config = yaml.safe_load(render(cluster, material)["cp1"][ENCRYPTION_CONFIG].content)
    assert (config["apiVersion"], config["kind"]) == ("apiserver.config.k8s.io/v1", "EncryptionConfiguration")
    providers = config["resources"][0]["providers"]
    assert config["resources"][0]["resources"] == ["secrets"]
    assert base64.b64decode(providers[0]["aescbc"]["keys"][0]["secret"]) == stored
    assert providers[-1] == {"identity": {}}, "identity last: Secrets written before encryption stay readable"


def test_damaged_or_missing_key_is_a_clear_error(tmp_path):
    cluster = cluster_of(tmp_path)
    store = PKIStore(cluster)
    store.generate()
    path = secrets.encryption_key_path(store.root)
    path.write_bytes(b"short")
    with pytest.raises(PKIError, match="not a 32-byte key"):
        store.generate()
    assert path.read_bytes() == b"short", "a damaged key is reported, never replaced"
    path.unlink()
    store.generate()  # missing → created again (nothing was encrypted with a key that does not exist)
    path.unlink()
    with pytest.raises(PKIError, match="encryption-key is missing"):
        read_material(store)


def test_no_key_made_when_encryption_is_off(tmp_path):
    cluster = cluster_of(tmp_path, controlPlane={"encryptSecrets": False})
    material = material_for(cluster)
    assert material.encryption_key is None
    assert not secrets.encryption_key_path(tmp_path / "cluster-dir").exists()


# --- golden files -----------------------------------------------------------------------------

GOLDEN_CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "cluster.yaml").exists()) if GOLDEN.exists() else []


def golden_tree(case_dir: Path, tmp: Path) -> dict[str, bytes]:
    doc = yaml.safe_load((case_dir / "cluster.yaml").read_text())
    doc["clusterDir"] = str(tmp / "cluster-dir")
    cluster = Cluster.model_validate(doc)
    out = {}
    for host, tree in render(cluster).items():
        for path, file in tree.items():
            if path == ENCRYPTION_CONFIG:
                continue  # holds the generated key: differs per run, proven by its own test
            out[f"{host}{path}"] = file.content
    return out


def test_golden_cases_exist():
    assert set(GOLDEN_CASES) >= {"one-control-plane", "three-control-planes", "external-etcd"}


@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_golden(case, tmp_path):
    case_dir = GOLDEN / case
    rendered = golden_tree(case_dir, tmp_path)
    if os.environ.get("KUBEPROV_UPDATE_GOLDEN") == "1":
        for old in case_dir.rglob("*"):
            if old.is_file() and old.name != "cluster.yaml":
                old.unlink()
        for rel, content in rendered.items():
            (case_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (case_dir / rel).write_bytes(content)
    expected = {
        str(p.relative_to(case_dir)): p.read_bytes()
        for p in sorted(case_dir.rglob("*")) if p.is_file() and p.name != "cluster.yaml"
    }
    problems = []
    for rel in sorted(set(expected) | set(rendered)):
        if rel not in rendered:
            problems.append(f"--- {rel}: in the golden files but no longer rendered")
        elif rel not in expected:
            problems.append(f"+++ {rel}: rendered but not in the golden files")
        elif rendered[rel] != expected[rel]:
            problems.append("".join(difflib.unified_diff(
                expected[rel].decode().splitlines(True), rendered[rel].decode().splitlines(True),
                fromfile=f"golden/{case}/{rel}", tofile=f"rendered/{rel}",
            )))
    assert not problems, (
        f"rendered files differ from tests/golden/{case} (KUBEPROV_UPDATE_GOLDEN=1 rewrites them):\n" + "\n".join(problems)
    )


@pytest.mark.parametrize("endpoint_port, binds", [(6443, True), (8443, False)])
def test_apiserver_binds_its_own_address_when_haproxy_shares_its_port(tmp_path, endpoint_port, binds):
    """haproxy holds VIP:6443 on every control plane; a wildcard API server socket would clash."""
    cluster = cluster_of(
        tmp_path, hosts=hosts(3), controlPlaneEndpoint=f"10.0.0.100:{endpoint_port}",
        loadBalancer={"mode": "haproxy-keepalived"},
    )
    rendered = render(cluster)
    for host in cluster.hosts:
        api = flags_of(pod(rendered[host.name], "kube-apiserver"))
        assert api.get("bind-address") == (host.advertise_address if binds else None)
