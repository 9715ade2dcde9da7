"""YAML in and out through libyaml when PyYAML was built with it, else PyYAML's own Python code.

The same documents either way; libyaml is several times faster, and a no-op `up` renders and reads
about a hundred documents (manifests, kubelet and addon configs, the live objects it compares).
"""

from __future__ import annotations

from typing import Any, Iterable

import yaml

SafeDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def dump(document: Any, *, sort_keys: bool = False, dumper: type = SafeDumper, **options) -> str:
    """One document in block style."""
    return yaml.dump(document, Dumper=dumper, sort_keys=sort_keys, default_flow_style=False, **options)


def dump_all(documents: Iterable[Any], *, sort_keys: bool = False, **options) -> str:
    return yaml.dump_all(documents, Dumper=SafeDumper, sort_keys=sort_keys, default_flow_style=False, **options)


def load(text: str | bytes) -> Any:
    return yaml.load(text, Loader=SafeLoader)  # noqa: S506 - a safe loader


def load_all(text: str | bytes) -> list[Any]:
    return list(yaml.load_all(text, Loader=SafeLoader))  # noqa: S506 - a safe loader
