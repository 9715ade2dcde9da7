"""The shape kubeadm gives every control-plane static Pod (cmd/kubeadm/app/util/staticpod):
hostNetwork, priorityClassName system-node-critical (priority 2000001000), seccomp
RuntimeDefault, labels component/tier, hostPath volumes sorted by name, and HTTP probes with
kubeadm's timings. The component renderers only say what differs: command, image, volumes,
probes, requests.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import PurePosixPath


from provision import yamltext
from provision.config.models import HostPathVolume
from provision.render.tree import File

MANIFESTS_DIR = PurePosixPath("/etc/kubernetes/manifests")
# kubeadm writes manifests 0600 (CIS 1.1.1/1.1.3/1.1.5/1.1.7: 600 or more restrictive).
MANIFEST_MODE = 0o600
SYSTEM_NODE_CRITICAL = 2000001000

# kubeadm's probe timings (staticpod.LivenessProbe / ReadinessProbe / StartupProbe): liveness
# waits one period, readiness starts at once and polls every second, startup allows the
# control-plane health-check timeout (4 min) = 24 periods of 10 s before the kubelet gives up.
HEALTH_CHECK_TIMEOUT_SECONDS = 240


@dataclass(frozen=True)
class Mount:
    """A hostPath volume and where the container sees it."""

    name: str
    host_path: str
    mount_path: str
    read_only: bool
    path_type: str = ""  # "" → no type check, as a hostPath without `type`

    def volume(self) -> dict:
        host_path = {"path": self.host_path}
        if self.path_type:
            host_path["type"] = self.path_type
        return {"hostPath": host_path, "name": self.name}

    def volume_mount(self) -> dict:
        mount = {"mountPath": self.mount_path, "name": self.name}
        if self.read_only:
            mount["readOnly"] = True
        return mount


def same_path(name: str, path: str, read_only: bool, path_type: str) -> Mount:
    return Mount(name, path, path, read_only, path_type)


def extra_mounts(extra: list[HostPathVolume]) -> list[Mount]:
    return [Mount(v.name, v.host_path, v.mount_path, v.read_only, v.path_type) for v in extra]


def by_name(*groups: list[Mount]) -> list[Mount]:
    """Mounts keyed by name, later groups replacing earlier ones (how kubeadm merges
    extraVolumes), sorted by name (how kubeadm writes them)."""
    found: dict[str, Mount] = {}
    for group in groups:
        for mount in group:
            found[mount.name] = mount
    return [found[name] for name in sorted(found)]


def http_get(host: str, path: str, port: int, scheme: str, *, initial_delay: int, timeout: int, failures: int, period: int) -> dict:
    action = {"path": path, "port": port, "scheme": scheme}
    if host:  # empty: the kubelet probes the pod IP (kubeadm does this for 0.0.0.0 / ::)
        action["host"] = host
    return {
        "failureThreshold": failures,
        "httpGet": action,
        "initialDelaySeconds": initial_delay,
        "periodSeconds": period,
        "timeoutSeconds": timeout,
    }


def liveness(host: str, path: str, port: int, scheme: str) -> dict:
    return http_get(host, path, port, scheme, initial_delay=10, timeout=15, failures=8, period=10)


def readiness(host: str, path: str, port: int, scheme: str) -> dict:
    return http_get(host, path, port, scheme, initial_delay=0, timeout=15, failures=3, period=1)


def startup(host: str, path: str, port: int, scheme: str) -> dict:
    """kubeadm's time budget (HEALTH_CHECK_TIMEOUT_SECONDS), checked every 2 s from the start where
    kubeadm checks every 10 s after a 10 s delay: a component is Ready about 10 s sooner after each
    (re)start, and liveness, which waits for startup to pass, is unchanged."""
    period = 2
    failures = -(-HEALTH_CHECK_TIMEOUT_SECONDS // period)  # ceil
    return http_get(host, path, port, scheme, initial_delay=0, timeout=15, failures=failures, period=period)


def probe_host(bind_address: str) -> str:
    """kubeadm probes a component on its bind address, except the unspecified one."""
    return "" if bind_address in ("0.0.0.0", "::") else bind_address


def loopback_for(address: str) -> str:
    """127.0.0.1, or ::1 when the host's address is IPv6 (kubeadm keeps one IP family)."""
    try:
        return "::1" if ipaddress.ip_address(address).version == 6 else "127.0.0.1"
    except ValueError:
        return "127.0.0.1"


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def component_pod(
    name: str,
    image: str,
    command: list[str],
    mounts: list[Mount],
    *,
    probes: dict[str, dict],
    requests: dict[str, str],
    annotations: dict[str, str] | None = None,
) -> dict:
    container = {
        "command": command,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "name": name,
        "resources": {"requests": requests},
        "volumeMounts": [m.volume_mount() for m in mounts],
        **probes,  # livenessProbe / readinessProbe / startupProbe
    }
    metadata = {"labels": {"component": name, "tier": "control-plane"}, "name": name, "namespace": "kube-system"}
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "containers": [container],
            "hostNetwork": True,
            "priority": SYSTEM_NODE_CRITICAL,
            "priorityClassName": "system-node-critical",
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "volumes": [m.volume() for m in mounts],
        },
    }


def manifest(pod: dict) -> File:
    """The pod as kubeadm writes it: YAML with keys sorted, mode 0600."""
    return File(yamltext.dump(pod, sort_keys=True).encode(), MANIFEST_MODE)


def manifest_path(name: str) -> PurePosixPath:
    return MANIFESTS_DIR / f"{name}.yaml"
