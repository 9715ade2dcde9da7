"""The roles' kubeprov_sh action (playbooks/roles/files/action_plugins/kubeprov_sh.py) against
ansible.builtin.shell, both run by real Ansible over a real sshd: the same scripts give the same
rc, stdout, stderr and lines, and no Python runs on the host for kubeprov_sh."""

from __future__ import annotations

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

# (script, stdin, environment): what the roles do with the shell module, each a case.
CASES = {
    "output": ("set -eu\necho one\necho two\necho warned >&2", None, {}),
    "failure": ("echo before; exit 3", None, {}),
    "stdin": ("set -e\ntmp=$(mktemp)\ncat >\"$tmp\"\nwc -l <\"$tmp\"\ncat \"$tmp\"\nrm \"$tmp\"", '{"a": 1,\n "b": "KUBEPROV"}', {}),
    # A command that reads its input must not read the script's own text.
    "no stdin": ("read line || echo 'no input'\necho after", None, {}),
    "environment": ('echo "api=$ETCDCTL_API"', None, {"ETCDCTL_API": "3"}),
    "quotes": ("printf '%s\\n' \"it's\" '$HOME' \"a  b\"", None, {}),
}


def _playbook(module: str, write: bool) -> list[dict]:
    tasks = []
    for name, (script, stdin, environment) in CASES.items():
        args = {"script": script} if module == "kubeprov_sh" else {"cmd": script}
        if stdin is not None:
            args["stdin"] = stdin
        tasks.append({"name": name, module: args, "environment": environment, "register": "out", "ignore_errors": True})
        tasks.append({"name": f"record {name}", "ansible.builtin.set_fact": {
            "results": "{{ results | default({}) | combine({%r: out}) }}" % name}})
    if write:  # the fleet's hosts share this machine's filesystem
        tasks.append({"name": "write", "ansible.builtin.copy": {"content": "{{ results | to_json }}", "dest": "{{ out_file }}"}})
    return [{"hosts": "all", "gather_facts": False, "roles": ["files"], "tasks": tasks}]


def _run(fleet, tmp_path: Path, module: str, *extra: str, write: bool = True) -> dict:
    host = fleet.hosts[0]
    playbook = tmp_path / f"{module}.yml"
    playbook.write_text(json.dumps(_playbook(module, write)))
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(f"{host.name} ansible_host={host.address} ansible_port={host.ssh.port} ansible_user=root "
                         f"ansible_ssh_private_key_file={host.ssh.key}\n")
    out_file = tmp_path / f"{module}.json"
    env = {**os.environ, "ANSIBLE_CONFIG": str(PLAYBOOKS / "ansible.cfg"), "ANSIBLE_ROLES_PATH": str(PLAYBOOKS / "roles"),
           "ANSIBLE_SSH_ARGS": f"-o UserKnownHostsFile={fleet.known_hosts} -o IdentitiesOnly=yes -o BatchMode=yes",
           "ANSIBLE_CONTROL_PATH_DIR": str(tmp_path / "cp")}
    proc = subprocess.run([ansible_playbook_binary(), "-i", str(inventory), str(playbook), "-e", f"out_file={out_file}", *extra],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(out_file.read_text()) if out_file.exists() else {}


@pytest.fixture(scope="module")
def fleet():
    with sshd_fleet(1) as fleet:
        yield fleet


def test_kubeprov_sh_gives_what_the_shell_module_gives(fleet, tmp_path: Path):
    shell = _run(fleet, tmp_path, "ansible.builtin.shell")
    sh = _run(fleet, tmp_path, "kubeprov_sh")
    for name in CASES:
        for key in ("rc", "stdout", "stderr", "stdout_lines", "stderr_lines", "changed"):
            assert sh[name][key] == shell[name][key], (name, key, sh[name][key], shell[name][key])
        assert bool(sh[name].get("failed")) == bool(shell[name].get("failed")), name
    assert sh["failure"]["rc"] == 3 and sh["failure"]["failed"] and sh["failure"]["stdout"] == "before"
    assert sh["stdin"]["stdout_lines"] == ["2", '{"a": 1,', ' "b": "KUBEPROV"}']
    assert sh["no stdin"]["stdout_lines"] == ["no input", "after"]
    assert sh["environment"]["stdout"] == "api=3"
    assert sh["quotes"]["stdout_lines"] == ["it's", "$HOME", "a  b"]


def test_kubeprov_sh_starts_no_python_on_the_host(fleet, tmp_path: Path):
    """The host's Python interpreter replaced by one that records each start: the shell module
    starts it once per task, kubeprov_sh never."""
    trap = tmp_path / "trap"
    trap.mkdir()
    started = tmp_path / "python-started"
    (trap / "python3").write_text(f"#!/bin/sh\necho started >>{started}\nexec /usr/bin/python3 \"$@\"\n")
    (trap / "python3").chmod(0o755)
    for module in ("kubeprov_sh", "ansible.builtin.shell"):
        started.unlink(missing_ok=True)
        _run(fleet, tmp_path, module, "-e", f"ansible_python_interpreter={trap / 'python3'}", write=False)
        count = len(started.read_text().splitlines()) if started.exists() else 0
        if module == "kubeprov_sh":
            assert count == 0
        else:
            assert count == len(CASES)  # the trap sees the shell module: it would see kubeprov_sh
