"""A wheel built from this checkout is a working kubeprov: it carries the playbooks (roles, their
modules and plugins, ansible.cfg), and `kubeprov prepare` run from a fresh venv outside the checkout
prepares a real lab host with the roles it carries.

The venv gets kubeprov from the wheel alone (pip install --no-deps) and its dependencies from this
venv through a .pth line: no network, and no editable kubeprov (a directory a .pth line adds is not
scanned for further .pth files, so the editable finder never loads). Every test asserts where
`provision` was imported from.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from provision.ansible.inventory import roles_for
from provision.artifacts.bundle import seal
from provision.config.loader import load_cluster
from provision.lab.testing import running_lab
from provision.render.containerd import containerd_config

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
STAND_IN = '#!/bin/sh\necho "STAND-IN {name} (kubeprov tests): not the real binary" >&2\nexit 3\n'
# What the wheel's kubeprov says about itself: where its code and roles are, and its role versions.
_SELF_REPORT = """
import json, provision
from provision.ansible import inventory
print(json.dumps({"provision": provision.__file__, "playbooks": str(inventory.PLAYBOOKS),
                  "roles": {p.name: inventory.role_version(p.name) for p in inventory.ROLES_DIR.iterdir()}}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> dict:
    top = tmp_path_factory.mktemp("wheel")
    # Built from a copy, so the build leaves no build/ or egg-info in the checkout.
    source = top / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for part in ("provision", "templates", "playbooks"):
        shutil.copytree(REPO / part, source / part, ignore=ignore)
    for part in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / part, source / part)
    started = time.monotonic()
    # Isolated, as a user's `pip wheel .` is: this venv's setuptools is older than the build needs.
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(top / "dist"), str(source)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    (path,) = (top / "dist").glob("kubeprov-*.whl")
    return {"path": path, "source": source, "seconds": time.monotonic() - started}


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict:
    top = tmp_path_factory.mktemp("venv")
    venv = top / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel["path"])],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    # The dependencies' console scripts, as pip writes them into a venv it installs ansible-core
    # into (the .pth line brings only their modules): prepare runs ansible-playbook from here.
    for script in Path(sys.executable).parent.glob("ansible*"):
        shebang, rest = script.read_text().split("\n", 1)
        assert shebang.startswith("#!"), script
        (venv / "bin" / script.name).write_text(f"#!{python}\n{rest}")
        (venv / "bin" / script.name).chmod(0o755)
    elsewhere = top / "cwd"  # not the checkout: its provision/ must not shadow the wheel's
    elsewhere.mkdir()
    # Nothing of the checkout's venv on PATH: kubeprov and ansible-playbook are the fresh venv's.
    path = [str(venv / "bin")] + [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and not Path(p).is_relative_to(REPO)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")} | {"PATH": os.pathsep.join(path)}
    report = subprocess.run([str(python), "-c", _SELF_REPORT], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    return {"venv": venv, "site": site, "cwd": elsewhere, "env": env, **json.loads(report.stdout)}


def test_the_wheel_carries_the_playbooks_roles_modules_and_ansible_cfg(wheel):
    names = set(zipfile.ZipFile(wheel["path"]).namelist())
    shipped = {name.removeprefix("provision/playbooks/") for name in names if name.startswith("provision/playbooks/")}
    playbooks = wheel["source"] / "playbooks"
    # Every file the roles and playbooks consist of, and nothing of the roles' tests (molecule/).
    expected = {p.relative_to(playbooks).as_posix() for p in playbooks.rglob("*") if p.is_file()}
    expected = {name for name in expected if not name.startswith("molecule/") and name != "README.md"}
    assert shipped == expected
    assert {"ansible.cfg", "site.yml", "prepare.yml", "preflight.yml", "roles/preflight/library/kubeprov_preflight.py",
            "roles/files/action_plugins/kubeprov_artifacts.py", "roles/files/action_plugins/kubeprov_sh.py",
            "roles/images/action_plugins/kubeprov_images.py",
            "roles/os/tasks/main.yml"} <= shipped
    assert any(name.startswith("provision/templates/") for name in names)
    assert wheel["seconds"] < 120, f"building the wheel took {wheel['seconds']:.0f}s"


def test_the_installed_wheel_finds_its_own_roles_with_the_checkouts_versions(wheel, installed, monkeypatch):
    from provision.ansible import inventory

    site = installed["site"]
    assert Path(installed["provision"]).is_relative_to(site)
    assert Path(installed["playbooks"]) == site / "provision" / "playbooks"
    # Same role versions: a host prepared from a checkout is up to date for an installed kubeprov.
    # Computed over the copy the wheel was built from: others may be editing the checkout's roles.
    monkeypatch.setattr(inventory, "ROLES_DIR", wheel["source"] / "playbooks" / "roles")
    assert installed["roles"] == {p.name: inventory.role_version(p.name) for p in inventory.ROLES_DIR.iterdir()}


@pytest.fixture(scope="module")
def own_lab():
    """One host of its own: a stacked control plane's preflight would find the shared lab's hosts
    holding etcd's ports once tests/lab/test_prepare.py ran its external etcd there."""
    with running_lab("w", hosts=1) as own:
        yield own


@pytest.mark.lab
def test_prepare_from_the_installed_wheel_prepares_a_lab_host(installed, own_lab, tmp_path):
    (host,) = own_lab.hosts
    bundle = tmp_path / "bundle"
    (bundle / "bin").mkdir(parents=True)
    (bundle / "images").mkdir()
    for name in ("kubelet", "kubectl", "crictl"):
        (bundle / "bin" / name).write_text(STAND_IN.format(name=name))
        (bundle / "bin" / name).chmod(0o755)
    seal(bundle)
    cluster_file = tmp_path / "cluster.yaml"
    cluster_file.write_text(yaml.safe_dump({
        "apiVersion": "kubeprov.io/v1alpha1", "kind": "Cluster", "name": "wheel", "kubernetesVersion": "v1.31.0",
        "clusterDir": str(tmp_path / "cluster"), "cni": "bridge",
        "containerd": {"restrict_oom_score_adj": True},  # nspawn lacks CAP_SYS_RESOURCE
        "hosts": [{"name": host.name, "address": host.address, "roles": ["control-plane"],
                   "ssh": {"key": str(own_lab.key), "knownHosts": str(own_lab.known_hosts)}}],
    }))
    cluster = load_cluster(cluster_file, None)

    started = time.monotonic()
    # The runner's directory is kept: its events say which files Ansible ran the tasks from.
    proc = subprocess.run([str(installed["venv"] / "bin" / "kubeprov"), "prepare", "-c", str(cluster_file), "--bundle", str(bundle), "--lab"],
                          cwd=installed["cwd"], env=installed["env"] | {"KUBEPROV_KEEP_RUNNER_DIR": "1"},
                          capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"prepare from the installed wheel: {seconds:.1f}s")

    # Every task ran from the wheel's roles, every role this host needs among them.
    events = [json.loads(p.read_text()) for p in (tmp_path / "cluster" / "prepare").glob("kubeprov-runner-*/artifacts/*/job_events/*.json")]
    task_paths = {e["event_data"]["task_path"].rsplit(":", 1)[0] for e in events if e.get("event_data", {}).get("task_path")}
    assert task_paths
    playbooks = installed["site"] / "provision" / "playbooks"
    assert [p for p in task_paths if not Path(p).is_relative_to(playbooks)] == []
    ran = {Path(p).relative_to(playbooks / "roles").parts[0] for p in task_paths if Path(p).is_relative_to(playbooks / "roles")}
    # Those with tasks of their own (runc's and kubectl's come through their dependencies, meta/main.yml).
    tasks = {role: playbooks / "roles" / role / "tasks" / "main.yml" for role in roles_for(cluster, cluster.host(host.name))}
    assert {role for role, path in tasks.items() if path.exists() and yaml.safe_load(path.read_text())} <= ran
    assert {"preflight", "os", "containerd", "kubelet", "node-packages"} <= ran

    # The roles' work, checked on the host.
    assert own_lab.ssh(host, "systemctl is-active containerd").stdout.strip() == "active"
    expected = hashlib.sha256(containerd_config(cluster).encode()).hexdigest()
    assert own_lab.ssh(host, "sha256sum < /etc/containerd/config.toml").stdout.split()[0] == expected
    kubelet = hashlib.sha256((bundle / "bin" / "kubelet").read_bytes()).hexdigest()
    assert own_lab.ssh(host, "sha256sum /usr/bin/kubelet").stdout.split()[0] == kubelet
    assert own_lab.ssh(host, "systemctl is-enabled kubelet").stdout.strip() == "enabled"
    applied = json.loads(own_lab.ssh(host, "cat /var/lib/kubeprov/applied.json").stdout)
    assert applied["roles"] == {name: installed["roles"][name] for name in applied["roles"]}
