"""Small shapes the CNI manifests share, and how a list of objects becomes one YAML file."""

from __future__ import annotations

from provision import yamltext


KUBE_SYSTEM = "kube-system"
RBAC = "rbac.authorization.k8s.io/v1"


def meta(name: str, namespace: str | None = None, labels: dict | None = None) -> dict:
    found: dict = {"name": name}
    if namespace:
        found["namespace"] = namespace
    if labels:
        found["labels"] = labels
    return found


def service_account(name: str, namespace: str) -> dict:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(name, namespace)}


def rule(groups: list[str], resources: list[str], verbs: list[str]) -> dict:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


def cluster_role(name: str, rules: list[dict]) -> dict:
    return {"apiVersion": RBAC, "kind": "ClusterRole", "metadata": meta(name), "rules": rules}


def cluster_role_binding(name: str, role: str, account: str, namespace: str) -> dict:
    return {
        "apiVersion": RBAC,
        "kind": "ClusterRoleBinding",
        "metadata": meta(name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }


def host_path(name: str, path: str, kind: str = "") -> dict:
    source = {"path": path}
    if kind:
        source["type"] = kind
    return {"name": name, "hostPath": source}


def field_env(name: str, field: str) -> dict:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": field}}}


def dump_all(objects: list[dict]) -> bytes:
    """One multi-document YAML file, objects in apply order."""
    return yamltext.dump_all(objects, explicit_start=True).encode()
