"""Load a cluster file (and optionally an Ansible inventory) into a validated `Cluster`.

Whatever goes wrong — unreadable file, malformed YAML, unknown key, wrong type, a cross-field
rule — comes out as one `ConfigError` naming the file and the field, never as a traceback.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from provision.config.inventory import load_inventory
from provision.config.models import API_VERSION, KIND, Cluster, _CrossFieldError
from provision.config.source import label, parse_yaml, read_text
from provision.errors import ConfigError


def format_loc(loc: tuple) -> str:
    """('hosts', 1, 'ssh', 'port') → 'hosts[1].ssh.port'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + label(part)
    return out


def _first_error(exc: ValidationError, source: str, data: Any) -> ConfigError:
    errors = exc.errors(include_url=False)
    # pydantic reports one error per union member for the same field; the first is the clearest.
    error = errors[0]
    cross = (error.get("ctx") or {}).get("error")
    if isinstance(cross, _CrossFieldError):
        # Its field is relative to the model that raised it: the cluster's (loc ()) or a section's.
        where = format_loc(_path_in(data, error["loc"], missing=False))
        field = f"{where}{'' if cross.field.startswith('[') or not where else '.'}{cross.field}"
        return ConfigError(cross.message, source=source, field=field)
    kind = error["type"]
    field = format_loc(_path_in(data, error["loc"], missing=kind == "missing"))
    if kind == "extra_forbidden":
        message = "unknown key"
    elif kind == "missing":
        message = "required but missing"
    elif kind in ("value_error", "assertion_error"):
        message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    else:
        message = f"{error['msg']} (got {_short(error.get('input'))})"
    more = len({format_loc(e["loc"][:1]) for e in errors}) - 1
    if more > 0:
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    return ConfigError(message, source=source, field=field or None)


def _path_in(data: Any, loc: tuple, *, missing: bool) -> tuple:
    """The part of pydantic's error location that exists in the file.

    pydantic adds steps of its own (union members such as 'IPv4Network', '[key]'); they are
    not keys of the input, so following the input drops them. A missing key is kept: it is the
    field to name.
    """
    path, node = [], data
    for index, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif missing and index == len(loc) - 1:
            pass
        else:
            continue
        path.append(part)
    return tuple(path)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def cluster_from_data(data: Any, source: str, *, base_dir: Path | None = None) -> Cluster:
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"expected a mapping with apiVersion: {API_VERSION} and kind: {KIND}, got {kind}", source=source)
    if data.get("apiVersion") != API_VERSION:
        raise ConfigError(f"must be {API_VERSION!r} (got {data.get('apiVersion')!r})", source=source, field="apiVersion")
    if data.get("kind") != KIND:
        raise ConfigError(f"must be {KIND!r} (got {data.get('kind')!r})", source=source, field="kind")
    try:
        cleaned = _without_empty_keys(data, Cluster)
        cluster = Cluster.model_validate(cleaned)
    except ValidationError as exc:
        raise _first_error(exc, source, cleaned) from None
    except RecursionError:
        raise ConfigError("nested too deeply", source=source) from None
    if base_dir is not None:
        cluster = _resolve_paths(cluster, base_dir, source)
    return cluster


def _without_empty_keys(data: Any, model: type[BaseModel]) -> Any:
    """Drop `key:` left with no value (YAML null) wherever null is not a valid value: it means the default.

    Commenting out every line under a section leaves `etcd:` alone, which YAML reads as null;
    that should not be "Input should be a valid dictionary".
    """
    if not isinstance(data, dict):
        return data
    fields = {info.alias or name: info for name, info in model.model_fields.items()}
    cleaned = {}
    for key, value in data.items():
        info = fields.get(key) if isinstance(key, str) else None
        if info is not None:
            if value is None and not _accepts_none(info.annotation):
                continue
            inner = _models_in(info.annotation)
            if inner and isinstance(value, list):
                value = [_without_empty_keys(item, inner[0]) for item in value]
            elif inner:
                value = _without_empty_keys(value, inner[0])
        cleaned[key] = value
    return cleaned


def _accepts_none(annotation: Any) -> bool:
    return annotation is None or type(None) in get_args(annotation)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The model classes in an annotation such as `list[Host]` or `SSH`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


def _resolve_paths(cluster: Cluster, base_dir: Path, source: str) -> Cluster:
    """Relative paths in a file mean 'relative to that file', whatever the working directory.

    `~` stays in SSH paths (it is the user's who runs ssh) but must name a user that exists;
    the cluster directory is used locally at once, so its `~` is expanded here.
    """

    def resolve(path: Path, field: str) -> Path:
        try:
            expanded = path.expanduser()
        except RuntimeError:  # ~someone, for a user this machine does not have
            raise ConfigError(f"cannot expand {str(path)!r}: no such user", source=source, field=field) from None
        return path if expanded.is_absolute() else base_dir / path

    cluster_dir = resolve(cluster.directory, "clusterDir").expanduser()
    hosts = []
    for index, host in enumerate(cluster.hosts):
        ssh_paths = {
            name: resolve(path, f"hosts[{index}].ssh.{alias}")
            for name, alias, path in (("key", "key", host.ssh.key), ("known_hosts", "knownHosts", host.ssh.known_hosts))
            if path is not None
        }
        hosts.append(host.model_copy(update={"ssh": host.ssh.model_copy(update=ssh_paths)}) if ssh_paths else host)
    artifacts = cluster.artifacts
    if artifacts.bundle_dir is not None:  # read locally, like the cluster directory
        artifacts = artifacts.model_copy(update={"bundle_dir": resolve(artifacts.bundle_dir, "artifacts.bundleDir").expanduser()})
    return cluster.model_copy(update={"cluster_dir": cluster_dir, "hosts": hosts, "artifacts": artifacts})


def load_cluster(config: Path | None, inventory: Path | None = None) -> Cluster:
    """The cluster described by a cluster file, its hosts optionally from an Ansible inventory.

    With an inventory, the inventory supplies the hosts and the file everything else; the file
    must then not list hosts itself (two sources of truth would disagree sooner or later).
    """
    if config is None:
        if inventory is None:
            raise ConfigError("give a cluster file (-c FILE), and optionally an Ansible inventory (-i INVENTORY) for the hosts")
        raise ConfigError("an inventory has no kubernetesVersion or cluster settings; give a cluster file too (-c)", source=str(inventory))
    parsed = parse_yaml(read_text(config), str(config))
    if not isinstance(parsed, dict):
        kind = "an empty file" if parsed is None else f"a {type(parsed).__name__}"
        raise ConfigError(f"expected a mapping (apiVersion, kind, …), got {kind}", source=str(config))
    data: dict[str, Any] = dict(parsed)
    base_dir = Path(config).resolve().parent
    if inventory is None:
        return cluster_from_data(data, str(config), base_dir=base_dir)
    if "hosts" in data:
        raise ConfigError(
            f"hosts are listed here and in the inventory {inventory}; keep them in one place",
            source=str(config), field="hosts",
        )
    data["hosts"] = load_inventory(inventory)
    try:
        return cluster_from_data(data, str(config), base_dir=base_dir)
    except ConfigError as exc:
        if not (exc.field or "").startswith("hosts"):
            raise
        # A host problem is the inventory's: name that file and the host, not a list index.
        match = re.match(r"hosts\[(\d+)\]\.?(.*)", exc.field or "")
        field = exc.field
        if match:
            host = label(data["hosts"][int(match.group(1))]["name"])
            field = f"{host}.{match.group(2)}" if match.group(2) else host
        raise ConfigError(exc.message, source=str(inventory), field=field) from None
