"""Hosts from an Ansible inventory (INI or YAML), using kubespray's group names.

kube_control_plane → control-plane, kube_node → worker, etcd → etcd. Host variables
ansible_host / ansible_user / ansible_port / ansible_ssh_private_key_file map to the host's
address and SSH settings; kubespray's `ip` is the address the cluster uses. Group `vars` and
`children` are honoured the way Ansible does (child groups' hosts belong to the parent; more
specific vars win). The result is plain data for `Cluster` to validate, so the model's errors
apply to inventory hosts too.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provision.errors import ConfigError

ROLE_GROUPS = {"kube_control_plane": "control-plane", "kube_node": "worker", "etcd": "etcd"}
# Older kubespray inventories call the control plane group kube-master / kube_master.
LEGACY_GROUPS = {"kube-master": "kube_control_plane", "kube_master": "kube_control_plane", "kube-node": "kube_node"}

_RANGE = re.compile(r"\[([0-9]+):([0-9]+)\]|\[([a-z]):([a-z])\]")


@dataclass
class _Group:
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)  # host → its vars in this group
    vars: dict[str, Any] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)


def load_inventory(path: Path) -> list[dict[str, Any]]:
    from provision.config.loader import parse_yaml, read_text

    path = Path(path)
    if path.is_dir():
        candidates = [p for name in ("hosts.yaml", "hosts.yml", "hosts.ini", "hosts", "inventory.ini")
                      if (p := path / name).is_file()]
        if not candidates:
            raise ConfigError("directory has no hosts.yaml, hosts.yml, hosts.ini or hosts file", source=str(path))
        path = candidates[0]
    text = read_text(path)
    source = str(path)
    if _looks_like_yaml(path, text):
        groups = _groups_from_yaml(parse_yaml(text, source), source)
    else:
        groups = _groups_from_ini(text, source)
    return _hosts(groups, source)


def _looks_like_yaml(path: Path, text: str) -> bool:
    if path.suffix in (".yaml", ".yml"):
        return True
    if path.suffix in (".ini", ".cfg"):
        return False
    first = next((line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith(("#", ";"))), "")
    return not first.startswith("[") and (first.endswith(":") or first.startswith("---"))


# --- INI ------------------------------------------------------------------------------------


def _groups_from_ini(text: str, source: str) -> dict[str, _Group]:
    groups: dict[str, _Group] = {"all": _Group(), "ungrouped": _Group()}
    section, kind = "ungrouped", "hosts"
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        where = f"line {number}"
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise ConfigError(f"malformed INI: {where}: section header {line!r}", source=source)
            name, _, kind = line[1:-1].strip().partition(":")
            kind = kind or "hosts"
            if kind not in ("hosts", "vars", "children") or not name or " " in name:
                raise ConfigError(f"malformed INI: {where}: unknown section {line!r}", source=source)
            section = LEGACY_GROUPS.get(name, name)
            groups.setdefault(section, _Group())
            continue
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise ConfigError(f"malformed INI: {where}: {exc}", source=source) from None
        if not words:
            continue
        group = groups[section]
        if kind == "vars":
            key, eq, value = line.partition("=")
            if not eq or not key.strip():
                raise ConfigError(f"malformed INI: {where}: expected key=value in [{section}:vars]", source=source)
            group.vars[key.strip()] = _ini_value(value.strip())
        elif kind == "children":
            if len(words) != 1:
                raise ConfigError(f"malformed INI: {where}: one group name per line in [{section}:children]", source=source)
            group.children.append(LEGACY_GROUPS.get(words[0], words[0]))
        else:
            host_vars = {}
            for word in words[1:]:
                key, eq, value = word.partition("=")
                if not eq or not key:
                    raise ConfigError(f"malformed INI: {where}: expected key=value after the host name, got {word!r}", source=source)
                host_vars[key] = _ini_value(value)
            for name in _expand(words[0], source, where):
                group.hosts.setdefault(name, {}).update(host_vars)
    return groups


def _ini_value(value: str) -> Any:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    if value.isdigit():
        return int(value)
    return value


def _expand(pattern: str, source: str, where: str) -> list[str]:
    """Ansible's host ranges: node[01:03] → node01 node02 node03; web[a:c] likewise."""
    match = _RANGE.search(pattern)
    if not match:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end():]
    if match.group(1) is not None:
        start, end = match.group(1), match.group(2)
        if int(start) > int(end):
            raise ConfigError(f"malformed INI: {where}: empty host range {pattern!r}", source=source)
        width = len(start) if start.startswith("0") else 0
        items = [str(i).zfill(width) for i in range(int(start), int(end) + 1)]
    else:
        items = [chr(c) for c in range(ord(match.group(3)), ord(match.group(4)) + 1)]
    if len(items) > 10000:
        raise ConfigError(f"malformed INI: {where}: host range {pattern!r} is too large", source=source)
    return [name for item in items for name in _expand(head + item + tail, source, where)]


# --- YAML -----------------------------------------------------------------------------------


def _groups_from_yaml(data: Any, source: str) -> dict[str, _Group]:
    if not isinstance(data, dict) or not data:
        raise ConfigError("an Ansible YAML inventory is a mapping with a top-level group such as 'all'", source=source)
    groups: dict[str, _Group] = {"all": _Group(), "ungrouped": _Group()}

    def visit(name: Any, body: Any, path: str) -> None:
        if not isinstance(name, str):
            raise ConfigError(f"group name must be a string, got {name!r}", source=source, field=path)
        name = LEGACY_GROUPS.get(name, name)
        group = groups.setdefault(name, _Group())
        if body is None:
            return
        if not isinstance(body, dict):
            raise ConfigError("a group must be a mapping of hosts/vars/children", source=source, field=path)
        for key in body:
            if key not in ("hosts", "vars", "children"):
                raise ConfigError("unknown key (a group has hosts, vars and children)", source=source, field=f"{path}.{key}")
        hosts = body.get("hosts") or {}
        if not isinstance(hosts, dict):
            raise ConfigError("hosts must be a mapping of host name → vars", source=source, field=f"{path}.hosts")
        for host, host_vars in hosts.items():
            if not isinstance(host, str):
                raise ConfigError(f"host name must be a string, got {host!r}", source=source, field=f"{path}.hosts")
            if host_vars is not None and not isinstance(host_vars, dict):
                raise ConfigError("host vars must be a mapping", source=source, field=f"{path}.hosts.{host}")
            for expanded in _expand(host, source, f"{path}.hosts"):
                group.hosts.setdefault(expanded, {}).update(host_vars or {})
        group_vars = body.get("vars") or {}
        if not isinstance(group_vars, dict):
            raise ConfigError("vars must be a mapping", source=source, field=f"{path}.vars")
        group.vars.update(group_vars)
        children = body.get("children") or {}
        if not isinstance(children, dict):
            raise ConfigError("children must be a mapping of group name → group", source=source, field=f"{path}.children")
        for child, child_body in children.items():
            if isinstance(child, str) and LEGACY_GROUPS.get(child, child) not in group.children:
                group.children.append(LEGACY_GROUPS.get(child, child))
            visit(child, child_body, f"{path}.children.{child}")

    for name, body in data.items():
        visit(name, body, str(name))
    return groups


# --- groups → hosts -------------------------------------------------------------------------


def _members(groups: dict[str, _Group], name: str, source: str, trail: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Every host in group `name` (with its children), mapped to the chain of groups, outermost first."""
    if name in trail:
        raise ConfigError(f"group {name!r} is its own descendant ({' → '.join(trail + (name,))})", source=source)
    group = groups.get(name)
    if group is None:
        raise ConfigError(f"group {trail[-1]!r} names an undefined child group {name!r}", source=source)
    found = {host: [name] for host in group.hosts}
    for child in group.children:
        for host, chain in _members(groups, child, source, trail + (name,)).items():
            found.setdefault(host, [name, *chain])
    return found


def _hosts(groups: dict[str, _Group], source: str) -> list[dict[str, Any]]:
    roles: dict[str, list[str]] = {}
    chains: dict[str, list[str]] = {}
    for group_name, role in ROLE_GROUPS.items():
        if group_name not in groups:
            continue
        for host, chain in _members(groups, group_name, source).items():
            roles.setdefault(host, []).append(role)
            chains.setdefault(host, chain)
    if not roles:
        raise ConfigError(
            "no hosts in the groups kube_control_plane, kube_node or etcd (kubespray's group names)", source=source
        )
    result = []
    for host in sorted(roles, key=_order_key(groups)):
        merged: dict[str, Any] = dict(groups["all"].vars)
        # Parent group vars first, then more specific groups, then the host's own: Ansible's precedence.
        for group in _groups_of(groups, host):
            merged.update(groups[group].vars)
        for group in groups.values():
            merged.update(group.hosts.get(host, {}))
        result.append(_host_entry(host, merged, roles[host], source))
    return result


def _groups_of(groups: dict[str, _Group], host: str) -> list[str]:
    depth: dict[str, int] = {}

    def walk(name: str, level: int, seen: tuple[str, ...]) -> None:
        if name in seen or name not in groups:
            return
        depth[name] = max(depth.get(name, 0), level)
        for child in groups[name].children:
            walk(child, level + 1, seen + (name,))

    for name in groups:
        walk(name, 0, ())
    holding = [name for name, group in groups.items() if host in group.hosts]
    containing = {name for name in groups if name != "all" and _contains(groups, name, holding)}
    return sorted(containing, key=lambda g: (depth.get(g, 0), g))


def _contains(groups: dict[str, _Group], name: str, holding: list[str], seen: tuple[str, ...] = ()) -> bool:
    if name in holding:
        return True
    if name in seen:
        return False
    return any(_contains(groups, child, holding, seen + (name,)) for child in groups[name].children if child in groups)


def _order_key(groups: dict[str, _Group]):
    # Control planes first (the first one bootstraps the cluster), then the inventory's order.
    order = {}
    for group in groups.values():
        for host in group.hosts:
            order.setdefault(host, len(order))
    cp = set(_members(groups, "kube_control_plane", "") if "kube_control_plane" in groups else {})
    return lambda host: (host not in cp, order.get(host, 0))


def _host_entry(name: str, hv: dict[str, Any], roles: list[str], source: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "address": hv.get("ansible_host", name), "roles": roles}
    if "ip" in hv:
        entry["internalAddress"] = hv["ip"]
    ssh: dict[str, Any] = {}
    if "ansible_user" in hv:
        ssh["user"] = hv["ansible_user"]
    if "ansible_port" in hv:
        ssh["port"] = hv["ansible_port"]
    key = hv.get("ansible_ssh_private_key_file", hv.get("ansible_private_key_file"))
    if key is not None:
        ssh["key"] = key
    if ssh:
        entry["ssh"] = ssh
    return entry
