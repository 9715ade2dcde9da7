"""The SSH transport against the lab's real systemd hosts (issue 4's proof on a 3-host lab).

tests/test_transport.py covers the same behaviour against sshd daemons on loopback; this module
shows it holds on hosts that boot like machines: their own systemd, network namespace and keys.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from provision.config import load_cluster
from provision.retries import Backoff
from provision.transport.errors import HostKeyError, UnreachableError
from provision.transport.fanout import fan_out
from provision.transport.ssh import Options, Transport

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def cluster(lab):
    return load_cluster(lab.cluster_file)


def _with_known_hosts(host, path: Path):
    return host.model_copy(update={"ssh": host.ssh.model_copy(update={"known_hosts": path})})


def test_each_host_is_its_own_machine(cluster):
    with Transport() as transport:
        outcomes = fan_out(
            cluster.hosts,
            lambda h: transport.run(h, "hostname; cat /etc/machine-id; ip -4 -o addr show eth0; systemctl is-system-running").stdout,
        )
    assert all(o.ok for o in outcomes), [o.error_text for o in outcomes]
    facts = {o.host: o.value.split("\n") for o in outcomes}
    assert [lines[0] for lines in facts.values()] == [h.name for h in cluster.hosts]
    assert len({lines[1] for lines in facts.values()}) == len(cluster.hosts), "machine-ids must differ"
    for host in cluster.hosts:
        assert f"inet {host.address}/" in facts[host.name][2]
        assert facts[host.name][3] == "running"


def test_unknown_host_key_is_refused_naming_the_host(cluster, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    host = _with_known_hosts(cluster.hosts[0], empty)
    with Transport() as transport, pytest.raises(HostKeyError) as caught:
        transport.run(host, "true")
    assert host.name in str(caught.value) and str(empty) in str(caught.value)
    assert empty.read_text() == "", "strict checking must not record the key"


def test_changed_host_key_is_refused(cluster, lab, tmp_path):
    """Give host 1's address host 2's key: what a reinstalled or impersonated machine looks like."""
    first, second = cluster.hosts[0], cluster.hosts[1]
    lines = Path(lab.known_hosts).read_text().splitlines()
    second_key = next(line.split(None, 1)[1] for line in lines if second.address in line.split(None, 1)[0].split(","))
    forged = tmp_path / "known_hosts"
    forged.write_text(f"{first.address} {second_key}\n")
    with Transport() as transport, pytest.raises(HostKeyError) as caught:
        transport.run(_with_known_hosts(first, forged), "true")
    assert "CHANGED" in str(caught.value) and first.name in str(caught.value)


def test_put_if_different_writes_once(cluster):
    host = cluster.hosts[0]
    path = "/etc/kubeprov-transport-test.conf"
    with Transport() as transport:
        transport.run(host, f"rm -f {path}")
        assert transport.put_if_different(host, path, b"one\n", 0o640) is True
        before = transport.run(host, f"stat -c '%Y.%Z %i %a' {path}").stdout
        assert transport.put_if_different(host, path, b"one\n", 0o640) is False
        assert transport.run(host, f"stat -c '%Y.%Z %i %a' {path}").stdout == before
        assert before.split()[2] == "640"
        assert transport.put_if_different(host, path, b"two\n", 0o640) is True
        assert transport.read_file(host, path) == b"two\n"
        backup = transport.run(host, f"cat {transport.backup_dir}{path}")
        assert backup.ok and backup.stdout == "one\n", "the replaced content is kept"
        transport.run(host, f"rm -f {path}; rm -rf {transport.backup_dir}")


def test_one_failing_host_does_not_hide_the_others(cluster):
    failing = cluster.hosts[1].name
    command = f'if [ "$(hostname)" = {failing} ]; then echo broken >&2; exit 7; fi; echo fine'
    with Transport() as transport:
        outcomes = fan_out(cluster.hosts, lambda h: transport.run(h, command))
    results = {o.host: o.value for o in outcomes}
    assert results[failing].exit_code == 7 and results[failing].stderr.strip() == "broken"
    for name, result in results.items():
        if name != failing:
            assert result.ok and result.stdout.strip() == "fine"


def test_a_host_that_is_down_times_out_naming_it(cluster):
    """An address on the lab bridge that no host holds: nothing answers ARP, so SYNs go nowhere."""
    network = ipaddress.ip_network(f"{cluster.hosts[0].address}/24", strict=False)
    taken = {h.address for h in cluster.hosts}
    silent = next(str(a) for a in reversed(list(network.hosts())) if str(a) not in taken and not str(a).endswith((".1", ".254")))
    ghost = cluster.hosts[0].model_copy(update={"name": "ghost", "address": silent})
    said = []
    options = Options(connect_timeout=2.0, connect_backoff=Backoff(attempts=2, first=0.1))
    with Transport(options, on_retry=lambda *line: said.append(line)) as transport:
        outcomes = fan_out([cluster.hosts[0], ghost], lambda h: transport.run(h, "true"))
    assert outcomes[0].ok
    assert isinstance(outcomes[1].error, UnreachableError)
    assert "ghost" in str(outcomes[1].error) and "(gave up after 2 attempts)" in str(outcomes[1].error)
    assert outcomes[1].duration < 10  # two attempts of 2 s and the wait between them
    assert [host for host, _ in said] == ["ghost"] and said[0][1].startswith("retry 1/1 in 0.1s: ")
