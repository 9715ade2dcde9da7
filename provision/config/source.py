"""Reading a config or inventory file into plain data, with every failure as one ConfigError line.

Unreadable (missing, a directory, a FIFO, too big, not UTF-8) and malformed YAML (syntax,
duplicate keys, aliases that explode) all end here, so the loaders above see only data.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from provision.errors import ConfigError


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys instead of silently keeping the last."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    own_pairs = sum(1 for key_node, _ in node.value if key_node.tag != "tag:yaml.org,2002:merge")
    loader.flatten_mapping(node)  # puts the pairs merged in with `<<: *anchor` first
    merged_pairs = len(node.value) - own_pairs
    mapping: dict = {}
    own_keys: set = set()
    for index, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            ) from None
        if index >= merged_pairs:
            # A key written twice is a mistake; a key that overrides a merged one is what `<<` is for.
            if key in own_keys:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            own_keys.add(key)
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


# A cluster file or inventory is a few kilobytes; anything near this is a wrong path.
MAX_FILE_BYTES = 4 * 1024 * 1024
# Expanded YAML nodes allowed: a legitimate file is far below; aliases can make a tiny file huge.
MAX_YAML_NODES = 100_000


def read_text(path: Path) -> str:
    """The file's text, or a ConfigError saying why not (missing, a directory, a FIFO, not UTF-8…)."""
    source = str(path)
    try:
        # O_NONBLOCK so that opening a FIFO does not wait for a writer; the type check below then
        # refuses it, and device files like /dev/zero that would never end.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ConfigError("no such file", source=source) from None
    except PermissionError:
        raise ConfigError("permission denied", source=source) from None
    except OSError as exc:
        raise ConfigError(exc.strerror or str(exc), source=source) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        what = "is a directory, not a file" if stat.S_ISDIR(mode) else "not a regular file"
        raise ConfigError(what, source=source)
    with os.fdopen(fd, "rb") as stream:
        try:
            raw = stream.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise ConfigError(exc.strerror or str(exc), source=source) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB: not a cluster file or inventory", source=source)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start})", source=source) from None


def parse_yaml(text: str, source: str) -> Any:
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = exc.problem or exc.context or "malformed YAML"
        raise ConfigError(f"malformed YAML: {where}{problem}", source=source) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"malformed YAML: {' '.join(str(exc).split())}", source=source) from None
    except RecursionError:
        raise ConfigError("malformed YAML: nested too deeply", source=source) from None
    if _expanded_size(data, MAX_YAML_NODES) > MAX_YAML_NODES:
        raise ConfigError(
            f"malformed YAML: aliases expand to more than {MAX_YAML_NODES} values (or refer to themselves)",
            source=source,
        )
    return data


def _expanded_size(data: Any, budget: int) -> int:
    """How many values `data` has once aliases are expanded, counting no further than past `budget`.

    PyYAML shares aliased objects, so the document is small in memory, but everything that walks
    it (validation, error reports) sees every copy; a self-referencing alias never ends.
    """
    count, stack = 0, [data]
    while stack and count <= budget:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


_PLAIN = re.compile(r"^[A-Za-z0-9_.:/@-]+$")


def label(key: Any) -> str:
    """A key as it can appear in a one-line error: quoted when it is odd (spaces, newlines, not text)."""
    return key if isinstance(key, str) and _PLAIN.match(key) else repr(key)
