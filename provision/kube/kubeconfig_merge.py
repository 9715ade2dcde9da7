"""Merging the cluster's admin kubeconfig into a user's kubeconfig (~/.kube/config).

Entries are added by name; the admin user is renamed `<user>@<cluster>` because every kubeadm-style
cluster calls its admin `kubernetes-admin` and two clusters' credentials must not collide. An
entry of the same name with other content is never replaced silently: the merge refuses and
says which. The previous file is kept beside it as config.kubeprov-backup.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from provision.errors import KubeprovError
from provision.fsutil import atomic_write, ensure_private_dir

SECTIONS = ("clusters", "users", "contexts")


def merge_kubeconfig(source: Path, target: Path) -> str:
    """Merge `source` into `target`; returns the context name. Idempotent."""
    doc = yaml.safe_load(source.read_text())
    context = next(c for c in doc["contexts"] if c["name"] == doc["current-context"])
    cluster_name, old_user = context["context"]["cluster"], context["context"]["user"]
    user_name = f"{old_user}@{cluster_name}"
    ours = {
        "clusters": [c for c in doc["clusters"] if c["name"] == cluster_name],
        "users": [{**u, "name": user_name} for u in doc["users"] if u["name"] == old_user],
        "contexts": [{"name": context["name"], "context": {"cluster": cluster_name, "user": user_name}}],
    }
    target = target.expanduser()
    existing = yaml.safe_load(target.read_text()) if target.exists() else None
    existing = existing or {"apiVersion": "v1", "kind": "Config", "preferences": {}, "clusters": [], "users": [], "contexts": []}
    changed = False
    for section in SECTIONS:
        entries = existing.get(section) or []
        by_name = {e["name"]: e for e in entries}
        for entry in ours[section]:
            present = by_name.get(entry["name"])
            if present is None:
                entries.append(entry)
                changed = True
            elif present != entry:
                raise KubeprovError(f"{target}: {section[:-1]} {entry['name']!r} exists with other settings; "
                                    f"remove it (kubectl config delete-{section[:-1]} {entry['name']}) or merge by hand")
        existing[section] = entries
    if not existing.get("current-context"):
        existing["current-context"] = context["name"]
        changed = True
    if changed:
        ensure_private_dir(target.parent)
        if target.exists():
            shutil.copy2(target, target.with_name(target.name + ".kubeprov-backup"))
        atomic_write(target, yaml.safe_dump(existing, sort_keys=False).encode(), 0o600, replace=True)
    return context["name"]
