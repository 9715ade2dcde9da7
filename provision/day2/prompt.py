"""Asking before a day-2 command changes hosts: shared by the command modules of provision/day2/
(here, not in cli.py, which imports them: importing it back would close an import cycle)."""

from __future__ import annotations

import sys

import typer

from provision.errors import ConfigError


def confirm(question: str, yes: bool) -> None:
    """Ask on the terminal unless --yes; without a terminal to ask on, refuse (exit 2). No: exit 1."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise ConfigError(f"{question.rstrip('?')}: not without --yes (stdin is not a terminal to ask on)")
    if not typer.confirm(question, default=False, err=True):
        raise typer.Exit(1)
