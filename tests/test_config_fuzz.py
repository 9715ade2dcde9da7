"""Fuzzing the loaders: whatever goes in, the outcome is a Cluster (or hosts) or one ConfigError line.

Any other exception — a KeyError, a RecursionError, a pydantic error leaking out — is a bug,
because the CLI would print it as an internal error instead of naming the file and field.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provision.config.inventory import load_inventory
from provision.config.loader import cluster_from_data, load_cluster
from provision.config.models import Cluster, Model
from provision.errors import ConfigError

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory(prefix="kubeprov-fuzz-") as directory:
        yield Path(directory)


def outcome(call):
    """Run `call`; a ConfigError is an allowed outcome (and must be one line), anything else raises."""
    try:
        return call()
    except ConfigError as exc:
        assert "\n" not in str(exc), f"multi-line error: {str(exc)!r}"
        return exc


# --- plausible vocabulary, taken from the model itself ----------------------------------------


def _models(model: type[Model], seen: set) -> set:
    if model not in seen:
        seen.add(model)
        for info in model.model_fields.values():
            for arg in _flatten(info.annotation):
                if isinstance(arg, type) and issubclass(arg, Model):
                    _models(arg, seen)
    return seen


def _flatten(annotation):
    yield annotation
    for arg in getattr(annotation, "__args__", ()):
        yield from _flatten(arg)


TOP_KEYS = sorted({info.alias or name for name, info in Cluster.model_fields.items()}
                  - {"apiVersion", "kind", "kubernetesVersion", "hosts"})
FIELD_KEYS = sorted({info.alias or name for m in _models(Cluster, set()) for name, info in m.model_fields.items()})
WORDS = [
    "v1.31.4", "v1.28.0", "v1.35.9", "v1.27.0", "v1.36.0", "1.31.2", "v1.31", "kubeprov.io/v1alpha1", "Cluster",
    "10.96.0.0/12", "10.244.0.0/16", "10.96.0.0/16", "fd00::/108", "fd00:10::/56", "10.0.0.0/8", "1.2.3.4/33",
    "192.0.2.1", "192.0.2.1", "10.96.0.5", "::1", "[::1]:6443", "api.example:6443", "host:99999", ":6443",
    "cp1", "cp1", "w1", "UPPER", "a_b", "control-plane", "worker", "etcd", "stacked", "external",
    "flannel", "none", "kube-vip", "ipvs", "RSA-2048", "ECDSA-P256", "File", "~/.ssh/id", "~nosuchuser/key",
    "/abs/path", "rel/path", "", " ", "a\nb", "[all:vars]", "*.example.com", "true", "0",
]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.sampled_from(WORDS),
    st.text(max_size=12),
)
keys = st.one_of(st.sampled_from(FIELD_KEYS), st.sampled_from(WORDS), st.integers(0, 3))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=20,
)


def host_like():
    return st.fixed_dictionaries(
        {"name": st.sampled_from(["cp1", "cp2", "w1", "UPPER", ""]),
         "address": st.sampled_from(["192.0.2.1", "192.0.2.2", "10.96.0.5", "host name"]),
         "roles": st.lists(st.sampled_from(["control-plane", "worker", "etcd", "boss"]), max_size=3)},
        optional={"internalAddress": st.sampled_from(["10.0.0.1", "192.0.2.1", "not-ip"]),
                  "ssh": st.dictionaries(st.sampled_from(["user", "port", "key", "knownHosts", "prot"]), scalars, max_size=3)},
    )


clusters = st.fixed_dictionaries(
    {"apiVersion": st.sampled_from(["kubeprov.io/v1alpha1", "kubeprov.io/v1alpha1", "v1"]),
     "kind": st.sampled_from(["Cluster", "Cluster", "Node"]),
     "kubernetesVersion": st.one_of(st.sampled_from(WORDS), scalars),
     "hosts": st.one_of(st.lists(host_like(), min_size=1, max_size=4), values)},
    optional={key: values for key in TOP_KEYS},
)


# A valid cluster with every section, then a few random edits: explores the space near valid
# files, where cross-field rules and path resolution run (random dicts rarely get that far).
BASE = yaml.safe_load((Path(__file__).parent.parent / "provision" / "config" / "example.yaml").read_text())


@st.composite
def edited_clusters(draw):
    data = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        parent, node = None, data
        key = None
        # Walk down a random path, stopping anywhere.
        while isinstance(node, (dict, list)) and node and draw(st.booleans()):
            parent = node
            key = draw(st.sampled_from(sorted(node, key=str))) if isinstance(node, dict) else draw(
                st.integers(0, len(node) - 1)
            )
            node = node[key]
        action = draw(st.sampled_from(["replace", "delete", "add", "duplicate"]))
        if action == "add" and isinstance(node, dict):
            node[draw(keys)] = draw(values)
        elif action == "add" and isinstance(node, list):
            node.append(draw(values))
        elif action == "duplicate" and isinstance(node, list) and node:
            node.append(copy.deepcopy(node[0]))
        elif parent is not None and action == "delete":
            del parent[key]
        elif parent is not None:
            parent[key] = draw(values)
    return data


# --- structured input into the model --------------------------------------------------------


@FAST
@given(data=edited_clusters())
def test_edited_valid_cluster_gives_cluster_or_config_error(data):
    result = outcome(lambda: cluster_from_data(data, "fuzz.yaml", base_dir=Path("/tmp")))
    assert isinstance(result, (Cluster, ConfigError))


@FAST
@given(data=clusters)
def test_structured_data_gives_cluster_or_config_error(data):
    result = outcome(lambda: cluster_from_data(data, "fuzz.yaml", base_dir=Path("/tmp")))
    assert isinstance(result, (Cluster, ConfigError))
    if isinstance(result, ConfigError):
        assert result.source == "fuzz.yaml"


@FAST
@given(data=values)
def test_any_yaml_value_gives_cluster_or_config_error(data):
    result = outcome(lambda: cluster_from_data(data, "fuzz.yaml"))
    assert isinstance(result, (Cluster, ConfigError))


# --- text and bytes into the cluster-file loader ----------------------------------------------

yaml_like = st.lists(
    st.one_of(
        st.sampled_from([
            "apiVersion: kubeprov.io/v1alpha1", "kind: Cluster", "kubernetesVersion: v1.31.4", "hosts:",
            "  - name: cp1", "    address: 192.0.2.1", "    roles: [control-plane]", "  - {name: w1, address: 192.0.2.2, roles: [worker]}",
            "networking:", "  podSubnet: 10.244.0.0/16", "  serviceSubnet: 10.96.0.0/12", "etcd:", "  topology: external",
            "a: &a [*a]", "b: *a", "<<: {x: 1}", "--- ", "!!python/object:os.system x", "\t- tab", "key: 'unclosed",
            "controlPlane:", "  apiServer:", "    extraArgs: {a: 1, b: true, c: null}", "x: {? [1, 2] : 3}",
        ]),
        st.text(max_size=20),
    ),
    max_size=12,
).map("\n".join)


@FAST
@given(text=st.one_of(yaml_like, st.text(max_size=200)))
def test_cluster_file_text(scratch, text):
    path = scratch / "cluster.yaml"
    path.write_bytes(text.encode("utf-8", errors="replace"))  # lone surrogates cannot be UTF-8
    assert isinstance(outcome(lambda: load_cluster(path)), (Cluster, ConfigError))


@FAST
@given(raw=st.binary(max_size=300))
def test_cluster_file_bytes(scratch, raw):
    path = scratch / "cluster.yaml"
    path.write_bytes(raw)
    assert isinstance(outcome(lambda: load_cluster(path)), (Cluster, ConfigError))


# --- text and bytes into the inventory loaders --------------------------------------------------

ini_like = st.lists(
    st.one_of(
        st.sampled_from([
            "[kube_control_plane]", "[kube_node]", "[etcd]", "[etcd:children]", "[k8s_cluster:children]",
            "[all:vars]", "[k8s_cluster:vars]", "[kube-master]", "[calico_rr]", "[bad:kind]", "[unclosed", "[]",
            "kube_control_plane", "kube_node", "k8s_cluster", "node1", "node2 ansible_host=10.0.0.2",
            "node[1:3] ansible_user=admin", "node[3:1]", "node[01:1]", "node[a:c]:2222", "node[1:300]",
            "node[0:9][0:9]", "node1 ansible_port=x", "node1 ansible_port=22 ip=10.0.0.1",
            "ansible_user=ubuntu", "ansible_port = 2200", "node1 'unbalanced", "node1 key", "w1:22 ip=10.0.0.300",
            "# comment", "; comment", "node1 ansible_host={{ ip }}",
        ]),
        st.text(max_size=20),
    ),
    max_size=15,
).map("\n".join)


@FAST
@given(text=st.one_of(ini_like, st.text(max_size=200)))
def test_ini_inventory_text(scratch, text):
    path = scratch / "hosts.ini"
    path.write_bytes(text.encode("utf-8", errors="replace"))
    assert isinstance(outcome(lambda: load_inventory(path)), (list, ConfigError))


inventory_groups = st.recursive(
    st.one_of(st.none(), scalars),
    lambda inner: st.dictionaries(
        st.one_of(st.sampled_from(["hosts", "vars", "children", "all", "kube_control_plane", "kube_node", "etcd",
                                   "k8s_cluster", "node1", "node[1:2]", "n:22", "ansible_host", "ansible_port", "ip"]), keys),
        inner, max_size=4,
    ),
    max_leaves=25,
)


@FAST
@given(data=inventory_groups)
def test_yaml_inventory_structures(scratch, data):
    path = scratch / "hosts.yaml"
    path.write_text(yaml.safe_dump(data))
    assert isinstance(outcome(lambda: load_inventory(path)), (list, ConfigError))


@FAST
@given(raw=st.binary(max_size=300))
def test_yaml_inventory_bytes(scratch, raw):
    path = scratch / "hosts.yaml"
    path.write_bytes(raw)
    assert isinstance(outcome(lambda: load_inventory(path)), (list, ConfigError))


@FAST
@given(text=st.one_of(ini_like, yaml_like))
def test_inventory_through_cluster_loader(scratch, text):
    """Inventory hosts go through the model, so model errors must map back to host names."""
    config = scratch / "settings.yaml"
    config.write_text("apiVersion: kubeprov.io/v1alpha1\nkind: Cluster\nkubernetesVersion: v1.31.4\n")
    inventory = scratch / "hosts"
    inventory.write_bytes(text.encode("utf-8", errors="replace"))
    assert isinstance(outcome(lambda: load_cluster(config, inventory)), (Cluster, ConfigError))
