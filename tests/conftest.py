"""Shared fixtures. Helper functions live in testkit.py: `from testkit import ...`.

Kept small and generic; anything specific to one area lives in that area's test module.
"""

from __future__ import annotations

import compileall
from pathlib import Path

import pytest

import testkit
# One lab of real systemd hosts for the whole run, shared by every test that asks for `lab`.
from provision.lab.testing import lab  # noqa: F401  (the fixture)


def pytest_sessionstart(session) -> None:
    # Tests run `kubeprov` as a process again and again, as an operator does. Byte-compile the
    # checkout first, as pip does when it installs the package: where PYTHONDONTWRITEBYTECODE is
    # set (as on this machine) every run would otherwise compile provision/ anew, ~0.5 s of CPU
    # that an installed kubeprov never spends, and the e2e's "a no-op up takes < 3 s" would
    # measure the checkout instead of the product.
    compileall.compile_dir(Path(__file__).resolve().parent.parent / "provision", quiet=1)


@pytest.fixture
def make_cluster(tmp_path):
    """make_cluster(**overrides) → path of a valid cluster file in tmp_path (testkit.write_cluster).

    `file=` names the file (default cluster.yaml); its clusterDir is tmp_path/<file stem>.
    Calling it again with the same file rewrites that file, which is how a test edits a cluster.
    """

    def make(file: str = "cluster.yaml", **overrides) -> Path:
        return testkit.write_cluster(tmp_path / file, **overrides)

    return make
