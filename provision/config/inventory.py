"""Hosts from an Ansible inventory, read by ansible-core itself; kubeprov keeps only kubespray's mapping.

ansible-core parses the inventory as `ansible-playbook -i` would: INI and YAML/JSON, host ranges,
children groups, group_vars/ and host_vars/ beside the inventory (files or directories), a
directory of inventory files, and the inventory plugins Ansible enables (executable inventory
scripts, plugin configs such as `plugin: ansible.builtin.generator`), honouring ansible.cfg.
Variables take Ansible's precedence: a host's own beat its groups' (host_vars/ over the inventory
file); a deeper group beats its parents and `all` is weakest; and any group_vars/ file beats what
the inventory file itself sets on groups.

What stays here is kubespray's mapping: kube_control_plane → control-plane, kube_node → worker,
etcd → etcd (the old kube-master / kube_master / kube-node names too); ansible_host /
ansible_user / ansible_port / ansible_ssh_private_key_file → the host's address and SSH
settings; kubespray's `ip` → the address the cluster uses. The result is plain data for
`Cluster` to validate, so the model's errors apply to inventory hosts too.

Why the Python API (DataLoader + InventoryManager + VariableManager) rather than running
`ansible-inventory --list`: no second process on every command (ansible-inventory takes ~0.6 s of
CPU here; importing ansible in-process ~0.35 s, then ~0.03 s to load a small inventory), per-host
variables come out already merged, and failures arrive as exceptions that carry the file and
line they concern instead of text to scrape (ansible-inventory's own message for a broken
group_vars file does not name it). ansible is imported only inside `load_inventory`, so commands
without an inventory never pay for it.
"""

from __future__ import annotations

import io
import os
import re
import traceback
import warnings
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from provision.config.source import read_text
from provision.errors import ConfigError, KubeprovWarning

ROLE_GROUPS = {"kube_control_plane": "control-plane", "kube_node": "worker", "etcd": "etcd"}
# Older kubespray inventories call the control plane group kube-master / kube_master.
LEGACY_GROUPS = {"kube-master": "kube_control_plane", "kube_master": "kube_control_plane", "kube-node": "kube_node"}
# A cluster is at most a few thousand machines; more means a host range written too wide
# (node[1:99999]), and merging each host's variables would then take minutes.
MAX_HOSTS = 10_000

# Ansible's own notices that say nothing to a kubeprov user: kubespray's legacy group names carry
# '-', which Ansible flags; an unparsed source is reported as kubeprov's own error instead.
_NOISE = re.compile(r"^(Invalid characters were found in group names|No inventory was parsed)")
_UNPARSED = re.compile(r"^Unable to parse (?P<source>.+) as an inventory source$")
_PLUGIN_FAILED = re.compile(r"with '(?P<plugin>[^']+)' plugin")
# A YAML inventory starts with a group name and a colon (`all:`); an INI one with a host or [section].
_YAML_START = re.compile(r"^(---|[^\s\[=#;]+:(\s|$))")
_PLUGIN_KEY = re.compile(r"^plugin\s*:", re.MULTILINE)
_TEMPLATE = ("{{", "{%")


class InventoryWarning(KubeprovWarning):
    """Something Ansible reported while reading an inventory that it did not treat as an error
    (an unknown key in a YAML group, a group and a host of the same name…)."""


@dataclass
class _Failure:
    plugin: str
    error: Exception
    source: str | None = None  # the file, once Ansible says it gave up on it


@dataclass
class _Reports:
    """What Ansible's Display was asked to show while loading, kept instead of printed."""

    warnings: list[str] = field(default_factory=list)
    failures: list[_Failure] = field(default_factory=list)
    unparsed: list[str] = field(default_factory=list)

    def clear(self) -> None:
        self.warnings.clear()
        self.failures.clear()
        self.unparsed.clear()


def load_inventory(path: Path) -> list[dict[str, Any]]:
    """The hosts of a kubespray-style inventory (file or directory), control planes first."""
    path = Path(path)
    _check_readable(path)
    source = str(path)
    try:
        with _ansible_reports() as reports:
            hosts = _load(path, reports)
    except ConfigError as exc:
        raise ConfigError(exc.message, source=_as_given(exc.source, path), field=exc.field) from None
    for message in dict.fromkeys(reports.warnings):
        warnings.warn(f"{source}: {message}", InventoryWarning, stacklevel=2)
    return hosts


def _as_given(source: str | None, path: Path) -> str | None:
    """Ansible reports absolute paths; name a file beside the inventory the way the operator spelt it."""
    base = path if path.is_dir() else path.parent
    try:
        return str(base / Path(source).relative_to(base.absolute())) if source else source
    except ValueError:
        return source


def _check_readable(path: Path) -> None:
    """The errors kubeprov gives for any file it reads (no such file, a FIFO, not UTF-8, too big),
    before Ansible, which would skip a missing source with a warning or block on a FIFO."""
    if not path.is_dir():
        read_text(path)


@contextmanager
def _ansible_reports() -> Iterator[_Reports]:
    """Ansible shows warnings and per-plugin parse failures through its Display singleton,
    straight onto stdout/stderr; collect them so kubeprov says what matters in its own words."""
    reports = _Reports()
    # Anything written directly (ansible.cfg notices at import time…) is dropped; the rest is recorded below.
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        from ansible.utils.display import Display

        display = Display()

        def warning(msg, *args, **kwargs):
            unparsed = _UNPARSED.match(str(msg))
            if unparsed:
                reports.unparsed.append(unparsed.group("source"))
                for failure in reports.failures:
                    failure.source = failure.source or unparsed.group("source")
            elif not _NOISE.match(str(msg)):
                reports.warnings.append(" ".join(str(msg).split()))

        def error_as_warning(msg, exception, *args, **kwargs):
            plugin = _PLUGIN_FAILED.search(str(msg or ""))
            reports.failures.append(_Failure(plugin.group("plugin").rsplit(".", 1)[-1] if plugin else "", exception))

        hooks = {"warning": warning, "error_as_warning": error_as_warning, "deprecated": lambda *a, **k: None}
        for name, hook in hooks.items():
            setattr(display, name, hook)  # the instance attribute shadows the method
        try:
            yield reports
        finally:
            for name in hooks:
                delattr(display, name)


def _collections_needed(reports: _Reports) -> bool:
    """Whether this load needs Ansible's collection loader, which every ansible command sets up first
    and which costs ~0.1 s of CPU (it reads ansible.builtin's routing table): only plugins named by
    their full name need it (`plugin: ansible.builtin.generator`, a collection's plugin)."""
    from ansible import constants
    from ansible.utils.collection_loader import AnsibleCollectionConfig

    if AnsibleCollectionConfig.collection_finder is not None:  # set up once per process
        return False
    enabled = [*constants.INVENTORY_ENABLED, *constants.VARIABLE_PLUGINS_ENABLED]
    return any("." in name for name in enabled) or any(
        "specifies unknown plugin" in str(failure.error) for failure in reports.failures
    )


def _load(path: Path, reports: _Reports) -> list[dict[str, Any]]:
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.plugins.loader import init_plugin_loader
    from ansible.vars.manager import VariableManager

    def parse():
        loader = DataLoader()
        try:
            return loader, InventoryManager(loader=loader, sources=[str(path.absolute())])
        except AnsibleError as exc:  # ansible.cfg may make an unparsed source fatal; the failures say why
            return loader, exc

    if _collections_needed(reports):
        init_plugin_loader()
    loader, inventory = parse()
    if _collections_needed(reports):  # a plugin named by its full name: set the loader up, read again
        init_plugin_loader()
        reports.clear()
        loader, inventory = parse()
    _raise_unparsed(path, reports)
    if isinstance(inventory, Exception):
        raise _config_error(inventory, path)
    if len(inventory.hosts) > MAX_HOSTS:
        raise ConfigError(f"{len(inventory.hosts)} hosts, more than {MAX_HOSTS}: is a host range written too wide?",
                          source=str(path))
    variables = VariableManager(loader=loader, inventory=inventory)
    # Only group_vars/ and host_vars/ beside the inventory: with no playbook, Ansible would also read
    # them from the working directory, which would make the cluster depend on where kubeprov runs.
    variables.safe_basedir = False

    roles: dict[str, list[str]] = {}
    for name, host in inventory.hosts.items():  # the inventory's order: each host's first appearance
        groups = {LEGACY_GROUPS.get(group.name, group.name) for group in host.get_groups()}
        found = [role for group, role in ROLE_GROUPS.items() if group in groups]
        if found:
            roles[name] = found
    if not roles:
        said = f"; Ansible warned: {' / '.join(dict.fromkeys(reports.warnings))}" if reports.warnings else ""
        raise ConfigError(
            f"no hosts in the groups kube_control_plane, kube_node or etcd (kubespray's group names){said}",
            source=str(path),
        )
    # Control planes first (the first one bootstraps the cluster), then the inventory's order.
    ordered = sorted(roles, key=lambda name: "control-plane" not in roles[name])
    result = []
    for name in ordered:
        try:
            merged = variables.get_vars(host=inventory.hosts[name], include_hostvars=False, stage="all")
        except AnsibleError as exc:  # a broken group_vars/host_vars file
            raise _config_error(exc, path) from None
        result.append(_host_entry(name, _Variables(merged, loader, path, name), roles[name]))
    return result


# --- errors -------------------------------------------------------------------------------------


def _raise_unparsed(path: Path, reports: _Reports) -> None:
    """Ansible skips a source no plugin could read (with a warning); kubeprov stops at it, naming the file."""
    if reports.failures:
        first = reports.failures[0].source
        failures = [f for f in reports.failures if f.source == first] or reports.failures
        failed = Path(first) if first else path
        raise _config_error(_most_relevant(failed, failures).error, failed)
    if reports.unparsed:
        from ansible import constants

        source = reports.unparsed[0]
        if os.path.isdir(source):
            raise ConfigError("no inventory file in this directory", source=source)
        raise ConfigError(f"none of Ansible's inventory plugins ({', '.join(constants.INVENTORY_ENABLED)}) can read it",
                          source=source)


def _most_relevant(path: Path, failures: list[_Failure]) -> _Failure:
    """Of the plugins that tried the file and failed, the one meant for it: every plugin that accepts
    a file tries it in turn, so a YAML typo also fails as INI, and the INI complaint would mislead."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        text = ""
    order = ["script"] if os.access(path, os.X_OK) else []
    if _looks_like_yaml(path, text):
        # `auto` reads plugin configs (a top-level `plugin:` key); `yaml` reads group trees.
        order += ["auto", "yaml"] if _PLUGIN_KEY.search(text) else ["yaml", "auto"]
    else:
        order += ["ini"]
    return min(failures, key=lambda f: order.index(f.plugin) if f.plugin in order else len(order))


def _looks_like_yaml(path: Path, text: str) -> bool:
    if path.suffix in (".yaml", ".yml", ".json"):
        return True
    if path.suffix in (".ini", ".cfg"):
        return False
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith(("#", ";")):
            return line.lstrip().startswith("{") or bool(_YAML_START.match(line))
    return False


def _origin(exc: BaseException | None):
    """The file (and line) an Ansible error concerns: Ansible tags errors and values with their
    Origin, sometimes on an exception further down the chain (host_group_vars re-raises without it)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        origin = _tagged_origin(getattr(exc, "obj", None))
        if origin is not None:
            return origin
        exc = exc.__cause__ or exc.__context__
    return None


def _tagged_origin(obj: Any):
    """The Origin (with a file) that `obj` is or carries, if any."""
    from ansible._internal._datatag._tags import Origin  # ansible-core 2.19 (pinned) keeps Origin here

    if obj is None:
        return None
    origin = obj if isinstance(obj, Origin) else Origin.get_tag(obj)
    return origin if origin is not None and origin.path else None


def _ini_line(exc: BaseException, path: Path) -> int | None:
    """The line an INI inventory failed at. ansible-core 2.19's INI plugin counts lines as it parses
    but clears the count before it reports a failure (its `finally` runs first); the text of the line
    it stopped at is still in its parsing frame, and names the line when the file has it only once."""
    text = None
    while exc is not None and text is None:
        for frame, _ in traceback.walk_tb(exc.__traceback__):
            code = frame.f_code
            if code.co_name == "_parse" and code.co_filename.endswith(os.path.join("inventory", "ini.py")):
                text = frame.f_locals.get("line")
        exc = exc.__cause__ or exc.__context__
    if not isinstance(text, str) or not text:
        return None
    try:
        numbers = [n for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1) if line.strip() == text]
    except OSError:
        return None
    return numbers[0] if len(numbers) == 1 else None


def _config_error(exc: Exception, fallback: Path, field: str | None = None) -> ConfigError:
    origin = _origin(exc)
    source = origin.path if origin is not None else str(fallback)
    message = " ".join(str(getattr(exc, "message", exc)).split()).removeprefix("Failed to parse inventory: ")
    # Ansible names the type it found by its internal class (<class '…._AnsibleTaggedList'>).
    message = re.sub(r"<class '(?:[\w.]*\._AnsibleTagged)?(\w+)'>", lambda m: m.group(1).lower(), message)
    line = origin.line_num if origin is not None else None
    # Groups used but never defined are reported after the last line; the message names them.
    if line is None and "undefined group" not in message:
        line = _ini_line(exc, Path(source))
    where = ""
    if line:
        where = f"line {line}" + (f", column {origin.col_num}" if origin is not None and origin.col_num else "") + ": "
    return ConfigError(where + message, source=source, field=field)


# --- variables → a host entry -------------------------------------------------------------------


class _Variables:
    """One host's merged variables as Ansible would use them: a value written as a template
    (`ip: "{{ ansible_host }}"`) is rendered, as Ansible renders connection variables."""

    def __init__(self, merged: dict[str, Any], loader, inventory: Path, host: str):
        self._merged, self._loader, self._inventory, self._host = merged, loader, inventory, host

    def first(self, *names: str) -> Any:
        """The value of the first of `names` that is set (Ansible's older ansible_ssh_* spellings last)."""
        name = next((name for name in names if name in self._merged), None)
        return None if name is None else self.get(name)

    def __contains__(self, name: str) -> bool:
        return name in self._merged

    def get(self, name: str) -> Any:
        from ansible.errors import AnsibleError
        from ansible.template import Templar

        value = self._merged[name]
        try:
            if isinstance(value, str) and any(marker in value for marker in _TEMPLATE):
                value = Templar(loader=self._loader, variables=self._merged).template(value)
            return _plain(value)
        except AnsibleError as exc:  # an undefined variable in a template, a vault value without its password
            origin = _origin(exc) or _tagged_origin(self._merged[name])
            source = origin.path if origin is not None else str(self._inventory)
            message = " ".join(str(getattr(exc, "message", exc)).split())
            raise ConfigError(f"cannot evaluate {name}: {message}", source=source, field=self._host) from None


def _plain(value: Any) -> Any:
    """Ansible's values are tagged subclasses of str, int, dict…; the model wants the plain types."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dict):
        return {_plain(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _host_entry(name: str, variables: _Variables, roles: list[str]) -> dict[str, Any]:
    address = variables.first("ansible_host", "ansible_ssh_host")
    entry: dict[str, Any] = {"name": name, "address": name if address is None else address, "roles": roles}
    if "ip" in variables:
        entry["internalAddress"] = variables.get("ip")
    ssh = {
        key: value
        for key, value in (
            ("user", variables.first("ansible_user", "ansible_ssh_user")),
            ("port", variables.first("ansible_port", "ansible_ssh_port")),
            ("key", variables.first("ansible_ssh_private_key_file", "ansible_private_key_file")),
        )
        if value is not None
    }
    if ssh:
        entry["ssh"] = ssh
    return entry
