"""One gate: `kubeprov config validate` accepts exactly what `render` and `up` accept.

The renderers used to refuse some settings the model let through (registry mirrors, kubelet and
etcd flags, the HA endpoint, the bridge CNI's addresses), so a file could pass `validate` and then
fail in `render` or halfway through `up`. Those rules are the model's now (config/models.py):
- every former renderer error (and two inputs that crashed a renderer) is walked through the real
  `config validate` and `render` commands: both refuse it with the same single line naming the field;
- whatever the loader accepts renders: every host's tree, the cluster objects, the post-bootstrap
  kube-vip variant and the image list `up` computes, with a real PKI; and the files those rules
  guard (kubeadm-flags.env, hosts.toml, etcd.env) read back well-formed.
"""

from __future__ import annotations

import copy
import re
import tempfile
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provision.artifacts.needs import images
from provision.config.loader import cluster_from_data
from provision.config.models import Cluster, EtcdTopology, KeyAlgorithm, is_ip
from provision.errors import ConfigError
from provision.pki.store import PKIStore, read_material
from provision.render import containerd, etcd, flags, kubelet, render_cluster, render_hosts
from provision.render.cni import render_cni_host
from provision.render.containerd import render_containerd
from provision.render.etcd import render_etcd
from provision.render.ha import render_ha, render_kube_vip_after_bootstrap
from provision.render.kubelet import render_kubelet
from provision.render.node_os import render_node_os
from provision.render.tree import merge as merge_trees
from provision.render.staticpod import manifest_path

from test_config_fuzz import edited_clusters
from testkit import hosts, merge, run_cli

GOOD = {
    "apiVersion": "kubeprov.io/v1alpha1",
    "kind": "Cluster",
    "name": "gate",
    "kubernetesVersion": "v1.31.4",
    "hosts": hosts(1, 2),  # cp1 10.0.0.11, w1 10.0.0.101, w2 10.0.0.102 (internal addresses)
}
ETCD_HOSTS = hosts(1, 1) + [{"name": "e1", "address": "192.0.2.201", "internalAddress": "10.0.0.201", "roles": ["etcd"]}]


def without_internal(index: int, address: str) -> list[dict]:
    found = hosts(1, 2)
    del found[index]["internalAddress"]
    found[index]["address"] = address
    return found


# (case id, overrides of GOOD, the field the line must name, words it must contain)
FORMER_RENDERER_ERRORS = [
    # containerd (render/containerd.py)
    ("mirror-escapes-certs.d", {"containerd": {"registryMirrors": {"../../etc": ["https://m.example"]}}},
     "containerd.registryMirrors.../../etc", "not a registry name"),
    ("mirror-upper-case", {"containerd": {"registryMirrors": {"Docker.IO": ["https://m.example"]}}},
     "containerd.registryMirrors.Docker.IO", "not a registry name"),
    ("mirror-newline-in-name", {"containerd": {"registryMirrors": {"a\nb": ["https://m.example"]}}},
     "containerd.registryMirrors.'a\\nb'", "not a registry name"),
    ("mirror-list-empty", {"containerd": {"registryMirrors": {"docker.io": []}}},
     "containerd.registryMirrors.docker.io", "lists no mirror"),
    ("mirror-not-http", {"containerd": {"registryMirrors": {"docker.io": ["ftp://m.example"]}}},
     "containerd.registryMirrors.docker.io", "'ftp://m.example' is not an http(s) URL"),
    # not a renderer check: the renderer wrote a hosts.toml containerd cannot parse (found by the property test below)
    ("mirror-twice", {"containerd": {"registryMirrors": {"docker.io": ["https://m.example", "https://m.example"]}}},
     "containerd.registryMirrors.docker.io", "lists 'https://m.example' twice"),
    ("mirror-quote", {"containerd": {"registryMirrors": {"docker.io": ['https://m.example/"x']}}},
     "containerd.registryMirrors.docker.io", "is not an http(s) URL"),
    # the renderer crashed on this one (ValueError out of urlsplit)
    ("mirror-unclosed-ipv6", {"containerd": {"registryMirrors": {"docker.io": ["https://[fd00::1"]}}},
     "containerd.registryMirrors.docker.io", "is not an http(s) URL"),
    # kubelet (render/kubelet.py)
    ("kubelet-flag-dashes", {"kubelet": {"extraArgs": {"--v": "2"}}}, "kubelet.extraArgs.--v", "not a kubelet flag name"),
    ("kubelet-flag-upper", {"kubelet": {"extraArgs": {"Node-Labels": "a=b"}}}, "kubelet.extraArgs.Node-Labels",
     "not a kubelet flag name"),
    ("kubelet-value-space", {"kubelet": {"extraArgs": {"node-labels": "a=b c=d"}}}, "kubelet.extraArgs.node-labels",
     "whitespace"),
    ("kubelet-value-quote", {"kubelet": {"extraArgs": {"node-labels": 'a="b"'}}}, "kubelet.extraArgs.node-labels", "quote"),
    ("kubelet-value-dollar", {"kubelet": {"extraArgs": {"node-labels": "a=$b"}}}, "kubelet.extraArgs.node-labels", "$"),
    ("kubelet-pause-flag-gone", {"kubernetesVersion": "v1.35.0", "kubelet": {"extraArgs": {"pod-infra-container-image": "r/pause:3"}}},
     "kubelet.extraArgs.pod-infra-container-image", "removed this flag in v1.35"),
    # external etcd's environment file (render/etcd.py)
    ("etcd-env-quote", {"hosts": ETCD_HOSTS, "etcd": {"topology": "external", "extraArgs": {"log-level": "de'bug"}}},
     "etcd.extraArgs.log-level", "environment file"),
    ("etcd-env-backslash", {"hosts": ETCD_HOSTS, "etcd": {"topology": "external", "extraArgs": {"name": "a\\b"}}},
     "etcd.extraArgs.name", "environment file"),
    ("etcd-env-data-dir", {"hosts": ETCD_HOSTS, "etcd": {"topology": "external", "dataDir": '/var/lib/"etcd"'}},
     "etcd.dataDir", "environment file"),
    ("etcd-env-address", {"hosts": [*ETCD_HOSTS[:2], {"name": "e1", "address": "e1'", "roles": ["etcd"]}],
                          "etcd": {"topology": "external"}},
     "hosts[2].address", "not an address or host name"),
    # the renderer crashed on this one (ValueError out of urlsplit's port)
    ("etcd-metrics-port", {"etcd": {"extraArgs": {"listen-metrics-urls": "http://127.0.0.1:99999"}}},
     "etcd.extraArgs.listen-metrics-urls", "Port out of range"),
    # the HA endpoint (render/ha.py)
    ("kube-vip-without-endpoint", {"loadBalancer": {"mode": "kube-vip"}}, "controlPlaneEndpoint",
     "kube-vip needs a controlPlaneEndpoint"),
    ("haproxy-without-endpoint", {"loadBalancer": {"mode": "haproxy-keepalived"}}, "controlPlaneEndpoint",
     "haproxy-keepalived needs a controlPlaneEndpoint"),
    ("haproxy-dns-endpoint", {"controlPlaneEndpoint": "api.example.test:6443", "loadBalancer": {"mode": "haproxy-keepalived"}},
     "controlPlaneEndpoint", "'api.example.test' is not an IP address"),
    ("kube-vip-port", {"controlPlaneEndpoint": "10.0.0.100:8443", "loadBalancer": {"mode": "kube-vip"}},
     "controlPlaneEndpoint", "port 8443 differs from apiServerPort 6443"),
    ("default-vip-port", {"controlPlaneEndpoint": "10.0.0.100:8443"}, "controlPlaneEndpoint",
     "kube-vip (loadBalancer.mode's default for a VIP)"),
    # the bridge CNI (render/cni/bridge.py)
    ("bridge-pod-subnet-too-small", {"cni": "bridge", "networking": {"podSubnet": "10.244.0.0/23"}},
     "networking.podSubnet", "3 nodes need 3 /24 blocks, it holds 2"),
    ("bridge-ipv6-pod-subnet-too-small", {"cni": "bridge", "networking": {"podSubnet": "fd00:10::/65", "serviceSubnet": "fd00:96::/112"}},
     "networking.podSubnet", "too small for the bridge CNI"),
    ("bridge-other-family", {"cni": "bridge", "networking": {"podSubnet": "fd00:10::/56", "serviceSubnet": "fd00:96::/112"}},
     "hosts[0].internalAddress", "'10.0.0.11' is not one; give it an IPv6 internalAddress"),
]


def one_error_line(code: int, stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    assert code == 2, f"exit code {code}, stderr: {stderr!r}"
    assert len(lines) == 1, f"expected one line on stderr, got: {stderr!r}"
    return lines[0]


@pytest.mark.parametrize("overrides,field,words", [c[1:] for c in FORMER_RENDERER_ERRORS], ids=[c[0] for c in FORMER_RENDERER_ERRORS])
def test_validate_and_render_refuse_alike(tmp_path, overrides, field, words):
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(merge(GOOD, overrides), sort_keys=False))
    line = one_error_line(*run_cli("config", "validate", "-c", path)[::2])
    assert re.search(rf"cluster\.yaml: {re.escape(field)}: ", line), line
    assert words in line, line
    # render refuses at the same gate, with the same line, before it looks for a PKI
    assert one_error_line(*run_cli("render", "-c", path, "-o", tmp_path / "out")[::2]) == line
    assert not (tmp_path / "out").exists()


def test_the_cases_are_valid_without_their_flaw(tmp_path):
    """Each case above is one rule: the base file passes, and so does each case's fix."""
    fixed = [
        {"containerd": {"registryMirrors": {"docker.io": ["https://m.example"], "_default": ["http://10.0.0.5:5000"],
                                            "registry.local:5000": ["https://[fd00::1]:5000"]}}},
        {"kubelet": {"extraArgs": {"v": "2", "node-labels": "a=b,c=d"}}},
        {"kubernetesVersion": "v1.34.0", "kubelet": {"extraArgs": {"pod-infra-container-image": "r/pause:3"}}},
        {"hosts": ETCD_HOSTS, "etcd": {"topology": "external", "extraArgs": {"log-level": "debug"}, "dataDir": "/srv/etcd"}},
        {"etcd": {"extraArgs": {"log-level": "de'bug"}}},  # stacked: a manifest's command list takes any value
        {"etcd": {"extraArgs": {"listen-metrics-urls": "http://127.0.0.1:2381,http://[::1]:2381"}}},
        {"controlPlaneEndpoint": "10.0.0.100", "loadBalancer": {"mode": "kube-vip"}},
        {"controlPlaneEndpoint": "10.0.0.100:8443", "loadBalancer": {"mode": "haproxy-keepalived"}},
        {"controlPlaneEndpoint": "api.example.test:8443"},  # a DNS name: no load balancer of ours
        {"cni": "bridge", "networking": {"podSubnet": "10.244.0.0/22"}},
        # a host known by name: `up` learns its IP on the host (a run-time fact) and validates again
        {"cni": "bridge", "hosts": without_internal(2, "w2.example.test")},
    ]
    for overrides in [{}, *fixed]:
        path = tmp_path / "cluster.yaml"
        path.write_text(yaml.safe_dump(merge(GOOD, overrides), sort_keys=False))
        code, _, stderr = run_cli("config", "validate", "-c", path)
        assert code == 0, (overrides, stderr)


# --- whatever validate accepts renders ---------------------------------------------------------

PROPERTY = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def render_all(cluster: Cluster) -> None:
    """Everything `render` and `up` compute from the file (its trees, the kube-vip variant it swaps
    in after bootstrap, the images prepare places), with a real PKI (ECDSA keys: fast; the
    key algorithm changes no rendered setting)."""
    cluster = cluster.model_copy(update={"certificates": cluster.certificates.model_copy(update={"key_algorithm": KeyAlgorithm.ECDSA_P256})})
    with tempfile.TemporaryDirectory(prefix="kubeprov-gate-") as directory:
        store = PKIStore(cluster, Path(directory))
        store.generate()
        material = read_material(store)
        trees = render_hosts(cluster, material)
        objects = render_cluster(cluster, material)
        for host in cluster.hosts:
            render_kube_vip_after_bootstrap(cluster, host)
        needed = images(cluster)
    assert set(trees) == {h.name for h in cluster.hosts}
    assert objects and needed
    for host in cluster.control_planes:
        assert manifest_path("kube-apiserver") in trees[host.name], host.name
    check_files(cluster, trees)


# The host renderers that read no PKI material: fast enough to run on many more files.
WITHOUT_PKI = (render_kubelet, render_containerd, render_node_os, render_ha, render_etcd, render_cni_host)


def render_without_pki(cluster: Cluster) -> None:
    trees = {host.name: merge_trees(*(renderer(cluster, host, None) for renderer in WITHOUT_PKI)) for host in cluster.hosts}
    for host in cluster.hosts:
        render_kube_vip_after_bootstrap(cluster, host)
    assert images(cluster)
    check_files(cluster, trees)


def check_files(cluster: Cluster, trees: dict) -> None:
    """The files the former renderer checks guarded read back well-formed."""
    for host in cluster.nodes:
        tree = trees[host.name]
        assert kubelet.CONFIG_PATH in tree, host.name
        check_kubelet_env(tree[kubelet.FLAGS_ENV_PATH].content.decode(), cluster.kubelet.extra_args)
        check_mirrors(tree, cluster.containerd.registry_mirrors)
    if cluster.etcd.topology is EtcdTopology.EXTERNAL:
        for host in cluster.etcd_members:
            check_etcd_env(trees[host.name][etcd.ENV_PATH].content.decode(), cluster.etcd.extra_args, cluster.etcd.data_dir)


def check_kubelet_env(text: str, extra_args: dict[str, str]) -> None:
    """systemd expands $KUBELET_KUBEADM_ARGS unquoted: one `--name=value` word per flag."""
    match = re.fullmatch(r'KUBELET_KUBEADM_ARGS="([^"]*)"\n', text)
    assert match, text
    words = match.group(1).split(" ")
    assert all(re.fullmatch(r"--[a-z0-9][a-z0-9.-]*=[^\s\"'\\$]*", word) for word in words), words
    assert {f"--{name}={value}" for name, value in extra_args.items()} <= set(words), words


def check_mirrors(tree: dict, mirrors: dict[str, list[str]]) -> None:
    """One hosts.toml per registry, directly under certs.d, naming each mirror as an http(s) URL."""
    for registry, urls in mirrors.items():
        path = containerd.CERTS_D / registry / "hosts.toml"
        assert path.parent.parent == containerd.CERTS_D and ".." not in path.parts, path
        hosts_toml = tomllib.loads(tree[path].content.decode())
        assert list(hosts_toml["host"]) == urls
        for url in urls:
            parts = urlsplit(url)
            assert parts.scheme in ("http", "https") and parts.hostname, url


def check_etcd_env(text: str, extra_args: dict[str, str], data_dir: str) -> None:
    """etcd.env: `ETCD_NAME=value` lines, values bare (no quoting for systemd to undo)."""
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    pairs = dict(line.split("=", 1) for line in lines)
    assert all(re.fullmatch(r"ETCD_[A-Z0-9_]+", name) for name in pairs), lines
    assert not any(re.search(r"[\"'\\]", value) or value != value.strip() for value in pairs.values()), lines
    expected = {"data-dir": data_dir, **extra_args}
    assert all(pairs[flags.env_name(name)] == value for name, value in expected.items()), lines


def accepted_or_one_line(data: dict) -> Cluster | None:
    """The loader's verdict (what `config validate` prints): a Cluster, or one line naming the field."""
    try:
        return cluster_from_data(data, "gate.yaml", base_dir=Path("/tmp"))
    except ConfigError as exc:
        assert "\n" not in str(exc) and exc.source == "gate.yaml", str(exc)
        return None


def as_rendered(data: dict, learnt_family: int) -> Cluster | None:
    """The cluster `render` and `up` work on, or None where they refuse the file with one line.

    A host known only by a DNS name has no IP in the file: `up` learns it on the host (a run-time
    fact, provision/addresses.py) and validates the cluster again with it as the host's
    internalAddress, and the commands that render refuse such a host until then. Here the learnt
    IPs are of `learnt_family`, which may differ from the pods' (the second validation's business).
    """
    cluster = accepted_or_one_line(data)
    if cluster is None:
        return None
    named = [index for index, host in enumerate(cluster.hosts) if not is_ip(host.advertise_address)]
    if not named:
        return cluster
    data = copy.deepcopy(data)
    for index in named:
        data["hosts"][index]["internalAddress"] = f"10.0.1.{index + 11}" if learnt_family == 4 else f"fd00:1::{index + 11}"
    return accepted_or_one_line(data)


# Values for the fields whose rules are about characters: (fine, flawed). A generated file gets
# flaws in one such field at most, so most files pass and each rule is met often enough to matter.
GOOD_VALUES = ["2", "a=b,c=d", "debug", "/srv/x"]
BAD_VALUES = ["a b", 'a="b"', "a=$b", "a\\b", "x'y", "a\nb"]
FIELDS = {
    "kubelet-names": (["v", "node-labels", "max-pods"], ["--v", "Node-Labels", "pod-infra-container-image"]),
    "kubelet-values": (GOOD_VALUES, BAD_VALUES),
    "etcd-values": (GOOD_VALUES, BAD_VALUES),
    "etcd-metrics": (["http://127.0.0.1:2381", "http://127.0.0.1:2381,http://[::1]:2381", ""],
                     ["http://127.0.0.1:99999", "http://[::1", "http://h:port"]),
    "etcd-data-dir": (["/var/lib/etcd", "/srv/et cd"], ['/var/"etcd', "/var/lib/etcd\n2", "/var\\etcd"]),
    "mirror-names": (["docker.io", "_default", "registry.local:5000"], ["Docker.IO", "../x", "a b"]),
    "mirror-urls": (["https://m.example", "http://10.0.0.5:5000", "https://[fd00::1]:5000"],
                    ["ftp://m", 'https://m/"x', "https://[fd00::1", "https://m .example"]),
    "addresses": (["{kind}{i}.example.test", "192.0.2.{number}"], ["{kind}{i}'", "{kind}\\{i}"]),
}


@st.composite
def near_the_rules(draw):
    """Cluster files around every rule the renderers relied on: addresses by IP or name, both
    IP families, node counts against pod subnet sizes, endpoints against load balancer modes,
    flags and mirrors with and without the characters their files cannot hold."""
    flawed = draw(st.sampled_from([None, *FIELDS]))

    def pick(field: str):
        good, bad = FIELDS[field]
        return st.sampled_from(good + bad * 2 if field == flawed else good)

    pod, service = draw(st.sampled_from([
        ("10.244.0.0/16", "10.96.0.0/12"), ("10.244.0.0/23", "10.96.0.0/12"), ("10.244.0.0/24", "10.96.0.0/12"),
        ("10.244.0.0/25", "10.96.0.0/12"), ("fd00:10::/56", "fd00:96::/112"), ("fd00:10::/63", "fd00:96::/112"),
        ("fd00:10::/65", "fd00:96::/112"),
    ]))
    v6 = ":" in pod
    topology = draw(st.sampled_from(["stacked", "external"]))
    found = []
    counts = {"cp": draw(st.integers(1, 3)), "w": draw(st.integers(0, 3)), "e": draw(st.integers(1, 2)) if topology == "external" else 0}
    roles = {"cp": ["control-plane"], "w": ["worker"], "e": ["etcd"]}
    for kind, count in counts.items():
        for i in range(1, count + 1):
            number = len(found) + 11
            host = {"name": f"{kind}{i}", "address": draw(pick("addresses")).format(kind=kind, i=i, number=number), "roles": roles[kind]}
            same, other = (f"fd00::{number}", f"10.0.0.{number}") if v6 else (f"10.0.0.{number}", f"fd00::{number}")
            # a flawed address matters where the address is used: hosts without an internal address
            internal = draw(st.sampled_from([None] if flawed == "addresses" else [same, same, same, None, other]))
            if internal:
                host["internalAddress"] = internal
            found.append(host)
    data = {
        "apiVersion": "kubeprov.io/v1alpha1", "kind": "Cluster", "name": "gate",
        "kubernetesVersion": draw(st.sampled_from(["v1.28.0", "v1.29.4", "v1.31.4", "v1.34.1", "v1.35.0"])),
        "hosts": found,
        "networking": {"podSubnet": pod, "serviceSubnet": service},
        "cni": draw(st.sampled_from(["bridge", "flannel", "calico", "none"])),
        "apiServerPort": draw(st.sampled_from([6443, 8443])),
        "certificates": {"keyAlgorithm": "ECDSA-P256"},
    }
    endpoint = draw(st.sampled_from([None, "10.0.0.100", "10.0.0.100:6443", "10.0.0.100:8443", "[fd00::100]:6443",
                                     "[fd00::100]", "api.example.test", "api.example.test:6443", "192.0.2.11:6443",
                                     "127.0.0.1:6443"]))
    if endpoint:
        data["controlPlaneEndpoint"] = endpoint
    data["loadBalancer"] = draw(st.fixed_dictionaries({}, optional={
        "mode": st.sampled_from(["none", "kube-vip", "haproxy-keepalived"]), "workerLocalLB": st.booleans()}))
    data["kubelet"] = {"extraArgs": draw(st.dictionaries(pick("kubelet-names"), pick("kubelet-values"), max_size=2))}
    etcd_args = draw(st.dictionaries(st.sampled_from(["log-level", "quota-backend-bytes", "advertise-client-urls"]),
                                     pick("etcd-values"), max_size=2))
    if draw(st.booleans()):
        etcd_args["listen-metrics-urls"] = draw(pick("etcd-metrics"))
    data["etcd"] = {"topology": topology, "extraArgs": etcd_args, "dataDir": draw(pick("etcd-data-dir"))}
    data["containerd"] = {"registryMirrors": draw(st.dictionaries(
        pick("mirror-names"), st.lists(pick("mirror-urls"), min_size=1, max_size=2, unique=flawed != "mirror-urls"), max_size=2))}
    return data


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=near_the_rules(), family=st.sampled_from([4, 6]))
def test_what_validate_accepts_renders_near_the_rules(data, family):
    cluster = as_rendered(data, family)
    if cluster is not None:
        render_without_pki(cluster)


@PROPERTY
@given(data=near_the_rules(), family=st.sampled_from([4, 6]))
def test_what_validate_accepts_renders_with_its_pki_near_the_rules(data, family):
    cluster = as_rendered(data, family)
    if cluster is not None:
        render_all(cluster)


@PROPERTY
@given(data=edited_clusters(), family=st.sampled_from([4, 6]))
def test_what_validate_accepts_renders_after_random_edits(data, family):
    """The loader fuzz's random edits of `config example` (tests/test_config_fuzz.py), rendered."""
    cluster = as_rendered(copy.deepcopy(data), family)
    if cluster is not None:
        render_all(cluster)


def test_the_property_tests_reach_both_verdicts():
    """The generators above are not vacuous: they make files the loader accepts and files it
    refuses under each of the moved rules."""
    accepted, refused = 0, set()
    strategy = near_the_rules()

    @settings(max_examples=600, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(data=strategy)
    def count(data):
        nonlocal accepted
        try:
            cluster_from_data(data, "gate.yaml")
            accepted += 1
        except ConfigError as exc:
            refused.add(re.sub(r"\[\d+\]", "[i]", re.sub(r"(registryMirrors|extraArgs)\..*", r"\1", exc.field or "")))

    count()
    assert accepted >= 10
    moved = {"containerd.registryMirrors", "kubelet.extraArgs", "etcd.extraArgs", "etcd.dataDir", "controlPlaneEndpoint",
             "networking.podSubnet", "hosts[i].internalAddress", "hosts[i].address"}
    assert moved <= refused, moved - refused

