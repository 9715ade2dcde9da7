"""The lab's hosts as inventories: a kubeprov cluster file and an Ansible INI inventory.

Both sit in the lab's state directory next to its private key and known_hosts, so any tool can
reach the hosts with strict host-key checking. (kubeprov's Host model has no known_hosts field:
point SSH clients at <state dir>/known_hosts.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from provision.fsutil import PUBLIC_FILE_MODE, atomic_write
from provision.lab.state import LabState
from provision.versions import DEFAULTS

CLUSTER_FILE = "cluster.yaml"
ANSIBLE_INVENTORY = "hosts.ini"
KNOWN_HOSTS = "known_hosts"
KEY = "id_ed25519"


@dataclass(frozen=True)
class LabHost:
    name: str
    address: str
    roles: tuple[str, ...]


def lab_hosts(state: LabState) -> list[LabHost]:
    layout = state.layout
    hosts = []
    for position, number in enumerate(sorted(state.hosts)):
        roles = ("control-plane",) if position < state.control_planes else ("worker",)
        hosts.append(LabHost(layout.host_name(number), layout.host_address(number), roles))
    return hosts


def cluster_document(state: LabState, key: Path, known_hosts: Path) -> dict:
    minor = max(DEFAULTS)
    return {
        "apiVersion": "kubeprov.io/v1alpha1",
        "kind": "Cluster",
        "name": state.name,
        "kubernetesVersion": f"v1.{minor}.0",
        "hosts": [
            {"name": h.name, "address": h.address,
             "ssh": {"user": "root", "port": 22, "key": str(key), "knownHosts": str(known_hosts)},
             "roles": list(h.roles)}
            for h in lab_hosts(state)
        ],
        # nspawn hosts lack CAP_SYS_RESOURCE (see LAB-NOTES).
        "containerd": {"restrictOOMScoreAdj": True},
        # No registry can be reached from the lab: the CNI that needs no image.
        "cni": "bridge",
    }


def ansible_inventory(state: LabState, key: Path, known_hosts: Path) -> str:
    hosts = lab_hosts(state)
    control = [h for h in hosts if "control-plane" in h.roles]
    workers = [h for h in hosts if "worker" in h.roles]
    lines = [f"# kubeprov lab {state.name}: made by `kubeprov lab up`; rewritten by it", "[all]"]
    lines += [f"{h.name} ansible_host={h.address} ip={h.address}" for h in hosts]
    lines += ["", "[kube_control_plane]", *(h.name for h in control)]
    lines += ["", "[etcd]", *(h.name for h in control)]
    lines += ["", "[kube_node]", *(h.name for h in workers)]
    lines += ["", "[k8s_cluster:children]", "kube_control_plane", "kube_node"]
    lines += ["", "[all:vars]", "ansible_user=root", f"ansible_ssh_private_key_file={key}",
              f"ansible_ssh_common_args='-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes'",
              "ansible_python_interpreter=/usr/bin/python3"]
    return "\n".join(lines) + "\n"


def write(state: LabState) -> tuple[Path, Path]:
    top = state.layout.state_dir
    key, known_hosts = top / KEY, top / KNOWN_HOSTS
    cluster_file, ini = top / CLUSTER_FILE, top / ANSIBLE_INVENTORY
    text = yaml.safe_dump(cluster_document(state, key, known_hosts), sort_keys=False)
    atomic_write(cluster_file, text.encode(), PUBLIC_FILE_MODE, replace=True)
    atomic_write(ini, ansible_inventory(state, key, known_hosts).encode(), PUBLIC_FILE_MODE, replace=True)
    return cluster_file, ini
