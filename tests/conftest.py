"""Shared fixtures. The helpers themselves live in testkit.py; import them from there.

Kept small and generic; anything specific to one area lives in that area's test module.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import testkit
from testkit import *  # noqa: F401,F403  (older tests import the helpers from here)

_THIS = sys.modules[__name__]


@pytest.hookimpl(tryfirst=True)
def pytest_collectstart(collector):
    """Keep `from conftest import ...` meaning this file for the modules in tests/.

    Without a package, pytest imports every conftest.py as the module `conftest`; once
    tests/lab/conftest.py is loaded (the lab/ directory is collected first) that name would
    point there. New code should import from testkit instead.
    """
    if isinstance(collector, pytest.Module) and collector.path.parent == Path(__file__).parent:
        sys.modules["conftest"] = _THIS


@pytest.fixture
def make_cluster(tmp_path):
    """make_cluster(**overrides) → path of a valid cluster file in tmp_path (testkit.write_cluster).

    `file=` names the file (default cluster.yaml); its clusterDir is tmp_path/<file stem>.
    Calling it again with the same file rewrites that file, which is how a test edits a cluster.
    """

    def make(file: str = "cluster.yaml", **overrides) -> Path:
        return testkit.write_cluster(tmp_path / file, **overrides)

    return make
