"""Small builders for the API objects kubeadm creates, and the YAML they are written as.

Kept apart from any one addon so kube-proxy, CoreDNS and the kubeadm ConfigMaps share one shape
for a ConfigMap, a read-one-ConfigMap Role and a binding, and one way to serialise them.
"""

from __future__ import annotations

import hashlib

from provision import yamltext

KUBE_SYSTEM = "kube-system"
KUBE_PUBLIC = "kube-public"
RBAC_API = "rbac.authorization.k8s.io"

# Groups kubeadm grants read access to its ConfigMaps (cmd/kubeadm/app/constants).
NODES_GROUP = "system:nodes"
BOOTSTRAP_TOKEN_GROUP = "system:bootstrappers:kubeadm:default-node-token"

# kubeadm signs the component-config ConfigMaps it generated itself, so `kubeadm upgrade` can tell
# them from ones a user edited (componentconfigs/checksums.go).
COMPONENT_CONFIG_HASH = "kubeadm.kubernetes.io/component-config.hash"


def metadata(name: str, namespace: str | None = None, **extra) -> dict:
    meta: dict = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    meta.update({k: v for k, v in extra.items() if v})
    return meta


def config_map(name: str, namespace: str, data: dict[str, str], *, labels: dict | None = None, signed: bool = False) -> dict:
    annotations = {COMPONENT_CONFIG_HASH: config_map_checksum(data)} if signed else None
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(name, namespace, labels=labels, annotations=annotations),
        "data": data,
    }


def config_map_checksum(data: dict[str, str]) -> str:
    """kubeadm's rule: sha256 over the values, taken in the order of their sorted keys."""
    digest = hashlib.sha256()
    for key in sorted(data):
        digest.update(data[key].encode())
    return f"sha256:{digest.hexdigest()}"


def service_account(name: str, namespace: str = KUBE_SYSTEM) -> dict:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata(name, namespace)}


def read_config_map_role(name: str, config_map_name: str, namespace: str) -> dict:
    """A Role allowing `get` on exactly one ConfigMap: how kubeadm exposes its ConfigMaps."""
    return {
        "apiVersion": f"{RBAC_API}/v1",
        "kind": "Role",
        "metadata": metadata(name, namespace),
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [config_map_name], "verbs": ["get"]}],
    }


def group(name: str) -> dict:
    return {"apiGroup": RBAC_API, "kind": "Group", "name": name}


def user(name: str) -> dict:
    return {"apiGroup": RBAC_API, "kind": "User", "name": name}


def service_account_subject(name: str, namespace: str = KUBE_SYSTEM) -> dict:
    return {"kind": "ServiceAccount", "name": name, "namespace": namespace}


def role_binding(name: str, namespace: str, role: str, subjects: list[dict]) -> dict:
    return {
        "apiVersion": f"{RBAC_API}/v1",
        "kind": "RoleBinding",
        "metadata": metadata(name, namespace),
        "roleRef": {"apiGroup": RBAC_API, "kind": "Role", "name": role},
        "subjects": subjects,
    }


def cluster_role_binding(name: str, cluster_role: str, subjects: list[dict]) -> dict:
    return {
        "apiVersion": f"{RBAC_API}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": metadata(name),
        "roleRef": {"apiGroup": RBAC_API, "kind": "ClusterRole", "name": cluster_role},
        "subjects": subjects,
    }


class _Dumper(yamltext.SafeDumper):
    """Multi-line strings (an embedded config, a Corefile) as `|` blocks a person can read, and
    no `&id001` anchors where one dict (a label set) is used twice: kubectl users read these."""

    def ignore_aliases(self, data) -> bool:
        return True


def _represent_str(dumper: yamltext.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def to_yaml(obj: dict) -> str:
    """One document, keys sorted (as Kubernetes' own marshalling does), block style."""
    return yamltext.dump(obj, sort_keys=True, dumper=_Dumper, width=120)


def yaml_stream(*objects: dict) -> bytes:
    """A multi-document stream, in the given order (the order `kubectl apply -f` creates them)."""
    return "---\n".join(to_yaml(obj) for obj in objects).encode()
