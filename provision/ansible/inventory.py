"""The Ansible inventory prepare runs with, generated from the cluster spec.

Groups follow kubespray's names (kube_control_plane, kube_node, etcd, k8s_cluster) so operators
recognise them; every host carries its SSH settings (strict host keys against the cluster's
known_hosts) and the data its roles need: the rendered files by role, the bundle's binaries and
images, and the applied-state record the last role writes. The same file works by hand:
`ansible-playbook -i <cluster dir>/prepare/inventory.yml playbooks/site.yml`.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass
from importlib import resources
from pathlib import Path


from provision import yamltext
from provision import __version__, preflight
from provision.ansible.bundle import Bundle
from provision.ansible.nodefiles import external_etcd
from provision.ansible.sources import Sources
from provision.config.models import Cluster, Host, Role
from provision.render.tree import Tree

# The one place that says where the roles are. playbooks/ ships as provision.playbooks (pyproject
# maps the top-level directory there, as it does templates/), so this is the checkout's playbooks/
# in an editable install and the installed copy in a wheel's. Ansible reads them as files: a
# zipped install, which has no such directory, is not supported.
PLAYBOOKS = Path(str(resources.files("provision.playbooks")))
ROLES_DIR = PLAYBOOKS / "roles"
APPLIED_PATH = "/var/lib/kubeprov/applied.json"

NODE_ROLES = ("os", "runc", "containerd", "images", "cni-plugins", "crictl", "kubelet")  # prepare.yml's order
# Roles the node roles depend on (meta/main.yml): their edits must re-run prepare too.
SHARED_ROLES = ("files", "apt-index", "node-packages", "kubernetes-repo", "kubernetes-artifact")


def roles_for(cluster: Cluster, host: Host) -> list[str]:
    """The roles site.yml applies to `host`, in order (the groups below decide it the same way)."""
    roles = ["preflight"]
    if host in cluster.nodes:
        roles += NODE_ROLES
    if host.has(Role.CONTROL_PLANE):
        roles.append("kubectl")
    if external_etcd(cluster) and host in cluster.etcd_members:
        roles.append("etcd")
    return roles


def role_version(name: str) -> str:
    """A role's version: the sha256 of its files, so editing a role re-runs it everywhere."""
    digest = hashlib.sha256()
    root = ROLES_DIR / name
    # Not __pycache__: pip byte-compiles an installed wheel's modules and plugins, and the version
    # must be the checkout's, or every host prepared from one looks stale to the other.
    skip = {"molecule", "__pycache__"}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not skip & set(p.relative_to(root).parts)):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class HostPlan:
    host: Host
    roles: list[str]
    tree: Tree
    applied: dict  # what the last role records on the host; its fingerprint decides the no-op skip

    @property
    def fingerprint(self) -> str:
        return self.applied["fingerprint"]


def images_for(cluster: Cluster, bundle: Bundle | None) -> dict[str, list]:
    """{host: the bundle's images it gets}: those its pods run (a worker carries no API server, a
    cluster without a load balancer no haproxy), and every image no renderer names (the operator's
    own workloads may run anywhere)."""
    from provision.artifacts.images import normalise
    from provision.artifacts.needs import OPTIONAL_IMAGES, images

    if bundle is None:
        return {host.name: [] for host in cluster.hosts}
    needed = {normalise(need.ref): set(need.hosts) for need in images(cluster)}  # renders every static pod: once
    components = set(needed) | {normalise(ref) for ref in OPTIONAL_IMAGES}

    def gets(host: Host, image) -> bool:
        if not any(ref in components for ref in image.refs):
            return True  # a workload's image
        return any(host.name in needed.get(ref, ()) for ref in image.refs)

    return {host.name: [image for image in bundle.images if gets(host, image)] if host in cluster.nodes else []
            for host in cluster.hosts}


def applied_record(cluster: Cluster, host: Host, roles: list[str], tree: Tree, bundle: Bundle | None, lab: bool,
                   sources: Sources | None = None, images: list = ()) -> dict:
    """`images`: the bundle images this host gets (images_for)."""
    record = {
        "kubeprov": __version__,
        "roles": {name: role_version(name) for name in roles + [d for d in SHARED_ROLES if set(roles) & set(NODE_ROLES + ("kubectl",))]},
        "files": {str(path): hashlib.sha256(f.content).hexdigest() + f" 0{f.mode:o}" for path, f in sorted(tree.items())},
        "binaries": dict(sorted((bundle.binaries if bundle else {}).items())),
        "sources": sources.record() if sources else {},
        "images": {image.file: image.sha256 for image in images},
        "settings": {"lab": lab, "groups": [r.value for r in host.roles], "etcdDataDir": cluster.etcd.data_dir,
                     # a node's: `up` refuses to change it (an upgrade: phases/files.py version_changes)
                     **({"kubernetesVersion": cluster.kubernetes_version} if host in cluster.nodes else {})},
    }
    record["fingerprint"] = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
    return record


def ssh_args(host: Host, known_hosts: Path) -> str:
    known = Path(host.ssh.known_hosts or known_hosts).expanduser()
    return shlex.join(["-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null"])


def inventory(cluster: Cluster, plans: dict[str, HostPlan], *, render_dir: Path, bundle: Bundle | None,
              known_hosts: Path, lab: bool, sources: Sources | None = None) -> dict:
    hosts = {}
    for host in cluster.hosts:
        plan = plans[host.name]
        entry = {
            "ansible_host": host.address,
            "ansible_port": host.ssh.port,
            "ansible_user": host.ssh.user,
            "ansible_ssh_common_args": ssh_args(host, known_hosts),
            # The images its applied record lists (images_for), with the names the role checks.
            "kubeprov_images": [{"file": i.file, "sha256": i.sha256, "refs": list(i.refs)}
                                for i in (bundle.images if bundle else ()) if i.file in plan.applied["images"]],
            "kubeprov_applied": plan.applied,
            "kubeprov_preflight": preflight.parameters(cluster, host),
        }
        if host.ssh.key:
            entry["ansible_ssh_private_key_file"] = str(host.ssh.key.expanduser())
        if host.ssh.user != "root":
            entry["ansible_become"] = True
        hosts[host.name] = entry

    def group(members: list[Host]) -> dict:
        return {"hosts": {h.name: None for h in members}}

    etcd_members = cluster.etcd_members if external_etcd(cluster) else []
    return {
        "all": {
            "vars": {
                "ansible_python_interpreter": "/usr/bin/python3",
                "kubeprov_render_dir": str(render_dir.resolve()),
                "kubeprov_lab": lab,
                "kubeprov_bundle_dir": str(bundle.root.resolve()) if bundle else "",
                "kubeprov_artifacts": (sources or Sources("bundle")).to_vars(),
                "kubeprov_etcd_data_dir": cluster.etcd.data_dir,
                "kubeprov_applied_path": APPLIED_PATH,
            },
            "hosts": hosts,
            "children": {
                "k8s_cluster": {"children": {
                    "kube_control_plane": group(cluster.control_planes),
                    "kube_node": group(cluster.workers),
                }},
                "etcd": group(etcd_members),
            },
        }
    }


def write_inventory(path: Path, data: dict) -> None:
    from provision.fsutil import atomic_write, ensure_private_dir

    ensure_private_dir(path.parent)
    text = "# Generated by `kubeprov prepare` from the cluster file; rewritten on every run.\n"
    text += yamltext.dump(data)
    atomic_write(path, text.encode(), 0o600, replace=True)
