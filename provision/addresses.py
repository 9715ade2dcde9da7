"""The IP of a host the cluster file knows only by a DNS name.

Kubernetes needs IPs where kubeprov writes a host's address: the API server's advertise address,
etcd's URLs, the kubelet's node IP, certificates' IP SANs, the bridge CNI's routes. A host given
as `address: cp1.example.com` with no `internalAddress` gets the address kubeadm would pick on it:
the source address of its default route (`ip route get`, which sends nothing), IPv4 first, else
IPv6. `up` learns it in its first phase and records it in the cluster directory
(addresses.json), and every command that loads the cluster uses the record from then on; the
name stays what SSH connects to and an extra certificate SAN.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from provision.config.models import Cluster, Host, is_ip
from provision.errors import ConfigError, KubeprovError
from provision.fsutil import atomic_write

RECORD = "addresses.json"

# Any address outside the host's own networks: the route lookup answers with the default route.
PROBES = (("-4", "192.0.2.1"), ("-6", "2001:db8::1"))  # TEST-NET-1 and the documentation prefix


def named(cluster: Cluster) -> list[Host]:
    """Hosts whose cluster address is a name, not an IP."""
    return [h for h in cluster.hosts if not is_ip(h.advertise_address)]


def record_path(cluster: Cluster) -> Path:
    return cluster.directory / RECORD


def recorded(cluster: Cluster) -> dict[str, str]:
    path = record_path(cluster)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise ConfigError(f"not JSON ({exc}); delete it and `kubeprov up` learns the addresses again", source=str(path)) from None
    if not isinstance(data, dict) or not all(isinstance(v, str) and is_ip(v) for v in data.values()):
        raise ConfigError("expected {host: IP}; delete it and `kubeprov up` learns the addresses again", source=str(path))
    return data


def with_addresses(cluster: Cluster, addresses: dict[str, str]) -> Cluster:
    """`cluster` with each named host's learnt IP as its internal address, validated again: the
    rules that need a host's IP (the bridge CNI's routes, the address family) apply to it now."""
    from pydantic import ValidationError

    from provision.config.loader import _first_error

    hosts = [h.model_copy(update={"internal_address": addresses[h.name]})
             if h.internal_address is None and not is_ip(h.address) and h.name in addresses else h for h in cluster.hosts]
    if hosts == cluster.hosts:
        return cluster
    data = cluster.model_copy(update={"hosts": hosts}).model_dump(mode="json", by_alias=True)
    try:
        return Cluster.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc, f"{record_path(cluster)} (IPs learnt for hosts known by name)", data) from None


def with_recorded(cluster: Cluster) -> Cluster:
    return with_addresses(cluster, recorded(cluster)) if named(cluster) else cluster


def require(cluster: Cluster) -> None:
    """Refuse a command that writes addresses while a host has no IP yet."""
    for host in named(cluster):
        raise ConfigError(
            f"host {host.name} is known only by the name {host.address!r}: `kubeprov up` learns its IP on the host "
            "(its default route's address), or set internalAddress"
        )


def route_source(output: str) -> str | None:
    """The `prefsrc` of `ip -j route get` output, when it is a usable unicast address."""
    try:
        routes = json.loads(output or "[]")
    except ValueError:
        return None
    for route in routes if isinstance(routes, list) else []:
        source = route.get("prefsrc") if isinstance(route, dict) else None
        if source and is_ip(source):
            ip = ipaddress.ip_address(source)
            if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast):
                return source
    return None


def discover(transport, host: Host) -> str:
    """The source address of `host`'s default route, asked on the host over `transport`."""
    command = "; ".join(f"echo; ip -j {family} route get {probe} 2>/dev/null" for family, probe in PROBES)
    result = transport.run(host, command, timeout=30)
    for output in result.stdout.split("\n\n"):
        found = route_source(output.strip())
        if found:
            return found
    raise KubeprovError(
        f"{host.name}: cannot learn its IP (no default route with a usable source address on the host); "
        "set internalAddress in the cluster file"
    )


def learn(transport, cluster: Cluster, *, parallel: int = 10, record: bool = True) -> tuple[dict[str, str], list[str]]:
    """Discover every named host's IP not recorded yet, record them (0644, atomically; not when
    `record` is False, as in a dry run); ({host: IP} for every named host, the hosts learnt now)."""
    from provision.transport import fan_out

    known = recorded(cluster)
    missing = [h for h in named(cluster) if h.name not in known]
    outcomes = fan_out(missing, lambda h: discover(transport, h), parallel=parallel)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise KubeprovError("; ".join(o.error_text for o in failed))
    known.update({o.host: o.value for o in outcomes})
    if outcomes and record:
        path = record_path(cluster)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, (json.dumps(known, indent=1, sort_keys=True) + "\n").encode(), 0o644, replace=True)
    return {h.name: known[h.name] for h in named(cluster)}, [o.host for o in outcomes]
