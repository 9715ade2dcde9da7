"""Molecule scenario playbooks/molecule/node (os, runc, containerd) on the lab's hosts:
syntax, converge, idempotence (a second converge changes nothing), verify.

The delegated, unmanaged driver uses the lab hosts as they are; the inventory is the one
`kubeprov prepare` generates (plan only: nothing runs before molecule does).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from provision.ansible.inventory import PLAYBOOKS
from provision.config.loader import load_cluster
from provision.prepare import Options, place_files, plan
from provision.transport import Transport

pytestmark = [pytest.mark.lab, pytest.mark.integration]


def test_molecule_node_scenario_converges_idempotently(lab, tmp_path: Path):
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "molecule").exists() and shutil.which("molecule") is None:
        pytest.skip("molecule is not installed (pip install -e '.[test]')")
    ssh = {"key": str(lab.key), "knownHosts": str(lab.known_hosts)}
    document = {
        "apiVersion": "kubeprov.io/v1alpha1", "kind": "Cluster", "name": "molecule", "kubernetesVersion": "v1.31.0",
        "clusterDir": str(tmp_path / "cluster"), "cni": "bridge", "containerd": {"restrict_oom_score_adj": True},
        "hosts": [{"name": h.name, "address": h.address, "roles": list(h.roles), "ssh": ssh} for h in lab.hosts],
    }
    cluster_file = tmp_path / "cluster.yaml"
    cluster_file.write_text(yaml.safe_dump(document))
    cluster = load_cluster(cluster_file, None)
    plans, _, inventory = plan(cluster, Options(lab=True))
    # The rendered files the roles act on come from the transport (one writer), as prepare places them.
    with Transport() as transport:
        place_files(transport, cluster, plans, [h.name for h in cluster.hosts], parallel=10)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(PLAYBOOKS / "ansible.cfg"),
        "KUBEPROV_MOLECULE_INVENTORY": str(inventory),
        "KUBEPROV_MOLECULE_HOST": lab.hosts[0].name,
        "XDG_CACHE_HOME": str(tmp_path / "cache"),  # molecule's ephemeral state stays in tmp_path
        "NO_COLOR": "1", "PY_COLORS": "0", "ANSIBLE_NOCOLOR": "1",
    }
    proc = subprocess.run([str(bin_dir / "molecule"), "test", "-s", "node"], cwd=PLAYBOOKS, env=env,
                          capture_output=True, text=True, timeout=1200)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    # The scenario's test_sequence is syntax, converge, idempotence, verify: all four must succeed.
    summary = [line.split() for line in output.splitlines() if line.startswith("node ") and "actions=" in line]
    assert summary and summary[-1][2:] == ["actions=4", "successful=4", "disabled=0", "skipped=0", "missing=0", "failed=0"], output[-2000:]
    recap = [line for line in output.splitlines() if "changed=" in line and "ok=" in line]
    assert any(lab.hosts[1].name in line for line in recap)  # converge really ran on the lab's hosts
