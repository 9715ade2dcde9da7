"""Kubernetes' version skew policy, and kubeadm's rules for an upgrade, as checks.

The policy (kubernetes.io/releases/version-skew-policy), for the components kubeprov runs:
- kube-apiserver: in an HA control plane, the newest and oldest differ by at most one minor;
- kube-controller-manager, kube-scheduler: not newer than the oldest API server, at most one minor older;
- kubelet, kube-proxy: not newer than the oldest API server, at most three minors older;
- kubectl: within one minor of the API servers, older or newer.
kubeadm's upgrade rules on top: the control plane moves one minor at a time and never down a
minor (a patch downgrade within the minor is allowed), and etcd moves to the target minor's etcd
(cmd/kubeadm/app/constants SupportedEtcdVersion, provision/versions.py) but never down.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from provision.config.models import parse_version
from provision.versions import DEFAULTS

Version = tuple[int, int, int]


def version(text: str) -> Version:
    return parse_version(text if text.startswith("v") else f"v{text}")


def shown(v: Version) -> str:
    return f"v{v[0]}.{v[1]}.{v[2]}"


@dataclass(frozen=True)
class Running:
    """The versions a cluster runs now, per host (from its Nodes and static pods)."""

    apiservers: dict[str, Version]
    kubelets: dict[str, Version]
    controller_managers: dict[str, Version] = field(default_factory=dict)
    schedulers: dict[str, Version] = field(default_factory=dict)
    kube_proxies: dict[str, Version] = field(default_factory=dict)
    etcd: str | None = None  # the etcd image tag the control planes run (stacked), e.g. "3.5.15-0"


def skew_problems(running: Running, *, kubectl: Version | None = None) -> list[str]:
    """Where a running cluster breaks the skew policy, one line each (none: it is within policy)."""
    problems = []
    if not running.apiservers:
        return ["no API server version is known"]
    newest, oldest = max(running.apiservers.values()), min(running.apiservers.values())
    if newest[1] - oldest[1] > 1:
        problems.append(f"API servers {shown(oldest)} and {shown(newest)} are more than one minor apart")
    for what, versions, older in (("kube-controller-manager", running.controller_managers, 1),
                                  ("kube-scheduler", running.schedulers, 1),
                                  ("kubelet", running.kubelets, 3), ("kube-proxy", running.kube_proxies, 3)):
        for host, v in sorted(versions.items()):
            if v[:2] > oldest[:2]:
                problems.append(f"{what} on {host} is {shown(v)}, newer than the oldest API server ({shown(oldest)})")
            elif oldest[1] - v[1] > older:
                problems.append(f"{what} on {host} is {shown(v)}, more than {older} minor{'s' if older > 1 else ''} "
                                f"older than the API server ({shown(oldest)})")
    if kubectl is not None and (abs(kubectl[1] - oldest[1]) > 1 or abs(kubectl[1] - newest[1]) > 1):
        problems.append(f"kubectl {shown(kubectl)} is more than one minor from the API servers")
    return problems


def upgrade_problems(running: Running, target: Version) -> list[str]:
    """Why the cluster cannot go to `target` in one `upgrade apply` (none: it can)."""
    if target[1] not in DEFAULTS:
        return [f"{shown(target)} is not a version kubeprov supports (v1.{min(DEFAULTS)} … v1.{max(DEFAULTS)})"]
    if not running.apiservers:
        return ["no API server version is known"]
    newest, oldest = max(running.apiservers.values()), min(running.apiservers.values())
    problems = []
    if target[1] < newest[1]:
        problems.append(f"{shown(target)} is a minor below the API servers ({shown(newest)}): minors are never downgraded")
    if target[1] - oldest[1] > 1:
        problems.append(f"{shown(target)} skips a minor: the control plane moves one minor at a time "
                        f"(from {shown(oldest)}: v1.{oldest[1] + 1} first)")
    # After the control plane moves, every kubelet must be at most three minors older than it.
    for host, v in sorted(running.kubelets.items()):
        if v[:2] > target[:2]:
            problems.append(f"the kubelet on {host} ({shown(v)}) is newer than {shown(target)}")
        elif target[1] - v[1] > 3:
            problems.append(f"the kubelet on {host} ({shown(v)}) would be more than three minors older than "
                            f"{shown(target)}: upgrade it first")
    return problems


def etcd_target(running_etcd: str | None, target: Version) -> str:
    """The etcd image tag after the upgrade: the target minor's, unless the running one is newer."""
    wanted = DEFAULTS[target[1]].etcd
    if running_etcd and _etcd_key(running_etcd) > _etcd_key(wanted):
        return running_etcd
    return wanted


def _etcd_key(tag: str) -> tuple[int, ...]:
    numbers, _, build = tag.partition("-")
    return (*(int(part) for part in numbers.split(".")), int(build or 0))
