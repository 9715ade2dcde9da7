"""etcd for the cluster: a static Pod on each control plane (stacked, as kubeadm's
phases/etcd/local.go writes it) or a systemd unit plus environment file on each etcd host
(external). Both run etcd with the same flags: TLS for clients and peers with client
certificates required on both, metrics and health on plain HTTP bound to loopback only.

What moved between Kubernetes 1.28 and 1.35 (each kubeadm decides it from the etcd it deploys):
- probes: etcd ≥ 3.5.11 serves /livez and /readyz; kubeadm ≥ 1.31 probes those (liveness
  /livez, readiness and startup /readyz), older kubeadm probes /health with query options;
- corruption check and watch progress: etcd 3.6 turned --experimental-initial-corrupt-check
  into the InitialCorruptCheck feature gate and dropped the experimental- prefix of
  --watch-progress-notify-interval; kubeadm passes the 3.6 spellings when its etcd is ≥ 3.6.0.

Membership: external members start together, so each gets every member in --initial-cluster.
Stacked members join one at a time, as kubeadm's join does: the n-th control plane (host order)
is `member add`-ed to the running cluster and starts with --initial-cluster-state=existing and the
members up to itself. That is what kubeprov renders for it, and keeps: once its data dir exists
etcd ignores every --initial-* flag, so the manifest never has to change (and etcd never restart)
after the join.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from urllib.parse import urlsplit

from provision.config.models import Cluster, EtcdTopology, Host
from provision.pki.store import Material
from provision.render import flags, staticpod
from provision.render.staticpod import same_path
from provision.render.templates import render_template
from provision.render.tree import File, Tree
from provision.versions import defaults

CLIENT_PORT, PEER_PORT, METRICS_PORT = 2379, 2380, 2381
ETCD_PKI = PurePosixPath("/etc/kubernetes/pki/etcd")
UNIT_PATH = PurePosixPath("/etc/systemd/system/etcd.service")
ENV_PATH = PurePosixPath("/etc/etcd/etcd.env")
ETCD_BINARY = "/usr/bin/etcd"  # Debian's etcd-server; a release tarball installs elsewhere


def _url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://{staticpod.join_host_port(host, port)}"


def client_url(host: str, port: int = CLIENT_PORT) -> str:
    return _url("https", host, port)


def peer_url(host: str) -> str:
    return _url("https", host, PEER_PORT)


def etcd_version(cluster: Cluster) -> tuple[int, int, int]:
    """The etcd kubeadm deploys for this Kubernetes minor, e.g. (3, 5, 15) from '3.5.15-0'."""
    tag = defaults(cluster.minor).etcd.split("-")[0]
    major, minor, patch = (int(part) for part in tag.split("."))
    return major, minor, patch


def etcd_flags(cluster: Cluster, host: Host) -> dict[str, str]:
    """kubeadm's etcd flags for `host`, before etcd.extraArgs."""
    address = host.advertise_address
    loopback = staticpod.loopback_for(address)
    members = cluster.etcd_members
    if cluster.etcd.topology is EtcdTopology.STACKED:
        members = members[: [m.name for m in members].index(host.name) + 1]  # those before it, and itself
    base = {
        "name": host.name,
        "advertise-client-urls": client_url(address),
        "listen-client-urls": f"{client_url(loopback)},{client_url(address)}",
        "listen-peer-urls": peer_url(address),
        "initial-advertise-peer-urls": peer_url(address),
        "initial-cluster": ",".join(f"{m.name}={peer_url(m.advertise_address)}" for m in members),
        "data-dir": cluster.etcd.data_dir,
        "cert-file": str(ETCD_PKI / "server.crt"),
        "key-file": str(ETCD_PKI / "server.key"),
        "trusted-ca-file": str(ETCD_PKI / "ca.crt"),
        "client-cert-auth": "true",
        "peer-cert-file": str(ETCD_PKI / "peer.crt"),
        "peer-key-file": str(ETCD_PKI / "peer.key"),
        "peer-trusted-ca-file": str(ETCD_PKI / "ca.crt"),
        "peer-client-cert-auth": "true",
        "snapshot-count": "10000",
        "listen-metrics-urls": _url("http", loopback, METRICS_PORT),
    }
    if len(members) > 1 and cluster.etcd.topology is EtcdTopology.STACKED:
        base["initial-cluster-state"] = "existing"  # a joining member; the first one forms the cluster ("new")
    if etcd_version(cluster) >= (3, 6, 0):
        base["feature-gates"] = "InitialCorruptCheck=true"
        base["watch-progress-notify-interval"] = "5s"
    else:
        base["experimental-initial-corrupt-check"] = "true"
        base["experimental-watch-progress-notify-interval"] = "5s"
    return base


def final_flags(cluster: Cluster, host: Host) -> dict[str, str]:
    return flags.merge_flags(etcd_flags(cluster, host), cluster.etcd.extra_args)


def _probe_endpoint(cluster: Cluster, host: Host) -> tuple[str, int, str]:
    """Where the kubelet probes etcd: the first metrics URL (kubeadm's GetEtcdProbeEndpoint)."""
    loopback = staticpod.loopback_for(host.advertise_address)
    first = final_flags(cluster, host)["listen-metrics-urls"].split(",")[0]
    parts = urlsplit(first)
    scheme = "HTTPS" if parts.scheme == "https" else "HTTP"
    return parts.hostname or loopback, parts.port or METRICS_PORT, scheme


def etcd_pod(cluster: Cluster, host: Host) -> dict:
    probe_host, port, scheme = _probe_endpoint(cluster, host)
    if cluster.minor >= 31:
        probes = {
            "livenessProbe": staticpod.liveness(probe_host, "/livez", port, scheme),
            "readinessProbe": staticpod.readiness(probe_host, "/readyz", port, scheme),
            "startupProbe": staticpod.startup(probe_host, "/readyz", port, scheme),
        }
    else:
        probes = {
            # NOSPACE excluded: a full member still serves reads and deletes, restarting it helps nobody.
            "livenessProbe": staticpod.liveness(probe_host, "/health?exclude=NOSPACE&serializable=true", port, scheme),
            "startupProbe": staticpod.startup(probe_host, "/health?serializable=false", port, scheme),
        }
    mounts = staticpod.by_name(
        [
            same_path("etcd-data", cluster.etcd.data_dir, False, "DirectoryOrCreate"),
            same_path("etcd-certs", str(ETCD_PKI), False, "DirectoryOrCreate"),
        ]
    )
    pod = staticpod.component_pod(
        "etcd",
        f"{cluster.image_repository}/etcd:{defaults(cluster.minor).etcd}",
        flags.command("etcd", etcd_flags(cluster, host), cluster.etcd.extra_args),
        mounts,
        probes=probes,
        requests={"cpu": "100m", "memory": "100Mi"},
        annotations={"kubeadm.kubernetes.io/etcd.advertise-client-urls": client_url(host.advertise_address)},
    )
    return pod


def etcd_unit() -> bytes:
    """The systemd unit of an external etcd member; every setting is in the environment file,
    which etcd reads as ETCD_<FLAG> variables."""
    return render_template("systemd/etcd.service.j2", env_path=ENV_PATH, etcd_binary=ETCD_BINARY)


def etcd_env(cluster: Cluster, host: Host) -> bytes:
    # The model (config/models.py: Etcd, Host) keeps every value fit for the file; to_env_file's
    # own check is then an invariant.
    text = flags.to_env_file(final_flags(cluster, host))
    return f"# Rendered by kubeprov: the flags of etcd member {host.name}, as etcd's ETCD_* variables.\n{text}".encode()


def render_etcd(cluster: Cluster, host: Host, material: Material) -> Tree:
    if host.name not in {member.name for member in cluster.etcd_members}:
        return {}
    if cluster.etcd.topology is EtcdTopology.STACKED:
        return {staticpod.manifest_path("etcd"): staticpod.manifest(etcd_pod(cluster, host))}
    return {UNIT_PATH: File(etcd_unit(), 0o644), ENV_PATH: File(etcd_env(cluster, host), 0o644)}
