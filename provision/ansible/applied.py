"""The no-op skip: has each host already got exactly what this prepare would apply?

The last play of prepare writes /var/lib/kubeprov/applied.json (role versions, hashes of every
placed file, binary and image, settings, and their fingerprint). Before starting Ansible, one
SSH command per host reads that record and checks that the services prepare leaves running
still run; when every host matches, Ansible is not started at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from provision.ansible.inventory import APPLIED_PATH, HostPlan
from provision.transport import Transport, fan_out


@dataclass(frozen=True)
class HostState:
    host: str
    current: bool
    reason: str  # why it is not current, in plain words ("" when current)


def services_for(plan: HostPlan) -> list[str]:
    services = []
    if "containerd" in plan.roles:
        services.append("containerd")
    if "etcd" in plan.roles:
        services.append("etcd")
    return services


def compare(plan: HostPlan, record: dict | None, services: dict[str, str]) -> HostState:
    """Is the host current? `record`: its applied-state record ({} when it has none, None when it
    is not JSON); `services`: systemd's ActiveState of each of services_for(plan)."""
    host = plan.host.name
    if record is None:
        return HostState(host, False, f"{APPLIED_PATH} is not valid JSON")
    if not record:
        return HostState(host, False, "never prepared")
    if record.get("fingerprint") != plan.fingerprint:
        changed = sorted(k for k in plan.applied if k != "fingerprint" and record.get(k) != plan.applied[k])
        return HostState(host, False, f"changed since the last prepare: {', '.join(changed) or 'fingerprint'}")
    for name in services_for(plan):
        state = services.get(name, "")
        if state != "active":
            return HostState(host, False, f"{name} is {state or 'not running'}")
    return HostState(host, True, "")


def read_record(text: bytes | None) -> dict | None:
    if not text:
        return {}
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def check(transport: Transport, plans: dict[str, HostPlan], parallel: int = 20) -> list[HostState]:
    """Each host's record and services, read in one round trip per host, all hosts at once."""
    def one(host) -> HostState:
        plan = plans[host.name]
        services = services_for(plan)
        probed = transport.probe(host, read=[APPLIED_PATH], units=services)
        return compare(plan, read_record(probed.contents[APPLIED_PATH]), {s: probed.units[s].active for s in services})

    outcomes = fan_out([plan.host for plan in plans.values()], one, parallel=parallel)
    return [o.value if o.ok else HostState(o.host, False, f"cannot read its state: {o.error_text}") for o in outcomes]
