"""A pytest fixture: one 3-host lab shared by the whole test run, removed even when tests fail.

Use it from any conftest by importing it (`from provision.lab.testing import lab  # noqa: F401`);
import it in ONE conftest only (the top-most that needs it), or each would make its own lab.
Outside CI it skips when the lab cannot exist here (not root, tools missing); with CI set it fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

from provision.lab import lifecycle
from provision.lab.access import ssh_args
from provision.lab.inventory import LabHost
from provision.lab.system import REQUIRED_TOOLS

HOSTS = 3


@dataclass(frozen=True)
class TestLab(lifecycle.LabInfo):
    """The running lab (what `lab up` reports), plus helpers tests use to reach its hosts."""

    __test__ = False  # not a test class

    def host(self, name: str) -> LabHost:
        return next(h for h in self.hosts if h.name == name)

    def ssh(self, host: LabHost | str, command: str, *, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a shell command on a host over real ssh (strict host keys); check → raise on failure."""
        target = self.host(host) if isinstance(host, str) else host
        proc = subprocess.run(ssh_args(target.address, self.key, self.known_hosts) + [command],
                              capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"{target.name}: `{command}` exited {proc.returncode}: {proc.stderr.strip()}")
        return proc


def unavailable_reason() -> str | None:
    import shutil

    if os.geteuid() != 0:
        return "the lab needs root"
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)} (scripts/setup installs them)"
    return None


def remove_stale_test_labs() -> None:
    """Labs left by test runs that were killed (named <letter><pid>, that pid gone)."""
    for state, _ in lifecycle.status():
        match = re.fullmatch(r"[a-z](\d+)", state.name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            lifecycle.down(state.name)


@contextlib.contextmanager
def running_lab(prefix: str, hosts: int = HOSTS, *, name: str | None = None) -> Iterator[TestLab]:
    """A lab named <prefix><pid> for as long as the block runs, removed even when it fails.

    Skips where no lab can exist here (saying why); with CI set it fails instead. Tests that
    change hosts beyond what others expect use their own prefix rather than the shared `lab`.
    """
    reason = unavailable_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"lab tests must run in CI: {reason}")
        pytest.skip(reason)
    remove_stale_test_labs()
    name = name or f"{prefix}{os.getpid()}"[:12]
    try:
        info = lifecycle.up(name, hosts)
        yield TestLab(**{f.name: getattr(info, f.name) for f in fields(info)})
    finally:
        lifecycle.down(name)


@pytest.fixture(scope="session")
def lab():
    """The lab shared by the whole run (KUBEPROV_TEST_LAB names an existing one to reuse)."""
    with running_lab("t", name=os.environ.get("KUBEPROV_TEST_LAB")) as shared:
        yield shared
