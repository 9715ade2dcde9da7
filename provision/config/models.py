"""The cluster, as pydantic models of the cluster file (apiVersion kubeprov.io/v1alpha1, kind Cluster).

Field names in the file are camelCase, like Kubernetes' own config; Python uses snake_case.
Every model forbids unknown keys, so a typo is an error that names the key, not a silent default.
Cross-field rules (subnets that overlap, duplicate hosts, topology) live in `Cluster`'s validator
so they report the field they concern.

This is the one gate: everything the renderers need of the user's configuration is checked here,
so `config validate` accepts exactly what `render` and `up` accept (tests/test_config_gate.py
walks every such rule through the CLI and renders whatever the model accepts). A renderer may
assume a `Cluster` it is given is renderable; it checks nothing the cluster file says.
"""

from __future__ import annotations

import ipaddress
import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from provision.config.source import label
from provision.versions import PAUSE_FLAG_REMOVED_IN

API_VERSION = "kubeprov.io/v1alpha1"
KIND = "Cluster"

MIN_MINOR, MAX_MINOR = 28, 35
SUPPORTED_MINORS = tuple(range(MIN_MINOR, MAX_MINOR + 1))

# RFC 1123 label/subdomain: what Kubernetes accepts as a node name.
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_VERSION = re.compile(r"^v?(1)\.(\d+)\.(\d+)$")
# A registry as containerd names its certs.d directory: host[:port], or _default for all of them.
_REGISTRY = re.compile(r"^(_default|[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?)$")
# A kubelet flag as kubelet.extraArgs names it: no leading dashes.
_KUBELET_FLAG = re.compile(r"^[a-z0-9][a-z0-9.-]*$")
# kubeadm-flags.env is expanded unquoted by systemd: whitespace would split a value, and quotes,
# backslashes or $ would be interpreted.
_KUBELET_ENV_UNSAFE = re.compile(r"[\s\"\\$']")
# etcd.env (external etcd) is a systemd EnvironmentFile with bare values (render/flags.py).
_ETCD_ENV_UNSAFE = re.compile(r"[\"'\\\n]")


# Kubernetes spells acronyms in capitals (serverTLSBootstrap, podCIDR); so do we, so that a key
# copied from a KubeletConfiguration or kubeadm config means the same here.
_ACRONYMS = re.compile(r"(Tls|Oom|Lb|Id|Mb|Url|Cidr|Ip|Dns|Sans)(?=[A-Z]|$)")


def _camel(name: str) -> str:
    return _ACRONYMS.sub(lambda m: m.group(1).upper(), to_camel(name))


class Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        alias_generator=_camel,
        populate_by_name=True,
        frozen=True,
        str_strip_whitespace=True,
    )


class Role(str, Enum):
    CONTROL_PLANE = "control-plane"
    WORKER = "worker"
    ETCD = "etcd"


class KeyAlgorithm(str, Enum):
    RSA_2048 = "RSA-2048"
    RSA_3072 = "RSA-3072"
    RSA_4096 = "RSA-4096"
    ECDSA_P256 = "ECDSA-P256"


class EtcdTopology(str, Enum):
    STACKED = "stacked"
    EXTERNAL = "external"


class CNI(str, Enum):
    FLANNEL = "flannel"
    CALICO = "calico"
    BRIDGE = "bridge"  # image-free: bridge + host-local per node, routes between nodes
    NONE = "none"


def parse_version(value: str) -> tuple[int, int, int]:
    match = _VERSION.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a Kubernetes version like v1.31.2")
    return tuple(int(part) for part in match.groups())  # type: ignore[return-value]


def split_host_port(value: str, default_port: int) -> tuple[str, int]:
    """'host', 'host:port', '[v6]:port' or a bare IPv6 address → (host, port)."""
    value = value.strip()
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{value!r} is not host:port")
    elif value.count(":") == 1:
        host, port_text = value.split(":")
    else:
        host, port_text = value, ""  # a name, an IPv4 address, or a bare IPv6 address
    if not host:
        raise ValueError(f"{value!r} has no host")
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"port {port_text!r} is not a number from 1 to 65535")
        return host, int(port_text)
    return host, default_port


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. an unclosed [ of an IPv6 address
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc) and not any(c.isspace() for c in value)


class SSH(Model):
    user: str = "root"
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    key: Path | None = Field(default=None, description="private key file; default: the SSH agent / ~/.ssh")
    known_hosts: Path | None = Field(default=None, description="known_hosts file with this host's key; default: ~/.ssh/known_hosts")


class Host(Model):
    name: str = Field(description="node name; also the host's name in the cluster")
    address: str = Field(description="where kubeprov reaches the host over SSH")
    internal_address: str | None = Field(
        default=None, description="the address the cluster uses (advertise / node IP); default: address"
    )
    ssh: SSH = SSH()
    roles: Annotated[list[Role], Field(min_length=1)]

    @field_validator("name")
    @classmethod
    def _node_name(cls, value: str) -> str:
        if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
            raise ValueError(f"{value!r} is not a valid node name (lower-case RFC 1123: a-z, 0-9, '-', '.')")
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        # No quotes or backslashes either: no host name or IP has them, and a name with no learnt IP
        # would carry them into URLs such as those of etcd.env.
        if not value or any(ch.isspace() or ch in "\"'\\" for ch in value):
            raise ValueError(f"{value!r} is not an address or host name")
        return value

    @field_validator("internal_address")
    @classmethod
    def _internal_address(cls, value: str | None) -> str | None:
        if value is not None and not is_ip(value):
            raise ValueError(f"{value!r} is not an IP address")
        return value

    @field_validator("roles")
    @classmethod
    def _unique_roles(cls, value: list[Role]) -> list[Role]:
        return sorted(set(value), key=list(Role).index)

    @property
    def advertise_address(self) -> str:
        return self.internal_address or self.address

    def has(self, role: Role) -> bool:
        return role in self.roles


class Networking(Model):
    pod_subnet: ipaddress.IPv4Network | ipaddress.IPv6Network = ipaddress.ip_network("10.244.0.0/16")
    service_subnet: ipaddress.IPv4Network | ipaddress.IPv6Network = ipaddress.ip_network("10.96.0.0/12")
    dns_domain: str = "cluster.local"

    @field_validator("dns_domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        if not _DNS_SUBDOMAIN.match(value):
            raise ValueError(f"{value!r} is not a DNS domain")
        return value

    @field_validator("service_subnet")
    @classmethod
    def _service_size(cls, value):
        # The apiserver refuses service ranges larger than 2^20 addresses (or /108 for IPv6).
        if value.max_prefixlen - value.prefixlen > 20:
            raise ValueError(f"{value} is too large: the API server allows at most 2^20 service addresses")
        if value.num_addresses < 16:
            raise ValueError(f"{value} is too small: CoreDNS takes the tenth address")
        return value

    @property
    def api_service_ip(self) -> str:
        """The in-cluster address of the `kubernetes` Service: the first address of the range."""
        return str(self.service_subnet.network_address + 1)

    @property
    def dns_service_ip(self) -> str:
        """CoreDNS's Service address: the tenth, as kubeadm picks it."""
        return str(self.service_subnet.network_address + 10)


def _flag_values(value):
    # YAML turns `true`/`10` into bool/int; flags are strings on a command line. Only scalars:
    # a list, mapping or empty value stays as it is, for validation to refuse (not "None" or "[1, 2]").
    if isinstance(value, dict):
        return {
            k: str(v).lower() if isinstance(v, bool) else str(v) if isinstance(v, (int, float)) else v
            for k, v in value.items()
        }
    return value


# extraArgs of any component: flag name (no leading dashes) → value.
Flags = Annotated[dict[str, str], BeforeValidator(_flag_values)]


class HostPathVolume(Model):
    """An extra hostPath volume for a control-plane static pod (kubeadm's extraVolumes)."""

    name: str
    host_path: str
    mount_path: str
    read_only: bool = False
    path_type: Literal["", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket", "CharDevice", "BlockDevice"] = ""


class Component(Model):
    """Per-component overrides: extraArgs replace kubeadm's value for the same flag."""

    extra_args: Flags = Field(default_factory=dict)
    extra_volumes: list[HostPathVolume] = Field(default_factory=list)


class Audit(Model):
    enabled: bool = True
    max_age_days: Annotated[int, Field(ge=1)] = 30
    max_backups: Annotated[int, Field(ge=1)] = 10
    max_size_mb: Annotated[int, Field(ge=1)] = 100


class ControlPlane(Model):
    api_server: Component = Component()
    controller_manager: Component = Component()
    scheduler: Component = Component()
    audit: Audit = Audit()
    encrypt_secrets: bool = Field(default=True, description="EncryptionConfiguration (aescbc) for Secrets at rest")
    profiling: bool = False


class LoadBalancerMode(str, Enum):
    NONE = "none"  # controlPlaneEndpoint is served by something outside kubeprov (or is a single node)
    KUBE_VIP = "kube-vip"  # ARP VIP with leader election, static pod on each control plane
    HAPROXY_KEEPALIVED = "haproxy-keepalived"


class LoadBalancer(Model):
    mode: LoadBalancerMode | None = Field(default=None, description="default: kube-vip when the endpoint is a VIP")
    interface: str = "eth0"
    virtual_router_id: Annotated[int, Field(ge=1, le=255)] = 51
    # Workers can reach the API through a local haproxy on 127.0.0.1:<port> → every control plane.
    worker_local_lb: bool = False
    worker_local_lb_port: Annotated[int, Field(ge=1, le=65535)] = 6443


class Kubelet(Model):
    server_tls_bootstrap: bool = False
    # CIS 4.2.6 wants it, but a kubelet then refuses to start wherever a kernel tunable it checks
    # differs and cannot be set (containers, nspawn labs, hardened hosts); kubeadm leaves it off.
    protect_kernel_defaults: bool = False
    max_pods: Annotated[int, Field(ge=1)] = 110
    extra_args: Flags = Field(default_factory=dict)

    @model_validator(mode="after")
    def _flags_fit_the_env_file(self):
        # They go into /var/lib/kubelet/kubeadm-flags.env (render/kubelet.py) as `--name=value`.
        for name, value in self.extra_args.items():
            field = f"extraArgs.{label(name)}"
            if not _KUBELET_FLAG.match(name):
                raise _field_error(field, "not a kubelet flag name (lower-case, without leading dashes)")
            if _KUBELET_ENV_UNSAFE.search(value):
                raise _field_error(field, f"value {value!r} contains whitespace, a quote, a backslash or $")
        return self


class KubeProxyMode(str, Enum):
    IPTABLES = "iptables"
    IPVS = "ipvs"


class KubeProxy(Model):
    mode: KubeProxyMode = KubeProxyMode.IPTABLES


class Containerd(Model):
    registry_mirrors: dict[str, list[str]] = Field(default_factory=dict, description="registry → mirror URLs")
    # Needed where the process lacks CAP_SYS_RESOURCE (containers, nspawn labs).
    restrict_oom_score_adj: bool = False

    @model_validator(mode="after")
    def _mirrors(self):
        for registry, urls in self.registry_mirrors.items():
            field = f"registryMirrors.{label(registry)}"
            if not _REGISTRY.match(registry):
                # Also what keeps a name like ../x from escaping /etc/containerd/certs.d.
                raise _field_error(field, "not a registry name (host or host:port, lower-case, or _default)")
            if not urls:
                raise _field_error(field, "lists no mirror")
            for index, url in enumerate(urls):
                if not _is_http_url(url) or '"' in url:  # '"' would end the TOML string in hosts.toml
                    raise _field_error(field, f"{url!r} is not an http(s) URL")
                if url in urls[:index]:  # hosts.toml would hold its [host."…"] table twice: not TOML
                    raise _field_error(field, f"lists {url!r} twice")
        return self


class Etcd(Model):
    topology: EtcdTopology = EtcdTopology.STACKED
    extra_args: Flags = Field(default_factory=dict)
    data_dir: str = "/var/lib/etcd"

    @model_validator(mode="after")
    def _flags(self):
        # The kubelet probes etcd on the first of these (render/etcd.py, as kubeadm does).
        metrics = self.extra_args.get("listen-metrics-urls")
        if metrics is not None:
            for url in metrics.split(","):
                try:
                    urlsplit(url).port
                except ValueError as exc:
                    raise _field_error("extraArgs.listen-metrics-urls", f"{url!r} is not a URL: {exc}") from None
        if self.topology is EtcdTopology.EXTERNAL:
            # External members read their flags from /etc/etcd/etcd.env, where values stand bare.
            for field, value in [("dataDir", self.data_dir)] + [(f"extraArgs.{label(k)}", v) for k, v in self.extra_args.items()]:
                if _ETCD_ENV_UNSAFE.search(value) or value != value.strip():
                    raise _field_error(
                        field,
                        f"value {value!r} cannot go into etcd's environment file (topology external): "
                        "a quote, a backslash, a newline or a space at either end",
                    )
        return self


class ArtifactSource(str, Enum):
    PACKAGES = "packages"  # pkgs.k8s.io's apt repository for the minor + Debian's packages
    RELEASE = "release"  # upstream release downloads, each checked against its published sha256
    BUNDLE = "bundle"  # an offline directory with SHA256SUMS (air-gapped sites)


class Artifacts(Model):
    """Where binaries and images come from (provision/artifacts)."""

    source: ArtifactSource = ArtifactSource.PACKAGES
    bundle_dir: Path | None = Field(default=None, description="the offline bundle (source: bundle); relative to the file")
    release_base_url: str = Field(default="https://dl.k8s.io/release", description="Kubernetes release binaries")
    github_base_url: str = Field(default="https://github.com", description="crictl, CNI plugins, containerd, runc, etcd releases")
    package_repo: str = Field(default="https://pkgs.k8s.io/core:/stable:", description="Kubernetes apt repositories, one per minor")

    @field_validator("release_base_url", "github_base_url", "package_repo")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _bundle_needs_dir(self):
        if self.source is ArtifactSource.BUNDLE and self.bundle_dir is None:
            raise ValueError("source bundle needs bundleDir: the offline directory with SHA256SUMS")
        return self


class Certificates(Model):
    key_algorithm: KeyAlgorithm = KeyAlgorithm.RSA_2048
    validity_days: Annotated[int, Field(ge=1, le=3650)] = 365
    ca_validity_days: Annotated[int, Field(ge=1, le=36500)] = 3650
    # Spelled like Kubernetes' own SANs; the generated camelCase would be apiServerExtraSans.
    api_server_extra_sans: list[str] = Field(default_factory=list, alias="apiServerExtraSANs")

    @field_validator("api_server_extra_sans")
    @classmethod
    def _sans(cls, value: list[str]) -> list[str]:
        for san in value:
            if not (is_ip(san) or _DNS_SUBDOMAIN.match(san.lower().removeprefix("*."))):
                raise ValueError(f"{san!r} is neither an IP address nor a DNS name")
        return value

    @model_validator(mode="after")
    def _ca_outlives_leaves(self):
        if self.ca_validity_days < self.validity_days:
            raise ValueError("caValidityDays must be at least validityDays: a leaf cannot outlive its CA")
        return self


DEFAULT_CLUSTER_DIRS = Path(".kubeprov")  # <this>/<name>, relative to the cluster file


class Cluster(Model):
    api_version: Literal["kubeprov.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["Cluster"]
    name: str = "kubernetes"
    kubernetes_version: str = Field(description="v1.28.0 … v1.35.x")
    hosts: Annotated[list[Host], Field(min_length=1)]
    control_plane_endpoint: str | None = Field(
        default=None, description="host:port of the API for everyone (a VIP or DNS name for HA)"
    )
    api_server_port: Annotated[int, Field(ge=1, le=65535)] = Field(default=6443, alias="apiServerPort")
    networking: Networking = Networking()
    etcd: Etcd = Etcd()
    cni: CNI = CNI.FLANNEL
    image_repository: str = "registry.k8s.io"
    control_plane: ControlPlane = ControlPlane()
    load_balancer: LoadBalancer = LoadBalancer()
    kubelet: Kubelet = Kubelet()
    kube_proxy: KubeProxy = KubeProxy()
    containerd: Containerd = Containerd()
    certificates: Certificates = Certificates()
    artifacts: Artifacts = Artifacts()
    cluster_dir: Path | None = Field(default=None, description="default: .kubeprov/<name> beside the file")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if len(value) > 63 or not _DNS_SUBDOMAIN.match(value) or "." in value:
            raise ValueError(f"{value!r} is not a valid cluster name (a-z, 0-9, '-', at most 63)")
        return value

    @field_validator("kubernetes_version")
    @classmethod
    def _version(cls, value: str) -> str:
        _, minor, _ = parse_version(value)
        if minor not in SUPPORTED_MINORS:
            raise ValueError(f"{value} is not supported: kubeprov supports v1.{MIN_MINOR} to v1.{MAX_MINOR}")
        return value if value.startswith("v") else f"v{value}"

    @field_validator("control_plane_endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None:
            split_host_port(value, 6443)
        return value

    @model_validator(mode="after")
    def _cross_checks(self):
        _check_unique(self.hosts)
        _check_topology(self)
        net = self.networking
        if net.pod_subnet.version != net.service_subnet.version:
            raise _field_error("networking.serviceSubnet", "podSubnet and serviceSubnet must be the same IP family")
        if net.pod_subnet.overlaps(net.service_subnet):
            raise _field_error(
                "networking.serviceSubnet", f"{net.service_subnet} overlaps podSubnet {net.pod_subnet}"
            )
        for index, host in enumerate(self.hosts):
            if is_ip(host.advertise_address):
                address = ipaddress.ip_address(host.advertise_address)
                for field, subnet in (("podSubnet", net.pod_subnet), ("serviceSubnet", net.service_subnet)):
                    if address.version == subnet.version and address in subnet:
                        raise _field_error(
                            f"hosts[{index}]", f"host {host.name} address {address} lies inside {field} {subnet}"
                        )
        _check_load_balancer(self)
        _check_bridge_cni(self)
        if self.minor >= PAUSE_FLAG_REMOVED_IN and "pod-infra-container-image" in self.kubelet.extra_args:
            raise _field_error(
                "kubelet.extraArgs.pod-infra-container-image", f"the kubelet removed this flag in v1.{PAUSE_FLAG_REMOVED_IN}"
            )
        return self

    # --- derived views, used by PKI and renderers ---------------------------------------------

    @property
    def minor(self) -> int:
        return parse_version(self.kubernetes_version)[1]

    @property
    def control_planes(self) -> list[Host]:
        return [h for h in self.hosts if h.has(Role.CONTROL_PLANE)]

    @property
    def nodes(self) -> list[Host]:
        """Hosts that run a kubelet: control planes and workers (an etcd-only host does not)."""
        return [h for h in self.hosts if h.has(Role.CONTROL_PLANE) or h.has(Role.WORKER)]

    @property
    def workers(self) -> list[Host]:
        return [h for h in self.hosts if h.has(Role.WORKER) and not h.has(Role.CONTROL_PLANE)]

    @property
    def etcd_members(self) -> list[Host]:
        if self.etcd.topology is EtcdTopology.STACKED:
            return self.control_planes
        return [h for h in self.hosts if h.has(Role.ETCD)]

    @property
    def first_control_plane(self) -> Host:
        return self.control_planes[0]

    @property
    def directory(self) -> Path:
        """The cluster directory (PKI, kubeconfigs, journal, records): clusterDir, or the one default."""
        return Path(self.cluster_dir or DEFAULT_CLUSTER_DIRS / self.name)

    @property
    def endpoint(self) -> tuple[str, int]:
        """(host, port) of the API for clients outside the control plane."""
        if self.control_plane_endpoint:
            return split_host_port(self.control_plane_endpoint, self.api_server_port)
        return self.first_control_plane.advertise_address, self.api_server_port

    @property
    def load_balancer_mode(self) -> LoadBalancerMode:
        """kube-vip when the endpoint is an IP that no host has (a VIP), unless set explicitly."""
        if self.load_balancer.mode is not None:
            return self.load_balancer.mode
        host, _ = self.endpoint
        addresses = {h.advertise_address for h in self.hosts} | {h.address for h in self.hosts}
        if self.control_plane_endpoint and is_ip(host) and host not in addresses and not ipaddress.ip_address(host).is_loopback:
            return LoadBalancerMode.KUBE_VIP
        return LoadBalancerMode.NONE

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)


class _CrossFieldError(ValueError):
    """A cross-field rule failure that knows which field to blame, relative to the model whose
    validator raises it (the loader prefixes where that model sits in the file)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


def _field_error(field: str, message: str) -> _CrossFieldError:
    return _CrossFieldError(field, message)


def _check_unique(hosts: list[Host]) -> None:
    seen_names: dict[str, int] = {}
    seen_addresses: dict[str, int] = {}
    for index, host in enumerate(hosts):
        if host.name in seen_names:
            raise _field_error(
                f"hosts[{index}].name", f"duplicate host name {host.name!r} (also hosts[{seen_names[host.name]}])"
            )
        seen_names[host.name] = index
        # The other host is named, not only indexed: inventory hosts have no index a reader can look up.
        for field, address in (("address", host.address), ("internalAddress", host.internal_address)):
            other = seen_addresses.get(address) if address else None
            if other is not None and other != index:
                raise _field_error(
                    f"hosts[{index}].{field}", f"duplicate address {address!r} (also host {hosts[other].name!r})"
                )
            if address:
                seen_addresses[address] = index


def _check_topology(cluster: Cluster) -> None:
    if not cluster.control_planes:
        raise _field_error("hosts", "no host has the role control-plane; a cluster needs at least one")
    if cluster.etcd.topology is EtcdTopology.STACKED:
        for index, host in enumerate(cluster.hosts):
            if host.has(Role.ETCD) and not host.has(Role.CONTROL_PLANE):
                raise _field_error(
                    f"hosts[{index}].roles",
                    f"host {host.name} has role etcd but etcd.topology is stacked "
                    "(etcd runs on the control planes); set etcd.topology: external or drop the role",
                )
    elif not cluster.etcd_members:
        raise _field_error("etcd.topology", "topology external needs at least one host with the role etcd")


def _check_load_balancer(cluster: Cluster) -> None:
    """What the HA renderer (render/ha.py) needs of the endpoint for the load balancer mode."""
    mode = cluster.load_balancer_mode
    if mode is LoadBalancerMode.NONE:
        return
    if not cluster.control_plane_endpoint:  # only an explicit mode gets here: the default needs a VIP
        raise _field_error("controlPlaneEndpoint", f"loadBalancer.mode {mode.value} needs a controlPlaneEndpoint (the VIP)")
    host, port = cluster.endpoint
    if mode is LoadBalancerMode.HAPROXY_KEEPALIVED and not is_ip(host):
        raise _field_error("controlPlaneEndpoint", f"{host!r} is not an IP address: {mode.value} needs the VIP itself")
    if mode is LoadBalancerMode.KUBE_VIP and port != cluster.api_server_port:
        chosen = "" if cluster.load_balancer.mode else " (loadBalancer.mode's default for a VIP)"
        raise _field_error(
            "controlPlaneEndpoint",
            f"port {port} differs from apiServerPort {cluster.api_server_port}: kube-vip{chosen} only moves the "
            "address, so clients reach the API server on its own port; use haproxy-keepalived to remap ports",
        )


# kube-controller-manager's default node mask sizes (--node-cidr-mask-size-ipv4 / -ipv6), which the
# bridge CNI (render/cni/bridge.py) cuts podSubnet into, one block per node.
BRIDGE_NODE_MASK = {4: 24, 6: 64}


def _check_bridge_cni(cluster: Cluster) -> None:
    """What the bridge CNI (render/cni/bridge.py) needs: a /24 (/64) of podSubnet per node, and
    every node's IP address in podSubnet's family to route the others' pods via."""
    if cluster.cni is not CNI.BRIDGE:
        return
    subnet = cluster.networking.pod_subnet
    mask = BRIDGE_NODE_MASK[subnet.version]
    nodes = cluster.nodes
    blocks = 2 ** (mask - subnet.prefixlen) if subnet.prefixlen <= mask else 0
    if blocks < len(nodes):
        raise _field_error(
            "networking.podSubnet",
            f"{subnet} is too small for the bridge CNI: {len(nodes)} nodes need {len(nodes)} /{mask} blocks, it holds {blocks}",
        )
    if len(nodes) < 2:
        return  # no other node to route to
    for index, host in enumerate(cluster.hosts):
        via = host.advertise_address
        # A host known only by a DNS name passes: its IP is a run-time fact, learnt on the host by
        # `up` (provision/addresses.py), which validates the cluster again with it, so this rule
        # then applies to the learnt IP; commands that render refuse such a host until then.
        if host in nodes and is_ip(via) and ipaddress.ip_address(via).version != subnet.version:
            raise _field_error(
                f"hosts[{index}].internalAddress",
                f"host {host.name}: the bridge CNI routes pods via the node's IPv{subnet.version} address, "
                f"and {via!r} is not one; give it an IPv{subnet.version} internalAddress",
            )


def warnings_for(cluster: Cluster) -> list[str]:
    """Things that are allowed but usually a mistake; shown, never fatal."""
    found = []
    members = len(cluster.etcd_members)
    if members > 1 and members % 2 == 0:
        found.append(
            f"etcd has {members} members: an even count tolerates no more failures than {members - 1} "
            "and makes a split vote possible; use an odd number"
        )
    if len(cluster.control_planes) > 1 and not cluster.control_plane_endpoint:
        found.append(
            "several control planes but no controlPlaneEndpoint: clients will use the first control "
            "plane only; set a VIP or DNS name for HA"
        )
    return found
