"""The no-op skip: has each host already got exactly what this prepare would apply?

The last play of prepare writes /var/lib/kubeprov/applied.json (role versions, hashes of every
placed file, binary and image, settings, and their fingerprint). Before starting Ansible, one
SSH command per host reads that record and checks that the services prepare leaves running
still run; when every host matches, Ansible is not started at all.
"""

from __future__ import annotations

import json
import shlex
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


def _probe(plan: HostPlan) -> str:
    services = " ".join(shlex.quote(s) for s in services_for(plan))
    return (
        f"cat {shlex.quote(APPLIED_PATH)} 2>/dev/null || echo '{{}}'; echo; echo '--- services'; "
        f"for s in {services}; do printf '%s %s\\n' \"$s\" \"$(systemctl is-active \"$s\" 2>/dev/null)\"; done"
    )


def check(transport: Transport, plans: dict[str, HostPlan], parallel: int = 20) -> list[HostState]:
    def one(host) -> HostState:
        plan = plans[host.name]
        result = transport.run(host, _probe(plan))
        record_text, _, services_text = result.stdout.partition("--- services")
        try:
            record = json.loads(record_text.strip() or "{}")
        except ValueError:
            return HostState(host.name, False, f"{APPLIED_PATH} is not valid JSON")
        if not record:
            return HostState(host.name, False, "never prepared")
        if record.get("fingerprint") != plan.fingerprint:
            changed = sorted(k for k in plan.applied if k != "fingerprint" and record.get(k) != plan.applied[k])
            return HostState(host.name, False, f"changed since the last prepare: {', '.join(changed) or 'fingerprint'}")
        for line in services_text.strip().splitlines():
            name, _, state = line.partition(" ")
            if state != "active":
                return HostState(host.name, False, f"{name} is {state or 'not running'}")
        return HostState(host.name, True, "")

    outcomes = fan_out([plan.host for plan in plans.values()], one, parallel=parallel)
    return [o.value if o.ok else HostState(o.host, False, f"cannot read its state: {o.error_text}") for o in outcomes]
