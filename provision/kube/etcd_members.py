"""Stacked etcd's membership and health, asked of a member on its own host.

Why not `kubectl exec etcd-<host> -- etcdctl`: that needs the member's mirror pod, and a kubelet
whose static pods started while the API endpoint was unreachable (a VIP held by a static-pod
keepalived) may not create mirror pods until it restarts. Control planes have no etcdctl of their
own (it lives in etcd's image). So kubeprov talks to etcd's JSON gateway (/v3/cluster/member/…,
etcd ≥ 3.4) on the member's loopback client URL with the healthcheck client certificate, through a
few lines of python3 on the host (Ansible needs python3 there anyway), and reads health from the
member's plain-HTTP metrics listener, as the kubelet's probe does (bash's /dev/tcp: nothing to start).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential

from provision.config.models import Host
from provision.errors import KubeprovError
from provision.render import staticpod
from provision.render.etcd import CLIENT_PORT, ETCD_PKI, METRICS_PORT
from provision.transport import remote

# Runs on the host: POST a JSON body to etcd's gateway, print the answer; exit 3 on an HTTP error.
_GATEWAY = """\
import ssl, sys, urllib.error, urllib.request
url, pki, body = sys.argv[1:4]
tls = ssl.create_default_context(cafile=pki + "/ca.crt")
tls.load_cert_chain(pki + "/healthcheck-client.crt", pki + "/healthcheck-client.key")
request = urllib.request.Request(url, data=body.encode(), method="POST", headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(request, context=tls, timeout=10) as answer:
        sys.stdout.write(answer.read().decode())
except urllib.error.HTTPError as error:
    sys.stdout.write(error.read().decode())
    sys.exit(3)
"""


@dataclass(frozen=True)
class Member:
    id: str
    name: str  # empty until the added member has started
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    learner: bool = False


class EtcdRefused(KubeprovError):
    """etcd answered with an error (e.g. "etcdserver: unhealthy cluster")."""


def _loopback(host: Host) -> str:
    return staticpod.join_host_port(staticpod.loopback_for(host.advertise_address), CLIENT_PORT)


def _call(transport, host: Host, path: str, body: dict) -> dict:
    url = f"https://{_loopback(host)}{path}"
    command = shlex.join(["python3", "-", url, str(ETCD_PKI), json.dumps(body)])
    result = transport.run(host, command, stdin=_GATEWAY.encode(), timeout=30)
    try:
        answer = json.loads(result.stdout) if result.stdout.strip() else {}
    except ValueError:
        raise KubeprovError(f"{host.name}: etcd's answer to {path} is not JSON: {result.stdout.strip()[:120]!r}") from None
    if result.exit_code == 3:
        raise EtcdRefused(f"{host.name}: etcd refused {path}: {answer.get('error') or answer.get('message') or answer}")
    if not result.ok:
        raise KubeprovError(f"{host.name}: cannot reach etcd at {url} (exit {result.exit_code}): {result.summary()}")
    return answer


def members(transport, host: Host) -> list[Member]:
    """The cluster's members, as the member on `host` sees them."""
    answer = _call(transport, host, "/v3/cluster/member/list", {})
    return [Member(str(m.get("ID", "")), m.get("name", ""), tuple(m.get("peerURLs") or ()), tuple(m.get("clientURLs") or ()),
                   bool(m.get("isLearner")))
            for m in answer.get("members") or []]


# How often a refused reconfiguration is asked again: each ask is one SSH command (~0.1 s), and a
# join waits for it, so a short, nearly flat backoff (0.25, 0.5, then every 1 s) ends within a
# second of etcd's 5 s settling window or a learner catching up, where 1, 2, 4 s overshot by seconds.
SETTLE_WAIT = wait_exponential(multiplier=0.25, min=0.25, max=1)


def _settling(error: BaseException) -> bool:
    # etcd refuses a reconfiguration until the last member to join has been connected for 5 s.
    return isinstance(error, EtcdRefused) and "unhealthy cluster" in str(error)


@retry(retry=retry_if_exception(_settling), stop=stop_after_delay(60), wait=SETTLE_WAIT, reraise=True)
def add_learner(transport, host: Host, peer_url: str) -> str:
    """`member add --learner` through the member on `host`; its member ID. A learner takes no part
    in quorum, so the cluster keeps its majority while the new member starts and catches up
    (adding a voting member to a one-member cluster would need both up at once)."""
    answer = _call(transport, host, "/v3/cluster/member/add", {"peerURLs": [peer_url], "isLearner": True})
    return str((answer.get("member") or {}).get("ID", ""))


def _catching_up(error: BaseException) -> bool:
    # "can only promote a learner member which is in sync with leader", or the cluster settling.
    return isinstance(error, EtcdRefused) and any(
        text in str(error) for text in ("in sync with leader", "not ready", "unhealthy cluster"))


@retry(retry=retry_if_exception(_catching_up), stop=stop_after_delay(180), wait=SETTLE_WAIT, reraise=True)
def promote(transport, host: Host, member_id: str) -> None:
    """Make a learner a voting member, once it has caught up with the leader."""
    _call(transport, host, "/v3/cluster/member/promote", {"ID": member_id})


def hand_over_leadership(transport, host: Host) -> str | None:
    """When the member on `host` leads, hand leadership to another voting member before it stops
    (etcd's MoveLeader, asked of the leader itself): a leader that just stops leaves the cluster
    leaderless for an election timeout, long enough for every API server's /readyz etcd check to
    fail at once. The new leader's name, or None when `host` does not lead or leads alone."""
    status = _call(transport, host, "/v3/maintenance/status", {})
    me = str((status.get("header") or {}).get("member_id", ""))
    if not me or str(status.get("leader", "")) != me:
        return None
    others = [m for m in members(transport, host) if m.id != me and not m.learner and m.name]
    if not others:
        return None
    _call(transport, host, "/v3/maintenance/transfer-leadership", {"targetID": others[0].id})
    return others[0].name


def healthy(transport, host: Host) -> tuple[bool, str]:
    """(healthy, what it said): the member's own /health on its loopback metrics listener."""
    address = staticpod.loopback_for(host.advertise_address)
    result = transport.run(host, remote.http_get(address, METRICS_PORT, "/health"), timeout=30)
    status, body = remote.http_answer(result.stdout)
    said = body.strip() or result.summary() or f"no answer on {address}:{METRICS_PORT}"
    try:
        return status == 200 and json.loads(body).get("health") == "true", said
    except ValueError:
        return False, said


@retry(retry=retry_if_exception(_settling), stop=stop_after_delay(60), wait=SETTLE_WAIT, reraise=True)
def remove(transport, host: Host, member_id: str) -> None:
    """`member remove` through the member on `host` (never the member being removed: a member
    that removes itself stops before it can answer). etcd refuses it while the cluster settles
    ("unhealthy cluster"), retried here, and when the members left would lack a quorum of started
    members, which provision/day2/reset.py checks first so the operator reads why."""
    _call(transport, host, "/v3/cluster/member/remove", {"ID": member_id})


def wait_healthy(transport, hosts: list[Host], *, timeout: float, parallel: int,
                 on_healthy=lambda name, seconds: None) -> tuple[str, str] | None:
    """Ask every member's own /health at once, again each second, until all answer healthy or
    `timeout` passes; on_healthy(host, seconds) as each does. None when all did, else (the first
    host still unhealthy, what it said) for the caller's error line."""
    import time

    from provision.transport import fan_out

    started = time.monotonic()
    waiting = list(hosts)
    while True:
        outcomes = fan_out(waiting, lambda h: healthy(transport, h), parallel=parallel)
        said = {o.host: (o.value[1] if o.ok else o.error_text) for o in outcomes if not (o.ok and o.value[0])}
        for h in waiting:
            if h.name not in said:
                on_healthy(h.name, time.monotonic() - started)
        waiting = [h for h in waiting if h.name in said]
        if not waiting:
            return None
        if time.monotonic() - started > timeout:
            return waiting[0].name, said[waiting[0].name]
        time.sleep(1)
