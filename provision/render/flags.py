"""Command-line flags as data: a dict of base values, user overrides that replace them by key,
rendered sorted as `--key=value` (what kubeadm's ArgumentsToCommand does), or as the ETCD_*
environment variables etcd reads in place of its flags.

Keeping flags in a dict until the last moment is what lets tests, docs and `render --diff`
talk about one flag at a time.
"""

from __future__ import annotations

from collections.abc import Mapping

Flags = dict[str, str]


def merge_flags(base: Mapping[str, str], overrides: Mapping[str, str] | None = None) -> Flags:
    """Base flags with every override applied: same key → the override's value wins."""
    merged = dict(base)
    merged.update(overrides or {})
    return merged


def to_args(flags: Mapping[str, str]) -> list[str]:
    """`--key=value` for each flag, sorted by key, so a changed flag is a one-line diff."""
    return [f"--{key}={value}" for key, value in sorted(flags.items())]


def command(binary: str, base: Mapping[str, str], overrides: Mapping[str, str] | None = None) -> list[str]:
    return [binary, *to_args(merge_flags(base, overrides))]


def env_name(flag: str, prefix: str = "ETCD_") -> str:
    """etcd's environment spelling of a flag: listen-client-urls → ETCD_LISTEN_CLIENT_URLS."""
    return prefix + flag.upper().replace("-", "_")


def to_env_file(flags: Mapping[str, str], prefix: str = "ETCD_") -> str:
    """A systemd EnvironmentFile: one sorted `NAME=value` line per flag.

    Values are written bare: every value we render is a URL list, a path, a number or a word,
    none of which systemd would reinterpret (no quotes, backslashes or leading spaces).
    """
    lines = []
    for key, value in sorted(flags.items()):
        if any(ch in value for ch in "\"'\\\n") or value != value.strip():
            raise ValueError(f"flag --{key} has a value that cannot go into an environment file: {value!r}")
        lines.append(f"{env_name(key, prefix)}={value}")
    return "\n".join(lines) + "\n"
