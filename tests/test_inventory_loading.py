"""Ansible inventories (INI and YAML, kubespray's groups) → the cluster's hosts.

Expectations are written from Ansible's documented rules, not from the loader: a child group's
hosts belong to its parents; a variable set on the host beats one set on a group; a deeper
(child) group beats its parent; groups at the same depth merge in name order, the last winning;
`all` is the weakest. kubespray: kube_control_plane → control plane, kube_node → worker, etcd.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from provision.config import load_cluster
from provision.config.inventory import MAX_HOSTS, InventoryWarning, load_inventory
from provision.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "inventories" / "sample"
SETTINGS = "apiVersion: kubeprov.io/v1alpha1\nkind: Cluster\nkubernetesVersion: v1.31.4\n"


def run_cli(*args) -> tuple[int, str, str]:
    """The installed `kubeprov` (not conftest's helper: tests/lab/conftest.py can shadow that name)."""
    proc = subprocess.run([str(Path(sys.executable).parent / "kubeprov"), *map(str, args)],
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def load(tmp_path: Path, name: str, text: str):
    """The Cluster from a minimal cluster file plus the inventory `text` saved as `name`."""
    config = tmp_path / "cluster.yaml"
    config.write_text(SETTINGS)
    inventory = tmp_path / name
    inventory.write_text(text)
    return load_cluster(config, inventory)


def table(cluster) -> list[tuple]:
    """(name, address, internal address or None, roles, user, port) per host, in cluster order."""
    return [
        (h.name, h.address, h.internal_address, tuple(r.value for r in h.roles), h.ssh.user, h.ssh.port)
        for h in cluster.hosts
    ]


# --- shapes ---------------------------------------------------------------------------------

KUBESPRAY_INI = """\
# Configure 'ip' variable to bind kubernetes services on a different ip than the default iface
[kube_control_plane]
node1 ansible_host=95.54.0.12 ip=10.3.0.1 etcd_member_name=etcd1
node2 ansible_host=95.54.0.13 ip=10.3.0.2 etcd_member_name=etcd2
node3 ansible_host=95.54.0.14 ip=10.3.0.3 etcd_member_name=etcd3

[etcd:children]
kube_control_plane

[kube_node]
node4 ansible_host=95.54.0.15 ip=10.3.0.4 etcd_member_name=
node5 ansible_host=95.54.0.16 ip=10.3.0.5   # a trailing comment

[calico_rr]

[k8s_cluster:children]
kube_control_plane
kube_node
calico_rr
"""

CP_ETCD = ("control-plane", "etcd")


def test_kubespray_ini(tmp_path):
    assert table(load(tmp_path, "inventory.ini", KUBESPRAY_INI)) == [
        ("node1", "95.54.0.12", "10.3.0.1", CP_ETCD, "root", 22),
        ("node2", "95.54.0.13", "10.3.0.2", CP_ETCD, "root", 22),
        ("node3", "95.54.0.14", "10.3.0.3", CP_ETCD, "root", 22),
        ("node4", "95.54.0.15", "10.3.0.4", ("worker",), "root", 22),
        ("node5", "95.54.0.16", "10.3.0.5", ("worker",), "root", 22),
    ]


KUBESPRAY_YAML = """\
all:
  hosts:
    node1: {ansible_host: 10.10.1.3, ip: 10.10.1.3, access_ip: 10.10.1.3}
    node2: {ansible_host: 10.10.1.4, ip: 10.10.1.4, access_ip: 10.10.1.4}
    node3: {ansible_host: 10.10.1.5, ip: 10.10.1.5, access_ip: 10.10.1.5}
  children:
    kube_control_plane:
      hosts:
        node1:
        node2:
    kube_node:
      hosts:
        node1:
        node2:
        node3:
    etcd:
      hosts:
        node1:
        node2:
        node3:
    k8s_cluster:
      children:
        kube_control_plane:
        kube_node:
    calico_rr:
      hosts: {}
"""


def test_kubespray_yaml_with_external_etcd(tmp_path):
    """node3 is an etcd member but no control plane: only valid with etcd.topology external."""
    config = tmp_path / "cluster.yaml"
    config.write_text(SETTINGS + "etcd: {topology: external}\n")
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text(KUBESPRAY_YAML)
    cluster = load_cluster(config, inventory)
    assert table(cluster) == [
        ("node1", "10.10.1.3", "10.10.1.3", ("control-plane", "worker", "etcd"), "root", 22),
        ("node2", "10.10.1.4", "10.10.1.4", ("control-plane", "worker", "etcd"), "root", 22),
        ("node3", "10.10.1.5", "10.10.1.5", ("worker", "etcd"), "root", 22),
    ]
    assert [h.name for h in cluster.etcd_members] == ["node1", "node2", "node3"]


def test_kubespray_yaml_etcd_outside_control_plane_with_stacked_etcd_is_refused(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, "hosts.yaml", KUBESPRAY_YAML)
    assert caught.value.source.endswith("hosts.yaml")
    assert caught.value.field == "node3.roles"


def test_ranges_ports_and_legacy_group_names(tmp_path):
    text = """\
[kube-master]
master[1:3:2] ansible_user=core
[kube-node]
worker-[a:b]:2201
node[08:10]
"""
    assert table(load(tmp_path, "hosts", text)) == [
        ("master1", "master1", None, ("control-plane",), "core", 22),
        ("master3", "master3", None, ("control-plane",), "core", 22),
        ("worker-a", "worker-a", None, ("worker",), "root", 2201),
        ("worker-b", "worker-b", None, ("worker",), "root", 2201),
        ("node08", "node08", None, ("worker",), "root", 22),
        ("node09", "node09", None, ("worker",), "root", 22),
        ("node10", "node10", None, ("worker",), "root", 22),
    ]


def test_yaml_ranges_and_ports(tmp_path):
    text = """\
kube_control_plane:
  hosts:
    cp[1:2]:
      ansible_ssh_user: legacy
kube_node:
  hosts:
    "w1:2022": {ansible_ssh_host: 192.0.2.7}
"""
    assert table(load(tmp_path, "hosts", text)) == [
        ("cp1", "cp1", None, ("control-plane",), "legacy", 22),
        ("cp2", "cp2", None, ("control-plane",), "legacy", 22),
        ("w1", "192.0.2.7", None, ("worker",), "root", 2022),
    ]


def test_control_planes_come_first_then_inventory_order(tmp_path):
    text = """\
[kube_node]
w2
w1
[kube_control_plane]
cp2
cp1
[etcd]
cp2
cp1
"""
    assert [h.name for h in load(tmp_path, "hosts.ini", text).hosts] == ["cp2", "cp1", "w2", "w1"]


def test_hosts_outside_role_groups_are_not_cluster_hosts(tmp_path):
    text = "[bastion]\njump ansible_host=192.0.2.99\n[kube_control_plane]\ncp1\n"
    assert [h.name for h in load(tmp_path, "hosts.ini", text).hosts] == ["cp1"]


def test_ssh_settings_and_relative_key(tmp_path):
    text = """\
[kube_control_plane]
cp1 ansible_host=192.0.2.1 ansible_user=ops ansible_port=2200 ansible_ssh_private_key_file=keys/id_ed25519
cp2 ansible_host=192.0.2.2 ansible_private_key_file=/etc/kubeprov/id
"""
    cluster = load(tmp_path, "hosts.ini", text)
    cp1, cp2 = cluster.hosts
    assert (cp1.ssh.user, cp1.ssh.port) == ("ops", 2200)
    # Relative paths are relative to the cluster file, like every path in it.
    assert cp1.ssh.key == tmp_path / "keys" / "id_ed25519"
    assert cp2.ssh.key == Path("/etc/kubeprov/id")


def test_paths_relative_to_the_cluster_file(tmp_path, monkeypatch):
    """clusterDir, ssh.key and ssh.knownHosts: relative means beside the file, not the working directory."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = tmp_path / "conf" / "cluster.yaml"
    config.parent.mkdir()
    config.write_text(SETTINGS + "clusterDir: state/demo\n")
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[kube_control_plane]\ncp1 ansible_ssh_private_key_file=id\n")
    cluster = load_cluster(config, inventory)
    assert cluster.cluster_dir == tmp_path / "conf" / "state" / "demo"
    assert cluster.hosts[0].ssh.key == tmp_path / "conf" / "id"


def test_cluster_dir_tilde_is_the_home_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = tmp_path / "cluster.yaml"
    config.write_text(SETTINGS + "clusterDir: ~/.kubeprov/demo\nhosts: [{name: cp1, address: 192.0.2.1, roles: [control-plane],"
                      " ssh: {key: ~/.ssh/id, knownHosts: kh}}]\n")
    cluster = load_cluster(config)
    assert cluster.cluster_dir == tmp_path / "home" / ".kubeprov" / "demo"
    assert str(cluster.hosts[0].ssh.key) == "~/.ssh/id"  # expanded by whoever runs ssh
    assert cluster.hosts[0].ssh.known_hosts == tmp_path / "kh"


def test_tilde_of_unknown_user_is_a_config_error(tmp_path):
    config = tmp_path / "cluster.yaml"
    config.write_text(SETTINGS)
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[kube_control_plane]\ncp1 ansible_ssh_private_key_file=~no-such-user-here/id\n")
    with pytest.raises(ConfigError) as caught:
        load_cluster(config, inventory)
    assert (Path(caught.value.source).name, caught.value.field) == ("hosts.ini", "cp1.ssh.key")


def test_quoted_values(tmp_path):
    text = """\
[kube_control_plane]
cp1 ansible_host="192.0.2.1" ansible_user='the-admin'
[all:vars]
ansible_port = "2200"
"""
    assert table(load(tmp_path, "hosts.ini", text)) == [("cp1", "192.0.2.1", None, ("control-plane",), "the-admin", 2200)]


def test_inventory_directory(tmp_path):
    directory = tmp_path / "mycluster"
    directory.mkdir()
    (directory / "hosts.yaml").write_text("all:\n  children:\n    kube_control_plane:\n      hosts: {cp1: }\n")
    assert [h["name"] for h in load_inventory(directory)] == ["cp1"]


def test_extensionless_file_is_detected_as_yaml_or_ini(tmp_path):
    (tmp_path / "a").write_text("# comment\nall:\n  children:\n    kube_control_plane:\n      hosts: {cp1: }\n")
    (tmp_path / "b").write_text("# comment\ncp0\n[kube_control_plane]\ncp1\n")
    (tmp_path / "c").write_text('{"kube_control_plane": {"hosts": {"cp1": null}}}\n')
    assert [h["name"] for h in load_inventory(tmp_path / "a")] == ["cp1"]
    assert [h["name"] for h in load_inventory(tmp_path / "b")] == ["cp1"]
    assert [h["name"] for h in load_inventory(tmp_path / "c")] == ["cp1"]


# --- variable precedence --------------------------------------------------------------------

PRECEDENCE_INI = """\
[all:vars]
ansible_user=from-all
ansible_port=2001

[k8s_cluster:children]
kube_control_plane
kube_node

[k8s_cluster:vars]
ansible_user=from-parent
ansible_port=2002

[kube_node:vars]
ansible_user=from-child

[kube_control_plane]
cp1 ansible_user=from-host

[kube_node]
w1
w2 ansible_port=2009

[extra]
w3
[kube_node_extra:children]
extra
[kube_node:children]
kube_node_extra
"""


def test_var_precedence_ini(tmp_path):
    """host > child group > parent group > all, var by var."""
    assert [(h.name, h.ssh.user, h.ssh.port) for h in load(tmp_path, "hosts.ini", PRECEDENCE_INI).hosts] == [
        ("cp1", "from-host", 2002),  # user set on the host; port from k8s_cluster (all is weaker)
        ("w1", "from-child", 2002),  # kube_node (child) beats k8s_cluster (parent)
        ("w2", "from-child", 2009),
        ("w3", "from-child", 2002),  # via extra → kube_node_extra → kube_node → k8s_cluster
    ]


PRECEDENCE_YAML = """\
all:
  vars: {ansible_user: from-all, ansible_port: 2001}
  children:
    k8s_cluster:
      vars: {ansible_user: from-parent, ansible_port: 2002}
      children:
        kube_control_plane:
          hosts:
            cp1: {ansible_user: from-host}
        kube_node:
          vars: {ansible_user: from-child}
          hosts:
            w1:
            w2: {ansible_port: 2009}
    etcd:
      hosts:
        cp1:
    unrelated:
      vars: {ansible_user: from-unrelated}
      hosts:
        other:
"""


def test_var_precedence_yaml(tmp_path):
    assert [(h.name, h.ssh.user, h.ssh.port) for h in load(tmp_path, "hosts.yaml", PRECEDENCE_YAML).hosts] == [
        ("cp1", "from-host", 2002),
        ("w1", "from-child", 2002),
        ("w2", "from-child", 2009),
    ]


def test_same_depth_groups_merge_in_name_order(tmp_path):
    """Two sibling groups set the same var: the one whose name sorts last wins (Ansible's rule)."""
    text = """\
[kube_control_plane]
cp1
[zone_b]
cp1
[zone_a]
cp1
[zone_a:vars]
ansible_user=a
[zone_b:vars]
ansible_user=b
"""
    assert load(tmp_path, "hosts.ini", text).hosts[0].ssh.user == "b"


def test_depth_is_the_longest_path_from_all(tmp_path):
    """`deep` is declared at the top but is also all → top → mid → deep: depth 3, deeper than
    `mid` (2), so its vars win. Counting the shortest path (1) would let `mid` win."""
    text = """\
[kube_control_plane]
cp1
[deep]
cp1
[top:children]
mid
[mid:children]
deep
[mid:vars]
ansible_user=mid
[deep:vars]
ansible_user=deep
"""
    assert load(tmp_path, "hosts.ini", text).hosts[0].ssh.user == "deep"


def test_host_vars_from_several_sections_merge_last_wins(tmp_path):
    text = """\
[kube_control_plane]
cp1 ansible_host=192.0.2.1 ansible_user=first
[etcd]
cp1 ansible_user=second
"""
    assert table(load(tmp_path, "hosts.ini", text)) == [("cp1", "192.0.2.1", None, CP_ETCD, "second", 22)]


# --- the shipped samples --------------------------------------------------------------------


@pytest.mark.parametrize("inventory", ["hosts.ini", "hosts.yaml"])
def test_sample_inventories_validate(inventory):
    code, stdout, stderr = run_cli("config", "validate", "-c", SAMPLE / "cluster.yaml", "-i", SAMPLE / inventory)
    assert (code, stderr) == (0, "")
    assert "is valid" in stdout


def test_sample_inventories_describe_the_same_cluster():
    ini = load_cluster(SAMPLE / "cluster.yaml", SAMPLE / "hosts.ini")
    yaml_ = load_cluster(SAMPLE / "cluster.yaml", SAMPLE / "hosts.yaml")
    assert ini.hosts == yaml_.hosts
    assert table(ini) == [
        ("node1", "192.0.2.11", "10.10.1.11", CP_ETCD, "admin", 22),
        ("node2", "192.0.2.12", "10.10.1.12", CP_ETCD, "admin", 22),
        ("node3", "192.0.2.13", "10.10.1.13", CP_ETCD, "admin", 22),
        ("node4", "192.0.2.14", "10.10.1.14", ("worker",), "ubuntu", 22),
        ("node5", "192.0.2.15", "10.10.1.15", ("worker",), "ubuntu", 2222),
    ]
    assert {str(h.ssh.key) for h in ini.hosts} == {"~/.ssh/kubeprov_ed25519"}


# --- read by ansible-core: group_vars/, host_vars/, plugins, as `ansible-inventory` sees it --------

ANSIBLE_INVENTORY = Path(sys.executable).parent / "ansible-inventory"

KUBESPRAY_TREE_INI = """\
[kube_control_plane]
cp[1:3]

[etcd:children]
kube_control_plane

[kube_node]
w[01:02]

[k8s_cluster:children]
kube_control_plane
kube_node

[kube_node:vars]
ansible_port=2300
"""

KUBESPRAY_TREE_YAML = """\
all:
  children:
    k8s_cluster:
      children:
        kube_control_plane:
          hosts:
            cp[1:3]:
        kube_node:
          vars: {ansible_port: 2300}
          hosts:
            w[01:02]:
    etcd:
      children:
        kube_control_plane:
"""


def kubespray_tree(root: Path, inventory_name: str, inventory_text: str) -> Path:
    """kubespray's inventory/<cluster>/ layout: the hosts file, group_vars/ and host_vars/ as files
    and as directories of files."""
    files = {
        inventory_name: inventory_text,
        "group_vars/all.yml": "ansible_user: from-all\nansible_port: 2200\n",
        # a group's directory: every file in it is read
        "group_vars/k8s_cluster/ssh.yml": "ansible_user: from-k8s-cluster\n",
        "group_vars/k8s_cluster/keys.yaml": "ansible_ssh_private_key_file: /etc/kubeprov/id\n",
        "group_vars/kube_node.yml": "ansible_user: from-kube-node\n",
        "host_vars/cp1.yml": "ansible_host: 192.0.2.11\nip: 10.0.0.11\nansible_user: from-host-vars\n",
        "host_vars/w01/net.yml": "ansible_host: 192.0.2.21\nip: 10.0.0.21\n",
        "host_vars/w01/ssh.yml": "ansible_port: 2022\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root / inventory_name


def ansible_inventory_list(inventory: Path, cwd: Path) -> dict:
    """What `ansible-inventory -i INVENTORY --list` prints, run where no group_vars/ lie around."""
    proc = subprocess.run([str(ANSIBLE_INVENTORY), "-i", str(inventory), "--list"], cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def kubespray_view(listing: dict) -> dict[str, dict]:
    """Each host of `ansible-inventory --list` output through kubespray's conventions (the role
    groups and the connection variables), worked out here from the listing alone."""
    groups = {name: body for name, body in listing.items() if name != "_meta"}

    def members(group: str) -> set[str]:
        body = groups.get(group, {})
        return set(body.get("hosts", [])).union(*(members(child) for child in body.get("children", [])))

    roles = {"kube_control_plane": "control-plane", "kube_node": "worker", "etcd": "etcd"}
    hostvars = listing["_meta"]["hostvars"]
    view = {}
    for group, role in roles.items():
        for host in members(group):
            view.setdefault(host, {"roles": set()})["roles"].add(role)
    for host, entry in view.items():
        found = hostvars.get(host, {})
        entry.update(address=found.get("ansible_host", host), internalAddress=found.get("ip"),
                     user=found.get("ansible_user"), port=found.get("ansible_port"),
                     key=found.get("ansible_ssh_private_key_file"))
    return view


def kubeprov_view(hosts: list[dict]) -> dict[str, dict]:
    return {
        h["name"]: {"roles": set(h["roles"]), "address": h["address"], "internalAddress": h.get("internalAddress"),
                    "user": h.get("ssh", {}).get("user"), "port": h.get("ssh", {}).get("port"),
                    "key": h.get("ssh", {}).get("key")}
        for h in hosts
    }


@pytest.mark.parametrize("name,text", [("hosts.ini", KUBESPRAY_TREE_INI), ("hosts.yaml", KUBESPRAY_TREE_YAML)])
def test_group_vars_and_host_vars_as_ansible_reads_them(tmp_path, name, text):
    inventory = kubespray_tree(tmp_path / "mycluster", name, text)
    hosts = load_inventory(inventory)
    # Written from Ansible's rules: host_vars beat group_vars; a child group (kube_node) beats its
    # parent (k8s_cluster), which beats all; a group's directory of files counts as one group file;
    # any group_vars/ file (all.yml's port) beats the inventory file's own group variables (2300).
    assert [(h["name"], h["address"], h.get("internalAddress"), h["ssh"]["user"], h["ssh"]["port"]) for h in hosts] == [
        ("cp1", "192.0.2.11", "10.0.0.11", "from-host-vars", 2200),
        ("cp2", "cp2", None, "from-k8s-cluster", 2200),
        ("cp3", "cp3", None, "from-k8s-cluster", 2200),
        ("w01", "192.0.2.21", "10.0.0.21", "from-kube-node", 2022),
        ("w02", "w02", None, "from-kube-node", 2200),
    ]
    assert {h["ssh"]["key"] for h in hosts} == {"/etc/kubeprov/id"}
    # ansible-inventory itself, run in an empty directory, sees the same hosts, groups and variables.
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    assert kubeprov_view(hosts) == kubespray_view(ansible_inventory_list(inventory, empty))


def test_inventory_directory_with_group_vars(tmp_path):
    """`-i inventory/mycluster/` as kubespray users pass it: Ansible reads every inventory file in it
    and the group_vars/ and host_vars/ beside them."""
    directory = tmp_path / "mycluster"
    kubespray_tree(directory, "hosts.ini", KUBESPRAY_TREE_INI)
    from_directory = load_inventory(directory)
    assert from_directory == load_inventory(directory / "hosts.ini")
    assert kubeprov_view(from_directory) == kubespray_view(ansible_inventory_list(directory, tmp_path))


def test_group_vars_in_the_working_directory_are_not_read(tmp_path, monkeypatch):
    """With no playbook, Ansible also reads ./group_vars; kubeprov reads only the inventory's own,
    so the cluster does not depend on where the command runs."""
    inventory = kubespray_tree(tmp_path / "mycluster", "hosts.ini", KUBESPRAY_TREE_INI)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "group_vars").mkdir(parents=True)
    (elsewhere / "group_vars" / "all.yml").write_text("ansible_host: 203.0.113.1\n")
    monkeypatch.chdir(elsewhere)
    assert "203.0.113.1" not in {h["address"] for h in load_inventory(inventory)}


def test_variables_written_as_templates_are_rendered(tmp_path):
    """kubespray inventories derive addresses from other variables; Ansible renders them when it connects."""
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text('ip: "{{ ansible_host }}"\nansible_user: "{{ admin_user }}"\n'
                                                     "admin_user: ops\n")
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[kube_control_plane]\ncp1 ansible_host=192.0.2.1\ncp2 ansible_host=192.0.2.2\n")
    assert [(h["name"], h["internalAddress"], h["ssh"]["user"]) for h in load_inventory(inventory)] == [
        ("cp1", "192.0.2.1", "ops"), ("cp2", "192.0.2.2", "ops"),
    ]


def test_template_of_an_undefined_variable_names_host_variable_and_file(tmp_path):
    (tmp_path / "group_vars").mkdir()
    group_vars = tmp_path / "group_vars" / "kube_control_plane.yml"
    group_vars.write_text('ip: "{{ no_such_variable }}"\n')
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[kube_control_plane]\ncp1\n")
    with pytest.raises(ConfigError) as caught:
        load_inventory(inventory)
    assert (caught.value.source, caught.value.field) == (str(group_vars), "cp1")
    assert "ip" in caught.value.message and "no_such_variable" in caught.value.message


def test_inventory_script(tmp_path):
    """The script plugin (enabled by default): an executable that prints the inventory as JSON."""
    script = tmp_path / "inventory.sh"
    listing = {
        "kube_control_plane": {"hosts": ["cp1"], "vars": {"ansible_user": "ops"}},
        "kube_node": {"hosts": ["w1"]},
        "_meta": {"hostvars": {"cp1": {"ansible_host": "192.0.2.5"}, "w1": {"ansible_port": 2201}}},
    }
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{json.dumps(listing)}\nEOF\n")
    script.chmod(0o755)
    hosts = load_inventory(script)
    assert [(h["name"], h["address"], h["roles"], h.get("ssh")) for h in hosts] == [
        ("cp1", "192.0.2.5", ["control-plane"], {"user": "ops"}),
        ("w1", "w1", ["worker"], {"port": 2201}),
    ]
    assert kubeprov_view(hosts) == kubespray_view(ansible_inventory_list(script, tmp_path))


def test_inventory_plugin_config(tmp_path):
    """A plugin config read through the `auto` plugin, the plugin named by its full name."""
    config = tmp_path / "generated.yml"
    config.write_text("""\
plugin: ansible.builtin.generator
hosts:
  name: "{{ kind }}{{ n }}"
  parents:
    - name: "{{ 'kube_control_plane' if kind == 'cp' else 'kube_node' }}"
layers:
  kind: [cp, worker]
  n: ["1", "2"]
""")
    hosts = load_inventory(config)
    assert [(h["name"], h["roles"]) for h in hosts] == [
        ("cp1", ["control-plane"]), ("cp2", ["control-plane"]), ("worker1", ["worker"]), ("worker2", ["worker"]),
    ]


@pytest.mark.parametrize("where", ["group_vars/all.yml", "group_vars/k8s_cluster/ssh.yml", "host_vars/w01/net.yml"])
def test_malformed_vars_file_is_named(tmp_path, where):
    inventory = kubespray_tree(tmp_path / "mycluster", "hosts.ini", KUBESPRAY_TREE_INI)
    broken = inventory.parent / where
    broken.write_text("ansible_user: admin\nansible_port: [22\n")
    with pytest.raises(ConfigError) as caught:
        load_inventory(inventory)
    assert caught.value.source == str(broken)
    assert "line 3" in caught.value.message and "YAML" in caught.value.message


def test_malformed_group_vars_through_the_cli(tmp_path):
    """One line on stderr naming the group_vars file (ansible-inventory's own error does not name it),
    spelt the way the inventory was given."""
    inventory = kubespray_tree(tmp_path / "mycluster", "hosts.ini", KUBESPRAY_TREE_INI)
    (inventory.parent / "group_vars" / "kube_node.yml").write_text("ansible_user: {admin\n")
    (tmp_path / "cluster.yaml").write_text(SETTINGS)
    proc = subprocess.run([str(Path(sys.executable).parent / "kubeprov"), "config", "validate", "-c", "cluster.yaml",
                           "-i", "mycluster/hosts.ini"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: mycluster/group_vars/kube_node.yml: line 2, column 1: YAML parsing failed")


@pytest.mark.parametrize("content", [[], ["group_vars/all.yml"]])
def test_directory_without_inventory_files(tmp_path, content):
    for name in content:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("ansible_user: ops\n")
    with pytest.raises(ConfigError, match="no inventory file in this directory"):
        load_inventory(tmp_path)


def test_ansible_warnings_become_kubeprov_warnings(tmp_path):
    """Ansible's own output never reaches kubeprov's: a warning that matters (a misspelt key drops
    a host) is one `warning:` line naming the file; one that does not (kubespray's old group names
    carry '-', which Ansible flags) is not shown."""
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text("kube-master:\n  hosts:\n    cp1:\nkube-node:\n  hostz:\n    w1:\n")
    config = tmp_path / "cluster.yaml"
    config.write_text(SETTINGS)
    code, stdout, stderr = run_cli("config", "validate", "-c", config, "-i", inventory)
    assert code == 0, stderr
    assert stderr.splitlines() == [
        f'warning: {inventory}: Skipping unexpected key (hostz) in group (kube-node), only "vars", "children" and '
        '"hosts" are valid'
    ]
    assert "is valid" in stdout
    with pytest.warns(InventoryWarning, match=r"Skipping unexpected key \(hostz\)"):
        assert [h["name"] for h in load_inventory(inventory)] == ["cp1"]


def test_too_many_hosts(tmp_path):
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(f"[kube_node]\nnode[1:{MAX_HOSTS + 1}]\n")
    with pytest.raises(ConfigError, match=f"{MAX_HOSTS + 1} hosts, more than {MAX_HOSTS}"):
        load_inventory(inventory)


def test_ansible_is_imported_only_for_an_inventory(tmp_path):
    """Importing ansible costs ~0.4 s: the CLI and a cluster file without -i must not pay it."""
    config = tmp_path / "cluster.yaml"
    config.write_text(SETTINGS + "hosts: [{name: cp1, address: 192.0.2.1, roles: [control-plane]}]\n")
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[kube_control_plane]\ncp1\n")
    probe = (
        "import sys\nfrom pathlib import Path\nimport provision.cli\nfrom provision.config import load_cluster\n"
        f"load_cluster(Path({str(config)!r}))\n"
        "print(any(m == 'ansible' or m.startswith('ansible.') for m in sys.modules))\n"
        f"load_cluster(Path({str(config)!r}).with_name('settings.yaml'), Path({str(inventory)!r}))\n"
        "print(any(m == 'ansible' or m.startswith('ansible.') for m in sys.modules))\n"
    )
    (tmp_path / "settings.yaml").write_text(SETTINGS)
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["False", "True"], proc.stderr
