"""A role's warning (a debug message starting with WARNING) reaches whoever runs the roles: once
per host, in the role's words, the host named by the caller and not again in the text. Real
ansible-runner over real sshd hosts, running the real crictl role for a bundle without crictl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provision.ansible.runner import run_playbook
from transport_sshd import sshd_fleet, unavailable_reason

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]


def test_a_bundle_without_crictl_is_said_once_per_host_and_installs_nothing(tmp_path: Path):
    with sshd_fleet(2) as fleet:
        lines = [f"{h.name} ansible_host={h.address} ansible_port={h.ssh.port} ansible_user=root "
                 f"ansible_ssh_private_key_file={h.ssh.key} "
                 f"ansible_ssh_common_args='-o UserKnownHostsFile={fleet.known_hosts} -o IdentitiesOnly=yes'"
                 for h in fleet.hosts]
        inventory = tmp_path / "hosts.ini"
        inventory.write_text("\n".join(lines) + "\n")
        playbook = tmp_path / "crictl.yml"
        playbook.write_text(json.dumps([{
            "hosts": "all", "gather_facts": False, "roles": ["crictl"],
            "vars": {"kubeprov_artifacts": {"source": "bundle", "components": {"crictl": {"binaries": []}}}},
        }]))
        said: list[tuple[str, str, str]] = []
        result = run_playbook(str(playbook), inventory, [h.name for h in fleet.hosts], work_dir=tmp_path,
                              on_update=lambda progress, what: said.append((progress.host, what, progress.task)))
        assert result.ok, result
        for host in fleet.hosts:
            assert result.hosts[host.name].warnings == ["no crictl in the bundle; crictl not installed"]
            assert [what for name, what, _ in said if name == host.name].count("warning") == 1
            assert result.hosts[host.name].changed == 0  # nothing placed: there is nothing to place
