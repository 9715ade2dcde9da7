"""Preflight: what stops a host from taking its roles, looked at before anything changes.

One source of what is checked where: parameters() gives each host its ports (by role), kernel
modules and kubeadm's minimums. Two ways to run the same check, the preflight role's module
(playbooks/roles/preflight/library/kubeprov_preflight.py): `kubeprov prepare` runs it in its
Ansible play (the inventory carries these parameters as `kubeprov_preflight`); `up`'s preflight
phase sends the module's file through the SSH transport to every host at once, one command each
(a playbook run costs seconds of Ansible start-up more).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from importlib import resources

from provision.config.models import Cluster, EtcdTopology, Host, Role

MODULE = resources.files("provision.playbooks") / "roles" / "preflight" / "library" / "kubeprov_preflight.py"
# kubeadm's preflight numbers: a control plane needs 2 CPUs and 1700 MB.
CONTROL_PLANE_MIN_CPUS = 2
CONTROL_PLANE_MIN_MEMORY_MB = 1700
MIN_MEMORY_MB = 512
KUBELET_MODULES = ("overlay", "br_netfilter")


def parameters(cluster: Cluster, host: Host, *, swapoff: bool = False) -> dict:
    """The module's parameters for `host`: the ports its roles need free (each with the process
    allowed to hold it: ours, on a re-run), modules where a kubelet runs, the minimums."""
    control_plane = host.has(Role.CONTROL_PLANE)
    kubelet = control_plane or host.has(Role.WORKER)
    ports = {}
    if control_plane:
        ports |= {str(cluster.api_server_port): "kube-apiserver", "10257": "kube-controller-manager", "10259": "kube-scheduler"}
    if kubelet:
        ports["10250"] = "kubelet"
    if host.has(Role.ETCD) or (control_plane and cluster.etcd.topology is EtcdTopology.STACKED):
        ports |= {"2379": "etcd", "2380": "etcd"}
    return {"ports": ports, "modules": list(KUBELET_MODULES) if kubelet else [],
            "min_memory_mb": CONTROL_PLANE_MIN_MEMORY_MB if control_plane else MIN_MEMORY_MB,
            "min_cpus": CONTROL_PLANE_MIN_CPUS if control_plane else 1, "swapoff": swapoff}


@dataclass(frozen=True)
class Verdict:
    host: str
    problems: list[str]
    notes: list[str]  # warnings: said, not fatal


def command(params: dict) -> str:
    """The module run as a plain python3 program on the host (it prints its answer as JSON)."""
    return shlex.join(["env", "KUBEPROV_PREFLIGHT=json", "python3", "-c", MODULE.read_text(), json.dumps(params)])


def check(transport, cluster: Cluster, hosts: list[Host], *, swapoff: bool, parallel: int) -> list[Verdict]:
    from provision.transport import fan_out

    def one(host: Host) -> Verdict:
        result = transport.run(host, command(parameters(cluster, host, swapoff=swapoff)), timeout=60)
        if not result.ok:
            return Verdict(host.name, [f"the preflight check could not run (exit {result.exit_code}): {result.summary()}"], [])
        answer = result.json("the preflight check")
        return Verdict(host.name, answer["problems"], answer["notes"])

    outcomes = fan_out(hosts, one, parallel=parallel)
    return [o.value if o.ok else Verdict(o.host, [o.error_text], []) for o in outcomes]
