"""Errors an operator sees as one line; the CLI maps each to an exit code and never a traceback."""

from __future__ import annotations


class KubeprovError(Exception):
    """An error kubeprov explains itself. `exit_code` is what the CLI exits with."""

    exit_code = 1


class KubeprovWarning(UserWarning):
    """A notice from kubeprov's libraries (Python's warnings); the CLI shows each as one `warning:` line."""


class ConfigError(KubeprovError):
    """Bad input: a config file, inventory or flag. Names the file and, where known, the field."""

    exit_code = 2

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        self.message = message
        self.source = source
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ": ".join(part for part in (self.source, self.field) if part)
        return f"{where}: {self.message}" if where else self.message


class PKIError(KubeprovError):
    """A certificate or key cannot be loaded, issued or trusted."""

    exit_code = 3
