"""The roles' kubeprov_artifacts action (playbooks/roles/files/action_plugins/kubeprov_artifacts.py),
run by real Ansible over a real sshd: files placed with their mode, checked by sha256 on the host,
nothing sent again once in place, and a file whose transfer does not match never lands."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from provision.ansible.inventory import PLAYBOOKS
from provision.ansible.runner import ansible_playbook_binary
from transport_sshd import sshd_fleet, unavailable_reason

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]


@pytest.fixture(scope="module")
def fleet():
    with sshd_fleet(1) as fleet:
        yield fleet


def place(fleet, tmp_path: Path, files: list[dict], mode: str = "0755") -> tuple[int, dict]:
    """One kubeprov_artifacts task on the fleet's host; (exit code, the task's result)."""
    host = fleet.hosts[0]
    out = tmp_path / "result.json"
    out.unlink(missing_ok=True)
    playbook = tmp_path / "place.yml"
    playbook.write_text(json.dumps([{"hosts": "all", "gather_facts": False, "roles": ["files"], "tasks": [
        {"name": "place", "kubeprov_artifacts": {"files": files, "mode": mode}, "register": "placed", "ignore_errors": True},
        {"name": "write", "ansible.builtin.copy": {"content": "{{ placed | to_json }}", "dest": str(out)}},
    ]}]))
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(f"{host.name} ansible_host={host.address} ansible_port={host.ssh.port} ansible_user=root "
                         f"ansible_ssh_private_key_file={host.ssh.key}\n")
    env = {**os.environ, "ANSIBLE_CONFIG": str(PLAYBOOKS / "ansible.cfg"), "ANSIBLE_ROLES_PATH": str(PLAYBOOKS / "roles"),
           "ANSIBLE_SSH_ARGS": f"-o UserKnownHostsFile={fleet.known_hosts} -o IdentitiesOnly=yes -o BatchMode=yes",
           "ANSIBLE_CONTROL_PATH_DIR": str(tmp_path / "cp")}
    proc = subprocess.run([ansible_playbook_binary(), "-i", str(inventory), str(playbook)],
                          capture_output=True, text=True, env=env, timeout=120)
    return proc.returncode, json.loads(out.read_text()) if out.exists() else {"output": proc.stdout[-2000:]}


def artifact(path: Path, data: bytes, dest: Path) -> dict:
    path.write_bytes(data)
    return {"src": str(path), "dest": str(dest), "sha256": hashlib.sha256(data).hexdigest()}


def test_files_are_placed_checked_and_not_sent_again(fleet, tmp_path: Path):
    # The fleet's host shares this machine's filesystem: what it placed is read here.
    dest = tmp_path / "host"
    big = os.urandom(3 << 20)  # several of the hashing's 1 MiB blocks
    files = [artifact(tmp_path / "a", big, dest / "bin/a"), artifact(tmp_path / "b", b"#!/bin/sh\n", dest / "lib/b")]
    rc, result = place(fleet, tmp_path, files)
    assert rc == 0 and result["changed"] and result["placed"] == [f["dest"] for f in files], result
    assert (dest / "bin/a").read_bytes() == big and (dest / "lib/b").read_bytes() == b"#!/bin/sh\n"
    assert oct((dest / "bin/a").stat().st_mode & 0o777) == "0o755"
    assert not list(dest.rglob("*.kubeprov-new"))
    # In place: the host's digests match, nothing is sent or changed.
    rc, again = place(fleet, tmp_path, files)
    assert rc == 0 and not again["changed"] and again["placed"] == []
    # One of them changed on the host: only that one goes again.
    (dest / "lib/b").write_bytes(b"drift\n")
    rc, repaired = place(fleet, tmp_path, files, mode="0644")
    assert rc == 0 and repaired["placed"] == [files[1]["dest"]]
    assert (dest / "lib/b").read_bytes() == b"#!/bin/sh\n" and oct((dest / "lib/b").stat().st_mode & 0o777) == "0o644"


def test_a_transfer_that_does_not_match_its_sha256_never_lands(fleet, tmp_path: Path):
    dest = tmp_path / "host" / "bin" / "kubelet"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"the running one\n")
    wrong = {**artifact(tmp_path / "kubelet", b"new bytes\n", dest), "sha256": hashlib.sha256(b"other bytes\n").hexdigest()}
    rc, result = place(fleet, tmp_path, [wrong])
    assert result.get("failed"), result
    assert f"{dest}: sha256 differs after the transfer" in result["msg"]
    assert dest.read_bytes() == b"the running one\n" and not list(dest.parent.glob("*.kubeprov-new"))
