"""Hosts from an Ansible inventory (INI or YAML), using kubespray's group names.

kube_control_plane → control-plane, kube_node → worker, etcd → etcd. Host variables
ansible_host / ansible_user / ansible_port / ansible_ssh_private_key_file map to the host's
address and SSH settings; kubespray's `ip` is the address the cluster uses.

Groups work the way Ansible's do: a child group's hosts belong to its parents, and a variable
comes from the most specific place that sets it — the host itself, then groups from the deepest
(farthest from `all`) to the shallowest, ties broken by group name, then `all`. The result is
plain data for `Cluster` to validate, so the model's errors apply to inventory hosts too.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provision.config.source import label, parse_yaml, read_text
from provision.errors import ConfigError

ROLE_GROUPS = {"kube_control_plane": "control-plane", "kube_node": "worker", "etcd": "etcd"}
# Older kubespray inventories call the control plane group kube-master / kube_master.
LEGACY_GROUPS = {"kube-master": "kube_control_plane", "kube_master": "kube_control_plane", "kube-node": "kube_node"}
# Tried in this order when the inventory is given as a directory (kubespray's inventory/<name>/).
DIRECTORY_FILES = ("hosts.yaml", "hosts.yml", "hosts.ini", "inventory.ini", "hosts")

# Ansible host ranges: [01:10], [1:10:2], [a:f].
_RANGE = re.compile(r"\[([0-9a-zA-Z]+):([0-9a-zA-Z]+)(?::([0-9]+))?\]")
_MAX_RANGE = 10_000
# A YAML inventory starts with a group name and a colon (`all:`); an INI one with a host or [section].
_YAML_START = re.compile(r"^(---|[^\s\[=#;]+:(\s|$))")


@dataclass
class _Group:
    hosts: list[str] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)


@dataclass
class _Inventory:
    """What the file says, before anything is resolved: groups, and each host's own vars."""

    source: str
    groups: dict[str, _Group] = field(default_factory=lambda: {"all": _Group(), "ungrouped": _Group()})
    host_vars: dict[str, dict[str, Any]] = field(default_factory=dict)  # in order of first appearance

    def group(self, name: str) -> _Group:
        return self.groups.setdefault(LEGACY_GROUPS.get(name, name), _Group())

    def add_host(self, group: str, pattern: str, host_vars: dict[str, Any], where: str) -> None:
        name, port = _split_port(pattern)
        if port is not None:
            host_vars = {"ansible_port": port, **host_vars}
        for host in _expand(name, self.source, where):
            members = self.group(group).hosts
            if host not in members:
                members.append(host)
            self.host_vars.setdefault(host, {}).update(host_vars)

    def add_child(self, parent: str, child: str) -> None:
        child = LEGACY_GROUPS.get(child, child)
        children = self.group(parent).children
        if child not in children:
            children.append(child)


def load_inventory(path: Path) -> list[dict[str, Any]]:
    """The hosts of a kubespray-style inventory file (or directory), control planes first."""
    path = Path(path)
    if path.is_dir():
        found = [path / name for name in DIRECTORY_FILES if (path / name).is_file()]
        if not found:
            raise ConfigError(f"directory has none of {', '.join(DIRECTORY_FILES)}", source=str(path))
        path = found[0]
    text = read_text(path)
    source = str(path)
    if _looks_like_yaml(path, text):
        inventory = _from_yaml(parse_yaml(text, source), source)
    else:
        inventory = _from_ini(text, source)
    return _hosts(inventory)


def _looks_like_yaml(path: Path, text: str) -> bool:
    if path.suffix in (".yaml", ".yml", ".json"):
        return True
    if path.suffix in (".ini", ".cfg"):
        return False
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith(("#", ";")):
            return line.lstrip().startswith("{") or bool(_YAML_START.match(line))
    return False


def _split_port(pattern: str) -> tuple[str, int | None]:
    """Ansible's `host:port` in an inventory host name (`node[1:3]:2222` too; not bare IPv6)."""
    match = re.fullmatch(r"(.+):([0-9]+)", pattern)
    if match and ":" not in _RANGE.sub("", match.group(1)):
        return match.group(1), int(match.group(2))
    return pattern, None


def _expand(pattern: str, source: str, where: str) -> list[str]:
    """Ansible's host ranges: node[01:03] → node01 node02 node03; [1:9:2] steps; [a:c] letters."""
    match = _RANGE.search(pattern)
    if not match:
        return [pattern]
    start, end, step = match.group(1), match.group(2), int(match.group(3) or 1)

    def bad(why: str) -> ConfigError:
        return ConfigError(f"{where}: host range {pattern!r} {why}", source=source)

    if step < 1:
        raise bad("has a step below 1")
    if start.isdigit() and end.isdigit():
        if len(start) != len(end) and start.startswith("0"):
            raise bad("pads its start with zeros but not its end")
        if int(start) > int(end):
            raise bad("is empty (start after end)")
        if (int(end) - int(start)) // step >= _MAX_RANGE:
            raise bad(f"has more than {_MAX_RANGE} hosts")
        width = len(start) if start.startswith("0") else 0
        items = [str(i).zfill(width) for i in range(int(start), int(end) + 1, step)]
    elif len(start) == len(end) == 1 and start.isalpha() and end.isalpha():
        if start > end:
            raise bad("is empty (start after end)")
        items = [chr(c) for c in range(ord(start), ord(end) + 1, step)]
    else:
        raise bad("is neither numeric ([01:09]) nor alphabetic ([a:f])")
    head, tail = pattern[: match.start()], pattern[match.end():]
    expanded = [name for item in items for name in _expand(head + item + tail, source, where)]
    if len(expanded) > _MAX_RANGE:
        raise bad(f"has more than {_MAX_RANGE} hosts")
    return expanded


# --- INI ------------------------------------------------------------------------------------


def _from_ini(text: str, source: str) -> _Inventory:
    inventory = _Inventory(source)
    section, kind = "ungrouped", "hosts"

    def malformed(number: int, why: str) -> ConfigError:
        return ConfigError(f"malformed INI: line {number}: {why}", source=source)

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise malformed(number, f"section header {line!r} does not end with ']'")
            section, _, kind = line[1:-1].strip().partition(":")
            kind = kind or "hosts"
            if not section or any(ch.isspace() for ch in section):
                raise malformed(number, f"{line!r} is not a group name")
            if kind not in ("hosts", "vars", "children"):
                raise malformed(number, f"{line!r}: a section is [group], [group:vars] or [group:children]")
            inventory.group(section)
            continue
        if kind == "vars":
            key, eq, value = line.partition("=")
            if not eq or not key.strip():
                raise malformed(number, f"expected key=value under [{section}:vars]")
            inventory.group(section).vars[key.strip()] = _ini_value(value)
            continue
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise malformed(number, str(exc)) from None
        if not words:
            continue
        if kind == "children":
            if len(words) != 1:
                raise malformed(number, f"one group name per line in the children of group {section!r}")
            inventory.add_child(section, words[0])
            continue
        if "=" in words[0]:
            raise malformed(number, f"{words[0]!r} is not a host name (a variable belongs in [{section}:vars])")
        host_vars = {}
        for word in words[1:]:
            key, eq, value = word.partition("=")
            if not eq or not key:
                raise malformed(number, f"expected key=value after the host name, got {word!r}")
            host_vars[key] = _ini_value(value)
        inventory.add_host(section, words[0], host_vars, f"line {number}")
    return inventory


def _ini_value(value: str) -> Any:
    """INI values are text; whole numbers become ints (ports) and one pair of quotes is dropped."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    if value.isascii() and value.isdigit():
        return int(value)
    return value


# --- YAML -----------------------------------------------------------------------------------


def _from_yaml(data: Any, source: str) -> _Inventory:
    if not isinstance(data, dict) or not data:
        raise ConfigError("an Ansible YAML inventory is a mapping with a top-level group such as 'all'", source=source)
    inventory = _Inventory(source)

    def fail(where: str, why: str) -> ConfigError:
        return ConfigError(why, source=source, field=where)

    def visit(name: Any, body: Any, where: str) -> None:
        if not isinstance(name, str) or not name:
            raise fail(where, f"a group name must be text, got {name!r}")
        inventory.group(name)
        if body is None:
            return
        if not isinstance(body, dict):
            raise fail(where, "a group is a mapping with hosts, vars and children")
        for key in body:
            if key not in ("hosts", "vars", "children"):
                raise fail(f"{where}.{label(key)}", "unknown key (a group has hosts, vars and children)")
        hosts = _mapping(body.get("hosts"), fail, f"{where}.hosts", "hosts are a mapping of host name → vars")
        for host, host_vars in hosts.items():
            if not isinstance(host, str) or not host:
                raise fail(f"{where}.hosts", f"a host name must be text, got {host!r}")
            host_vars = _mapping(host_vars, fail, f"{where}.hosts.{label(host)}", "host vars are a mapping")
            inventory.add_host(name, host, host_vars, f"{where}.hosts")
        inventory.group(name).vars.update(_mapping(body.get("vars"), fail, f"{where}.vars", "vars are a mapping"))
        children = _mapping(body.get("children"), fail, f"{where}.children", "children are a mapping of group name → group")
        for child, child_body in children.items():
            visit(child, child_body, f"{where}.children.{label(child)}")
            inventory.add_child(name, child)

    for name, body in data.items():
        visit(name, body, label(name))
    return inventory


def _mapping(value: Any, fail, where: str, why: str) -> dict:
    """`value` as a dict: empty when absent (YAML's `hosts:` with nothing after it), else an error."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(where, why)
    return value


# --- groups → hosts -------------------------------------------------------------------------


def _depths(inventory: _Inventory) -> dict[str, int]:
    """Each group's longest distance from `all` (Ansible's group depth); refuses loops and unknown children.

    Parents are visited before children (Kahn's topological order), so a group's depth is one
    more than its deepest parent's; a group left unvisited is part of a loop.
    """
    groups = inventory.groups
    parents: dict[str, set[str]] = {name: set() for name in groups}
    for name, group in groups.items():
        for child in group.children:
            if child not in groups:
                raise ConfigError(f"group {name!r} names an undefined child group {child!r}", source=inventory.source)
            parents[child].add(name)
    waiting = {name: len(found) for name, found in parents.items()}
    ready = [name for name, count in waiting.items() if count == 0]
    depth: dict[str, int] = {}
    while ready:
        name = ready.pop()
        # Every group is implicitly a child of `all`, so a parentless group other than `all` has depth 1.
        depth[name] = 0 if name == "all" else 1 + max((depth[p] for p in parents[name]), default=0)
        for child in groups[name].children:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    looped = sorted(set(groups) - set(depth))
    if looped:
        raise ConfigError(f"groups {', '.join(looped)} contain each other in a loop", source=inventory.source)
    return depth


def _members(inventory: _Inventory, depth: dict[str, int]) -> dict[str, set[str]]:
    """Every group's hosts, its descendants' included; deepest groups first, so children are done."""
    members: dict[str, set[str]] = {}
    for name in sorted(depth, key=depth.__getitem__, reverse=True):
        group = inventory.groups[name]
        members[name] = set(group.hosts).union(*(members[child] for child in group.children))
    return members


def _hosts(inventory: _Inventory) -> list[dict[str, Any]]:
    depth = _depths(inventory)
    members = _members(inventory, depth)
    roles = {
        host: [role for group, role in ROLE_GROUPS.items() if host in members.get(group, ())]
        for host in inventory.host_vars
    }
    roles = {host: found for host, found in roles.items() if found}
    if not roles:
        raise ConfigError(
            "no hosts in the groups kube_control_plane, kube_node or etcd (kubespray's group names)",
            source=inventory.source,
        )
    appearance = list(inventory.host_vars)
    # Control planes first (the first one bootstraps the cluster), then the inventory's order.
    ordered = sorted(roles, key=lambda host: ("control-plane" not in roles[host], appearance.index(host)))
    # Shallow groups first so deeper ones override them; `all` (depth 0) comes first of all.
    by_depth = sorted(depth, key=lambda name: (depth[name], name))
    result = []
    for host in ordered:
        merged: dict[str, Any] = {}
        for group in by_depth:
            if group == "all" or host in members[group]:
                merged.update(inventory.groups[group].vars)
        merged.update(inventory.host_vars[host])
        result.append(_host_entry(host, merged, roles[host]))
    return result


def _first(variables: dict[str, Any], *names: str) -> Any:
    """The value of the first of `names` that is set (Ansible's older ansible_ssh_* spellings last)."""
    return next((variables[name] for name in names if name in variables), None)


def _host_entry(name: str, variables: dict[str, Any], roles: list[str]) -> dict[str, Any]:
    address = _first(variables, "ansible_host", "ansible_ssh_host")
    entry: dict[str, Any] = {"name": name, "address": name if address is None else address, "roles": roles}
    if "ip" in variables:
        entry["internalAddress"] = variables["ip"]
    ssh = {
        key: value
        for key, value in (
            ("user", _first(variables, "ansible_user", "ansible_ssh_user")),
            ("port", _first(variables, "ansible_port", "ansible_ssh_port")),
            ("key", _first(variables, "ansible_ssh_private_key_file", "ansible_private_key_file")),
        )
        if value is not None
    }
    if ssh:
        entry["ssh"] = ssh
    return entry
