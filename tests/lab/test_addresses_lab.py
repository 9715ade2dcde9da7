"""provision/addresses.py on the lab's real hosts: a host known by a DNS name gets the IP kubeadm
would pick on it (its default route's source address), recorded once in the cluster directory
and used by every command afterwards. The e2e suite builds a whole cluster this way
(tests/e2e, topology worker-local-lb).
"""

from __future__ import annotations

import json

import pytest

from provision import addresses
from provision.config import load_cluster
from provision.errors import ConfigError, KubeprovError
from provision.transport.ssh import Transport
from testkit import run_cli

pytestmark = pytest.mark.lab


@pytest.fixture()
def named_cluster(lab, tmp_path):
    """The lab's cluster, with a cluster directory of this test's own."""
    return load_cluster(lab.cluster_file).model_copy(update={"cluster_dir": tmp_path / "cluster"})


def test_the_default_routes_source_address_is_learnt_and_recorded(named_cluster, lab):
    cluster = named_cluster
    host = cluster.hosts[0]
    with Transport() as transport:
        learnt = addresses.discover(transport, host)
        expected = transport.run(host, "ip -4 -o route get 192.0.2.1").stdout.split(" src ")[1].split()[0]
    assert learnt == expected == host.address  # a lab host's default route leaves through its LAN address

    # The same host known only by a name (reaching it by name is the e2e's part): no IP until the
    # record has one, then the record's.
    named = cluster.model_copy(update={"hosts": [h.model_copy(update={"address": f"{h.name}.lab.invalid"})
                                                 if h is host else h for h in cluster.hosts]})
    assert [h.name for h in addresses.named(named)] == [host.name]
    with pytest.raises(ConfigError, match=f"host {host.name} is known only by the name"):
        addresses.require(named)
    record = addresses.record_path(named)
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({host.name: learnt}))
    resolved = addresses.with_recorded(named)
    addresses.require(resolved)
    assert resolved.hosts[0].advertise_address == learnt and resolved.hosts[0].address == f"{host.name}.lab.invalid"


def test_a_host_without_a_default_route_is_one_line_naming_it(named_cluster):
    host = named_cluster.hosts[1]
    with Transport() as transport:
        routes = transport.run(host, "ip -4 route show default").stdout.strip()
        transport.run(host, "ip -4 route del default")
        try:
            with pytest.raises(KubeprovError) as caught:
                addresses.discover(transport, host)
        finally:
            transport.run(host, f"ip -4 route add {routes}")
    assert str(caught.value).startswith(f"{host.name}: cannot learn its IP") and "internalAddress" in str(caught.value)


def test_commands_that_write_addresses_refuse_a_host_with_no_ip_yet(lab, tmp_path):
    doc = lab.cluster_file.read_text().replace(f"address: {lab.hosts[0].address}", "address: cp.example.invalid", 1)
    config = tmp_path / "cluster.yaml"
    config.write_text(doc + f"clusterDir: {tmp_path / 'cluster'}\n")
    code, out, err = run_cli("certs", "generate", "-c", config)
    assert code == 2, out + err
    assert err.strip().splitlines() == [
        f"error: host {lab.hosts[0].name} is known only by the name 'cp.example.invalid': `kubeprov up` learns its IP "
        "on the host (its default route's address), or set internalAddress"]
    assert not (tmp_path / "cluster" / "pki").exists()
