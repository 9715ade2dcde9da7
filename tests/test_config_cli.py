"""`kubeprov config validate` / `config example`, run as the real command.

Every bad input must end the same way: exit code 2 and exactly one line on stderr that names
the file and the field (or the host, for an inventory), never a traceback.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from provision.config.models import Cluster, Model

from testkit import KUBEPROV, hosts, run_cli


GOOD = {
    "apiVersion": "kubeprov.io/v1alpha1",
    "kind": "Cluster",
    "name": "test",
    "kubernetesVersion": "v1.31.4",
    "hosts": hosts(1, 2),
}
# A cluster file for use with -i: everything but the hosts.
SETTINGS = "apiVersion: kubeprov.io/v1alpha1\nkind: Cluster\nkubernetesVersion: v1.31.4\n"


def edited(**changes) -> dict:
    """GOOD with top-level keys replaced (None removes the key)."""
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def with_host(index: int, **changes) -> dict:
    data = edited()
    data["hosts"][index].update(changes)
    return data


def assert_one_line_error(code: int, stderr: str, *needles: str) -> str:
    """Exit 2, one stderr line, no traceback, every needle in that line; returns the line."""
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr
    assert code == 2, f"exit code {code}, stderr: {stderr!r}"
    assert len(lines) == 1, f"expected one line on stderr, got: {stderr!r}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} missing from {lines[0]!r}"
    return lines[0]


# --- the cluster file: model errors -----------------------------------------------------------

# (case id, file contents, field the message must name, a word the message must contain)
MODEL_CASES = [
    ("unknown-top-level-key", edited(kubernetesVerison="v1.31.4"), "kubernetesVerison", "unknown key"),
    ("unknown-capitalised-key", edited(Hosts=[]), "Hosts", "unknown key"),
    ("unknown-nested-key", with_host(1, ssh={"prot": 22}), "hosts[1].ssh.prot", "unknown key"),
    ("port-not-a-number", with_host(1, ssh={"port": "twenty-two"}), "hosts[1].ssh.port", "integer"),
    ("port-out-of-range", with_host(1, ssh={"port": 70000}), "hosts[1].ssh.port", "65535"),
    ("hosts-not-a-list", edited(hosts="cp1"), "hosts", "list"),
    ("roles-unknown", with_host(2, roles=["master"]), "hosts[2].roles[0]", "master"),
    ("pod-subnet-not-a-network", edited(networking={"podSubnet": "10.244.0.0/33"}), "networking.podSubnet", "10.244.0.0/33"),
    ("missing-version", edited(kubernetesVersion=None), "kubernetesVersion", "missing"),
    # 10.96.0.0/12 spans 10.96.0.0-10.111.255.255, so a pod range at 10.100.0.0/16 lies inside it.
    ("subnets-overlap", edited(networking={"podSubnet": "10.100.0.0/16", "serviceSubnet": "10.96.0.0/12"}),
     "networking.serviceSubnet", "overlaps"),
    ("duplicate-name", with_host(2, name="w1"), "hosts[2].name", "duplicate"),
    ("duplicate-address", with_host(2, address=GOOD["hosts"][1]["address"]), "hosts[2].address", "duplicate"),
    ("duplicate-internal-address", with_host(2, internalAddress=GOOD["hosts"][0]["internalAddress"]),
     "hosts[2].internalAddress", "duplicate"),
    ("no-control-plane", edited(hosts=[h for h in hosts(1, 2) if h["roles"] != ["control-plane"]]), "hosts", "control-plane"),
    ("version-too-old", edited(kubernetesVersion="v1.27.16"), "kubernetesVersion", "v1.28"),
    ("version-too-new", edited(kubernetesVersion="v1.36.0"), "kubernetesVersion", "v1.35"),
    ("version-malformed", edited(kubernetesVersion="1.31"), "kubernetesVersion", "1.31"),
    ("flag-value-null", edited(controlPlane={"apiServer": {"extraArgs": {"audit-log-path": None}}}),
     "controlPlane.apiServer.extraArgs.audit-log-path", "string"),
    ("flag-value-list", edited(kubelet={"extraArgs": {"node-labels": ["a=b"]}}), "kubelet.extraArgs.node-labels", "string"),
    ("wrong-api-version", edited(apiVersion="kubeprov.io/v1"), "apiVersion", "kubeprov.io/v1alpha1"),
    ("wrong-kind", edited(kind="ClusterConfiguration"), "kind", "Cluster"),
]


@pytest.mark.parametrize("data,field,word", [c[1:] for c in MODEL_CASES], ids=[c[0] for c in MODEL_CASES])
def test_model_error_is_one_line_naming_file_and_field(tmp_path, data, field, word):
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    code, _, stderr = run_cli("config", "validate", "-c", path)
    line = assert_one_line_error(code, stderr, "cluster.yaml", word)
    assert re.search(rf"cluster\.yaml: {re.escape(field)}: ", line), line


# --- the cluster file: unreadable or malformed --------------------------------------------------

TEXT_CASES = [
    ("yaml-syntax", "apiVersion: kubeprov.io/v1alpha1\nhosts: [\n", "malformed YAML"),
    ("yaml-tab-indent", "apiVersion: kubeprov.io/v1alpha1\nkind: Cluster\nhosts:\n\t- name: a\n", "malformed YAML"),
    ("yaml-duplicate-key", SETTINGS + "kubernetesVersion: v1.30.0\n", "duplicate key 'kubernetesVersion'"),
    ("yaml-python-tag", "!!python/object:os.system {}\n", "malformed YAML"),
    ("yaml-two-documents", SETTINGS + "---\n" + SETTINGS, "malformed YAML"),
    ("yaml-self-alias", "a: &a [*a]\n", "aliases"),
    ("empty-file", "", "empty"),
    ("a-list", "- 1\n- 2\n", "list"),
]


@pytest.mark.parametrize("text,word", [c[1:] for c in TEXT_CASES], ids=[c[0] for c in TEXT_CASES])
def test_malformed_cluster_file(tmp_path, text, word):
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    code, _, stderr = run_cli("config", "validate", "-c", path)
    assert_one_line_error(code, stderr, "cluster.yaml", word)


def test_duplicate_key_names_its_line(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text(SETTINGS + "kubernetesVersion: v1.30.0\n")  # line 4
    code, _, stderr = run_cli("config", "validate", "-c", path)
    assert_one_line_error(code, stderr, "line 4")


def test_yaml_merge_key_may_override_merged_value(tmp_path):
    """`<<: *anchor` then a key of its own is YAML's override, not a duplicate key."""
    path = tmp_path / "cluster.yaml"
    path.write_text(
        SETTINGS
        + "hosts:\n"
        "  - {name: cp1, address: 192.0.2.1, roles: [control-plane], ssh: &base {user: admin, port: 2222}}\n"
        "  - {name: w1, address: 192.0.2.2, roles: [worker], ssh: {<<: *base, user: ops}}\n"
    )
    code, stdout, stderr = run_cli("config", "validate", "-c", path)
    assert code == 0, stderr
    assert "ops@:2222" in stdout and "admin@:2222" in stdout


def test_flag_values_may_be_yaml_numbers_and_booleans(tmp_path):
    """`max-pods: 110` or `profiling: false` are what people write; a command line gets their text."""
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(edited(
        kubelet={"extraArgs": {"max-pods": 110}},
        etcd={"extraArgs": {"quota-backend-bytes": 8589934592}},
        controlPlane={"scheduler": {"extraArgs": {"profiling": False}}},
    )))
    code, _, stderr = run_cli("config", "validate", "-c", path)
    assert (code, stderr) == (0, "")


def test_section_left_empty_means_defaults(tmp_path):
    """Commenting out every line under `etcd:` leaves a YAML null: that is the default section."""
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(GOOD) + "etcd:\n  # topology: external\ncontrolPlane:\n  apiServer:\n")
    code, _, stderr = run_cli("config", "validate", "-c", path)
    assert (code, stderr) == (0, "")


def test_not_utf8(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_bytes(SETTINGS.encode() + b"name: caf\xe9\n")  # latin-1 e-acute
    code, _, stderr = run_cli("config", "validate", "-c", path)
    assert_one_line_error(code, stderr, "cluster.yaml", "UTF-8")


def test_missing_file(tmp_path):
    code, _, stderr = run_cli("config", "validate", "-c", tmp_path / "nowhere.yaml")
    assert_one_line_error(code, stderr, "nowhere.yaml", "no such file")


def test_directory(tmp_path):
    (tmp_path / "cluster.yaml").mkdir()
    code, _, stderr = run_cli("config", "validate", "-c", tmp_path / "cluster.yaml")
    assert_one_line_error(code, stderr, "cluster.yaml", "directory")


def test_fifo_is_refused_without_blocking(tmp_path):
    """Reading a FIFO with no writer would hang forever; it is refused as not a regular file."""
    fifo = tmp_path / "cluster.yaml"
    os.mkfifo(fifo)
    code, _, stderr = run_cli("config", "validate", "-c", fifo, timeout=30)
    assert_one_line_error(code, stderr, "cluster.yaml", "not a regular file")


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed")
def test_unreadable_file(tmp_path):
    """Root reads mode-000 files, so the command runs without CAP_DAC_OVERRIDE/READ_SEARCH."""
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    path.chmod(0)
    caps = "-dac_override,-dac_read_search"
    proc = subprocess.run(
        ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}", str(KUBEPROV), "config", "validate", "-c", str(path)],
        capture_output=True, text=True, timeout=120,
    )
    if os.geteuid() == 0 and "Operation not permitted" in proc.stderr:
        pytest.skip(f"cannot drop capabilities here: {proc.stderr.strip()}")
    assert_one_line_error(proc.returncode, proc.stderr, "cluster.yaml", "permission denied")


def test_no_cluster_file_at_all():
    code, _, stderr = run_cli("config", "validate")
    assert_one_line_error(code, stderr, "-c")


# --- inventories through the CLI: the error names the inventory and the host -------------------


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


INVENTORY_CASES = [
    ("duplicate-address", "hosts.ini",
     "[kube_control_plane]\nnode1 ansible_host=10.0.0.1\n[kube_node]\nnode2 ansible_host=10.0.0.1\n",
     "node2.address", "duplicate"),
    ("port-not-a-number", "hosts.ini",
     "[kube_control_plane]\nnode1 ansible_host=10.0.0.1\nnode2 ansible_host=10.0.0.2 ansible_port=ssh\n",
     "node2.ssh.port", "integer"),
    ("ip-not-an-address", "hosts.ini",
     "[kube_control_plane]\nnode1 ansible_host=10.0.0.1 ip=10.0.0.300\n", "node1.internalAddress", "10.0.0.300"),
    ("bad-node-name", "hosts.ini", "[kube_control_plane]\nNode_1 ansible_host=10.0.0.1\n", "Node_1.name", "node name"),
    ("no-control-plane", "hosts.ini", "[kube_node]\nnode1 ansible_host=10.0.0.1\n", "hosts", "control-plane"),
    ("yaml-port-list", "hosts.yaml",
     "all:\n  children:\n    kube_control_plane:\n      hosts:\n        node1: {ansible_host: 10.0.0.1, ansible_port: [22]}\n",
     "node1.ssh.port", "integer"),
]


@pytest.mark.parametrize("name,text,field,word", [c[1:] for c in INVENTORY_CASES], ids=[c[0] for c in INVENTORY_CASES])
def test_inventory_error_names_inventory_and_host(tmp_path, name, text, field, word):
    config = write(tmp_path, "cluster.yaml", SETTINGS)
    inventory = write(tmp_path, name, text)
    code, _, stderr = run_cli("config", "validate", "-c", config, "-i", inventory)
    line = assert_one_line_error(code, stderr, word)
    assert f"{name}: {field}: " in line, line


MALFORMED_INI = [
    ("unclosed-section", "[kube_control_plane\nnode1\n", "line 1"),
    ("unknown-section-kind", "[kube_control_plane:hostvars]\nnode1\n", "line 1"),
    ("vars-without-equals", "[kube_control_plane]\nnode1\n[all:vars]\nansible_user\n", "line 4"),
    ("host-var-without-equals", "[kube_control_plane]\nnode1 ansible_host\n", "line 2"),
    ("unbalanced-quote", "[kube_control_plane]\nnode1 ansible_user='ad min\n", "line 2"),
    # Ansible reads a `key=value` where a host belongs as a host of that name; the model refuses the name.
    ("var-where-host-belongs", "[kube_control_plane]\nansible_user=admin\n", "not a valid node name"),
    ("two-children-on-a-line", "[k8s_cluster:children]\nkube_control_plane kube_node\n", "line 2"),
    # Ansible expands a range whose start is after its end to no hosts at all.
    ("empty-range", "[kube_control_plane]\nnode[3:1]\n", "no hosts"),
    ("undefined-child", "[kube_control_plane]\nnode1\n[k8s_cluster:children]\nkube_control_plane\nkube_nodes\n", "kube_nodes"),
    ("child-loop", "[a:children]\nb\n[b:children]\na\n[kube_control_plane]\nnode1\n", "loop"),
    # [all:hostvars] would be eaten as console markup if the message were not escaped.
    ("markup-in-message", "[all:hostvars]\nfoo\n", "[all:hostvars]"),
]


@pytest.mark.parametrize("text,where", [c[1:] for c in MALFORMED_INI], ids=[c[0] for c in MALFORMED_INI])
def test_malformed_ini(tmp_path, text, where):
    config = write(tmp_path, "cluster.yaml", SETTINGS)
    inventory = write(tmp_path, "hosts.ini", text)
    code, _, stderr = run_cli("config", "validate", "-c", config, "-i", inventory)
    assert_one_line_error(code, stderr, "hosts.ini", where)


MALFORMED_YAML = [
    # Ansible skips a key it does not know in a group (with a warning); with no hosts left, the
    # error carries that warning.
    ("unknown-group-key", "all:\n  host:\n    node1:\n", "Skipping unexpected key (host) in group (all)"),
    ("hosts-a-list", "all:\n  children:\n    kube_control_plane:\n      hosts: [node1]\n",
     'Invalid "hosts" entry for "kube_control_plane" group, requires a dictionary, found "list"'),
    ("syntax", "all:\n  children: [\n", "line 3, column 1: YAML parsing failed"),
]


@pytest.mark.parametrize("text,where", [c[1:] for c in MALFORMED_YAML], ids=[c[0] for c in MALFORMED_YAML])
def test_malformed_yaml_inventory(tmp_path, text, where):
    config = write(tmp_path, "cluster.yaml", SETTINGS)
    inventory = write(tmp_path, "hosts.yaml", text)
    code, _, stderr = run_cli("config", "validate", "-c", config, "-i", inventory)
    assert_one_line_error(code, stderr, "hosts.yaml: ", where)


def test_hosts_in_both_file_and_inventory(tmp_path):
    config = write(tmp_path, "cluster.yaml", yaml.safe_dump(GOOD))
    inventory = write(tmp_path, "hosts.ini", "[kube_control_plane]\nnode1\n")
    code, _, stderr = run_cli("config", "validate", "-c", config, "-i", inventory)
    assert_one_line_error(code, stderr, "cluster.yaml: hosts: ", "one place")


def test_unreadable_inventory(tmp_path):
    config = write(tmp_path, "cluster.yaml", SETTINGS)
    code, _, stderr = run_cli("config", "validate", "-c", config, "-i", tmp_path / "hosts.ini")
    assert_one_line_error(code, stderr, "hosts.ini", "no such file")


# --- warnings -------------------------------------------------------------------------------


@pytest.mark.parametrize("control_planes", [2, 4])
def test_even_stacked_etcd_is_a_warning(tmp_path, control_planes):
    """Stacked etcd runs one member per control plane; an even member count gains no fault tolerance."""
    path = write(tmp_path, "cluster.yaml", yaml.safe_dump(
        edited(hosts=hosts(control_planes, 1), controlPlaneEndpoint="10.0.0.250:6443")
    ))
    code, stdout, stderr = run_cli("config", "validate", "-c", path)
    assert code == 0, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("warning:") and f"{control_planes} members" in lines[0] and "odd" in lines[0]
    assert "is valid" in stdout


@pytest.mark.parametrize("control_planes", [1, 3])
def test_odd_stacked_etcd_is_quiet(tmp_path, control_planes):
    path = write(tmp_path, "cluster.yaml", yaml.safe_dump(
        edited(hosts=hosts(control_planes, 1), controlPlaneEndpoint="10.0.0.250:6443")
    ))
    code, _, stderr = run_cli("config", "validate", "-c", path)
    assert (code, stderr) == (0, "")


# --- config example -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def example_text() -> str:
    proc = subprocess.run([str(KUBEPROV), "config", "example"], capture_output=True, text=True, timeout=60, check=True)
    return proc.stdout


def test_example_validates(tmp_path, example_text):
    path = write(tmp_path, "cluster.yaml", example_text)
    code, stdout, stderr = run_cli("config", "validate", "-c", path)
    assert (code, stderr) == (0, "")
    assert "is valid" in stdout


# A commented-out setting: '#', one space, then (indented) `key:` or `- key:`. Prose starts with a
# capital letter or does not have that shape, so only example settings match.
_COMMENTED_SETTING = re.compile(r"^(\s*)# (\s*(?:- )?[a-z][A-Za-z0-9.-]*:(?: |$).*)$")


def uncommented(text: str) -> str:
    out = []
    for line in text.splitlines():
        match = _COMMENTED_SETTING.match(line)
        out.append(match.group(1) + match.group(2) if match else line)
    return "\n".join(out) + "\n"


def test_example_commented_settings_are_valid_too(tmp_path, example_text):
    """Every commented-out example, switched on at once, is still a valid cluster file."""
    text = uncommented(example_text)
    assert text != example_text
    path = write(tmp_path, "cluster.yaml", text)
    code, _, stderr = run_cli("config", "validate", "-c", path)
    assert (code, stderr) == (0, ""), stderr


def _keys_by_model(value, model: type[Model], found: dict[type, set[str]]) -> None:
    """Collect, per model class, the keys the document uses wherever that model appears."""
    if not isinstance(value, dict):
        return
    found.setdefault(model, set()).update(value)
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key not in value:
            continue
        for inner in _models_in(info.annotation):
            items = value[key] if isinstance(value[key], list) else [value[key]]
            for item in items:
                _keys_by_model(item, inner, found)


def _models_in(annotation) -> list[type[Model]]:
    """Model classes inside an annotation such as `list[Host]` or `SSH | None`."""
    if isinstance(annotation, type) and issubclass(annotation, Model):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models_in(arg)]


def _all_models(model: type[Model], seen: set | None = None) -> set[type[Model]]:
    seen = set() if seen is None else seen
    if model not in seen:
        seen.add(model)
        for info in model.model_fields.values():
            for inner in _models_in(info.annotation):
                _all_models(inner, seen)
    return seen


def test_example_documents_every_top_level_field(example_text):
    data = yaml.safe_load(uncommented(example_text))
    fields = {info.alias or name for name, info in Cluster.model_fields.items()}
    assert fields - set(data) == set()


def test_example_documents_every_field_of_every_section(example_text):
    """Walks the pydantic model: each section's fields appear somewhere in the example."""
    found: dict[type, set[str]] = {}
    _keys_by_model(yaml.safe_load(uncommented(example_text)), Cluster, found)
    missing = {
        model.__name__: sorted({info.alias or name for name, info in model.model_fields.items()} - found.get(model, set()))
        for model in _all_models(Cluster)
    }
    assert {name: keys for name, keys in missing.items() if keys} == {}


def test_piped_output_is_never_wrapped(tmp_path):
    """A line longer than any terminal (here an error naming a long path) reaches a pipe whole: a
    `kubeadm join` line or a path must survive `$(kubeprov …)`."""
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "missing-cluster.yaml"
    code, out, err = run_cli("config", "validate", "-c", deep)
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and str(deep) in lines[0] and len(lines[0]) > 150, err
