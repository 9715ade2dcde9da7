"""The pod network: flannel and calico manifests, and the image-free bridge CNI.

Manifests are judged by Kubernetes' own schemas (kubernetes-validate, strict, every supported
minor) and by cross-references a real cluster would trip over (a volume naming a ConfigMap that
is not there, a ServiceAccount nobody created, a CRD named against the API's rule). The bridge
conflist is run through the CNI protocol with Debian's real plugins between network namespaces
we create, and the node routes the routes unit writes carry pod traffic from one node to another.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shlex
import shutil
import subprocess
import uuid
from pathlib import Path, PurePosixPath

import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml
from testkit import hosts

from provision.config.loader import cluster_from_data
from provision.config.models import Cluster
from provision.errors import ConfigError
from provision.render import CLUSTER_RENDERERS, HOST_RENDERERS
from provision.render.cni import cni_objects, node_pod_cidrs, render_cni_host, render_cni_objects
from provision.render.cni import bridge, calico, flannel

NEWEST = min(35, int(kubernetes_validate.utils.latest_version().split(".")[1]))
MINORS = range(28, NEWEST + 1)
CNI_BIN = Path("/usr/lib/cni")


def make(cni: str, **kwargs) -> Cluster:
    return Cluster.model_validate(make_doc(cni, **kwargs))


def refused(cni: str, **kwargs) -> ConfigError:
    """The loader's (`config validate`'s) error for the cluster make(cni, **kwargs) would build."""
    with pytest.raises(ConfigError) as caught:
        cluster_from_data(make_doc(cni, **kwargs), "cluster.yaml")
    return caught.value


def make_doc(cni: str, *, cps: int = 1, workers: int = 2, version: str = "v1.31.4", pod_subnet: str | None = None, doc_hosts=None) -> dict:
    doc = {
        "apiVersion": "kubeprov.io/v1alpha1",
        "kind": "Cluster",
        "kubernetesVersion": version,
        "hosts": doc_hosts or hosts(cps, workers),
        "cni": cni,
    }
    if pod_subnet:
        doc["networking"] = {"podSubnet": pod_subnet}
        if ipaddress.ip_network(pod_subnet).version == 6:
            doc["networking"]["serviceSubnet"] = "fd00:96::/112"
            if doc_hosts is None:  # nodes in the pods' family, which the bridge CNI routes via
                for host in doc["hosts"]:
                    host["internalAddress"] = "fd00::" + host["internalAddress"].rsplit(".", 1)[1]
    return doc


def validate_strictly(doc: dict, minors=MINORS) -> None:
    for minor in minors:
        try:
            kubernetes_validate.validate(doc, f"1.{minor}", strict=True)
        except kubernetes_validate.utils.ValidationError as exc:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']} invalid for 1.{minor}: {str(exc).splitlines()[0]}")


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def check_references(objects: list[dict]) -> None:
    """Whatever a workload names must be in the same manifest (or be a kubeadm/kubelet given)."""
    config_maps = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in by_kind(objects, "ConfigMap")}
    accounts = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in by_kind(objects, "ServiceAccount")}
    roles = {o["metadata"]["name"] for o in by_kind(objects, "ClusterRole")}
    for binding in by_kind(objects, "ClusterRoleBinding"):
        assert binding["roleRef"]["name"] in roles
        for subject in binding["subjects"]:
            assert (subject["namespace"], subject["name"]) in accounts
    for workload in by_kind(objects, "DaemonSet") + by_kind(objects, "Deployment"):
        namespace = workload["metadata"]["namespace"]
        spec = workload["spec"]["template"]["spec"]
        assert (namespace, spec["serviceAccountName"]) in accounts
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()
        volume_names = {v["name"] for v in spec["volumes"]} if "volumes" in spec else set()
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert (namespace, volume["configMap"]["name"]) in config_maps
        for container in spec.get("initContainers", []) + spec["containers"]:
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volume_names, f"{container['name']} mounts unknown volume {mount['name']}"
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("configMapKeyRef")
                if ref:
                    assert ref["key"] in config_maps[(namespace, ref["name"])]["data"]


def test_cni_renderers_are_registered():
    assert render_cni_host in HOST_RENDERERS and render_cni_objects in CLUSTER_RENDERERS


# --- flannel -----------------------------------------------------------------------------------


@pytest.mark.parametrize("pod_subnet", ["10.244.0.0/16", "10.32.0.0/12"])
def test_flannel_manifest(pod_subnet):
    cluster = make("flannel", pod_subnet=pod_subnet)
    objects = cni_objects(cluster)
    for doc in objects:
        validate_strictly(doc)
    check_references(objects)
    assert [o["kind"] for o in objects][0] == "Namespace"  # created before anything lives in it
    assert {o["metadata"].get("namespace", "kube-flannel") for o in objects} == {"kube-flannel"}
    (cm,) = by_kind(objects, "ConfigMap")
    net = json.loads(cm["data"]["net-conf.json"])
    assert net["Network"] == pod_subnet and net["Backend"]["Type"] == "vxlan"
    conflist = json.loads(cm["data"]["cni-conf.json"])
    assert [p["type"] for p in conflist["plugins"]] == ["flannel", "portmap"]
    (ds,) = by_kind(objects, "DaemonSet")
    images = {c["image"] for c in ds["spec"]["template"]["spec"]["initContainers"] + ds["spec"]["template"]["spec"]["containers"]}
    assert images == {f"ghcr.io/flannel-io/flannel:{flannel.FLANNEL_VERSION}", flannel.FLANNEL_CNI_PLUGIN_IMAGE}
    assert "--kube-subnet-mgr" in ds["spec"]["template"]["spec"]["containers"][0]["args"]
    # the file the cluster renderer writes is exactly these objects, in order
    files = render_cni_objects(cluster, None)
    assert list(files) == ["cni-flannel.yaml"]
    assert list(yaml.safe_load_all(files["cni-flannel.yaml"])) == objects


def test_flannel_ipv6_pod_subnet():
    cluster = make("flannel", pod_subnet="fd00:244::/56")
    (cm,) = by_kind(cni_objects(cluster), "ConfigMap")
    net = json.loads(cm["data"]["net-conf.json"])
    assert net["IPv6Network"] == "fd00:244::/56" and net["EnableIPv6"] is True and net["EnableIPv4"] is False


# --- calico ------------------------------------------------------------------------------------


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container["env"]}


@pytest.mark.parametrize("pod_subnet", ["192.168.0.0/16", "fd00:244::/56"])
def test_calico_manifest(pod_subnet):
    cluster = make("calico", pod_subnet=pod_subnet)
    objects = cni_objects(cluster)
    for doc in objects:
        validate_strictly(doc)
    check_references(objects)
    kinds = [o["kind"] for o in objects]
    assert kinds.index("DaemonSet") > max(i for i, k in enumerate(kinds) if k == "CustomResourceDefinition")
    (ds,) = by_kind(objects, "DaemonSet")
    (node,) = ds["spec"]["template"]["spec"]["containers"]
    env = env_of(node)
    family = ipaddress.ip_network(pod_subnet).version
    assert env["CALICO_IPV4POOL_CIDR" if family == 4 else "CALICO_IPV6POOL_CIDR"] == pod_subnet
    assert node["image"] == f"docker.io/calico/node:{calico.CALICO_VERSION}"
    (deployment,) = by_kind(objects, "Deployment")
    assert deployment["metadata"]["name"] == "calico-kube-controllers"
    (cm,) = by_kind(objects, "ConfigMap")
    # install-cni substitutes the placeholders; the rest must already be JSON
    template = cm["data"]["cni_network_config"]
    filled = json.loads(template.replace("__CNI_MTU__", "1440"))
    assert filled["plugins"][0]["type"] == "calico" and filled["plugins"][0]["mtu"] == 1440


def test_calico_crds_follow_the_api_rules_and_cover_what_calico_uses():
    objects = cni_objects(make("calico"))
    crds = by_kind(objects, "CustomResourceDefinition")
    defined = set()
    for crd in crds:
        spec = crd["spec"]
        # the API server insists: metadata.name == <plural>.<group>, exactly one storage version
        assert crd["metadata"]["name"] == f"{spec['names']['plural']}.{spec['group']}"
        assert sum(v["storage"] for v in spec["versions"]) == 1
        schema = spec["versions"][0]["schema"]["openAPIV3Schema"]
        assert schema["type"] == "object" and schema["properties"]["spec"]["type"] == "object"  # structural
        defined.add((spec["group"], spec["names"]["plural"]))
    # every calico resource the components may write must exist as a kind
    for role in by_kind(objects, "ClusterRole"):
        for rule in role["rules"]:
            if set(rule["verbs"]) & {"create", "update"} and "crd.projectcalico.org" in rule["apiGroups"]:
                for resource in rule["resources"]:
                    assert ("crd.projectcalico.org", resource) in defined, resource
    assert ("crd.projectcalico.org", "ippools") in defined and ("crd.projectcalico.org", "networkpolicies") in defined


def test_none_and_bridge_have_no_cluster_objects():
    assert render_cni_objects(make("none"), None) == {}
    assert render_cni_objects(make("bridge"), None) == {}
    assert all(render_cni_host(make("none"), h, None) == {} for h in make("none").hosts)
    flannel_cluster = make("flannel")
    assert all(render_cni_host(flannel_cluster, h, None) == {} for h in flannel_cluster.hosts)


# --- node pod CIDRs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pod_subnet, nodes, size",
    [("10.244.0.0/16", 5, 24), ("10.244.0.0/22", 4, 24), ("10.244.0.0/24", 1, 24), ("fd00:10::/56", 6, 64)],
)
def test_node_pod_cidrs_disjoint_inside_and_stable(pod_subnet, nodes, size):
    cluster = make("bridge", cps=1, workers=nodes - 1, pod_subnet=pod_subnet)
    cidrs = node_pod_cidrs(cluster)
    subnet = ipaddress.ip_network(pod_subnet)
    assert list(cidrs) == [h.name for h in cluster.nodes]
    for name, cidr in cidrs.items():
        assert cidr.prefixlen == size and cidr.subnet_of(subnet), (name, cidr)
    values = list(cidrs.values())
    assert all(not a.overlaps(b) for i, a in enumerate(values) for b in values[i + 1:])
    # stable: rendering again gives the same answer; adding a node keeps everyone else's
    assert node_pod_cidrs(make("bridge", cps=1, workers=nodes - 1, pod_subnet=pod_subnet)) == cidrs
    if len(list(subnet.subnets(new_prefix=size))) > nodes:
        bigger = node_pod_cidrs(make("bridge", cps=1, workers=nodes, pod_subnet=pod_subnet))
        assert {k: bigger[k] for k in cidrs} == cidrs


def test_etcd_only_hosts_get_no_pod_cidr():
    doc_hosts = hosts(1, 1) + [{"name": "e1", "address": "10.0.0.201", "roles": ["etcd"]}]
    cluster = Cluster.model_validate(
        {"apiVersion": "kubeprov.io/v1alpha1", "kind": "Cluster", "kubernetesVersion": "v1.31.0",
         "hosts": doc_hosts, "cni": "bridge", "etcd": {"topology": "external"}}
    )
    assert set(node_pod_cidrs(cluster)) == {"cp1", "w1"}
    assert render_cni_host(cluster, cluster.host("e1"), None) == {}


@pytest.mark.parametrize("pod_subnet, nodes", [("10.244.0.0/23", 3), ("10.244.0.0/25", 1), ("fd00:10::/65", 1)])
def test_too_small_pod_subnet_is_refused_by_the_model(pod_subnet, nodes):
    """The model refuses it (so `config validate` does, before certs or render);
    tests/test_config_gate.py walks it through the CLI."""
    error = refused("bridge", cps=1, workers=nodes - 1, pod_subnet=pod_subnet)
    assert error.field == "networking.podSubnet" and pod_subnet in error.message and "too small" in error.message
    # other CNIs allocate per node in the controller-manager: no such rule
    assert make("flannel", cps=1, workers=nodes - 1, pod_subnet=pod_subnet).cni.value == "flannel"


# --- bridge files ------------------------------------------------------------------------------


def test_bridge_files_per_node():
    cluster = make("bridge", cps=2, workers=2)
    cidrs = node_pod_cidrs(cluster)
    for host in cluster.hosts:
        tree = render_cni_host(cluster, host, None)
        assert set(tree) == {PurePosixPath("/etc/cni/net.d/10-kubeprov-bridge.conflist"),
                             PurePosixPath("/etc/systemd/system/kubeprov-pod-routes.service")}
        conflist = json.loads(tree[bridge.CONFLIST].content)
        assert conflist["cniVersion"] == "0.4.0"
        assert [p["type"] for p in conflist["plugins"]] == ["bridge", "portmap", "loopback"]
        assert conflist["plugins"][0]["bridge"] == "cni0"
        assert conflist["plugins"][0]["ipam"]["ranges"] == [[{"subnet": str(cidrs[host.name])}]]
        unit = tree[bridge.ROUTES_UNIT].content.decode()
        routes = [line.split()[4:] for line in unit.splitlines() if "route replace" in line]
        expected = [[str(cidrs[o.name]), "via", o.advertise_address, "proto", bridge.ROUTES_PROTO] for o in cluster.nodes if o != host]
        assert routes == expected
        # kubeprov's routes to nodes no longer in the cluster are deleted; those listed are kept
        (prune,) = [line for line in unit.splitlines() if "route del" in line]
        assert f"route show proto {bridge.ROUTES_PROTO}" in prune
        assert prune.count(" -e ") == len(expected) and all(f"-e {cidr} " in prune + " " for cidr, *_ in expected)
        assert "Type=oneshot" in unit and "WantedBy=multi-user.target" in unit


def test_bridge_routes_need_node_ips_of_the_pods_family():
    """An IP of the other family is refused by the model (so by `config validate`); a host known
    by name passes it, as `up` learns its IP on the host and validates again with it."""
    doc_hosts = hosts(1, 1)
    doc_hosts[1]["internalAddress"] = "fd00::21"
    error = refused("bridge", doc_hosts=doc_hosts)
    assert error.field == "hosts[1].internalAddress" and "IPv4" in error.message
    doc_hosts[1] = {"name": "w1", "address": "w1.example.test", "roles": ["worker"]}
    assert make("bridge", doc_hosts=doc_hosts).host("w1").advertise_address == "w1.example.test"
    # a single node routes to no other: its name is enough
    alone = make("bridge", doc_hosts=[{"name": "cp1", "address": "cp1.example.test", "roles": ["control-plane", "worker"]}])
    assert set(render_cni_host(alone, alone.host("cp1"), None)) == {bridge.CONFLIST, bridge.ROUTES_UNIT}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_routes_unit_is_a_valid_systemd_unit(tmp_path):
    cluster = make("bridge", cps=1, workers=2)
    unit = tmp_path / "kubeprov-pod-routes.service"
    unit.write_bytes(render_cni_host(cluster, cluster.host("cp1"), None)[bridge.ROUTES_UNIT].content)
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (proc.stdout + proc.stderr).splitlines() if str(unit) in line]
    assert not problems, problems


# --- the bridge conflist with the real CNI plugins (integration) -------------------------------


def nsenter(ns: str, *command: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net=/run/netns/{ns}", *command], capture_output=True, text=True,
                          check=check, timeout=60, **kwargs)


class CNIRuntime:
    """Plays the container runtime's part of the CNI protocol (what containerd does per pod)."""

    def __init__(self, conflist: dict, node_ns: str, data_dir: Path):
        self.conflist = conflist
        self.node_ns = node_ns
        self.data_dir = data_dir

    def _conf(self, plugin: dict, prev: dict | None) -> dict:
        conf = {"cniVersion": self.conflist["cniVersion"], "name": self.conflist["name"], **plugin}
        if conf.get("ipam", {}).get("type") == "host-local":
            conf["ipam"] = {**conf["ipam"], "dataDir": str(self.data_dir)}  # keep host-local state in the test
        if prev is not None:
            conf["prevResult"] = prev
        return conf

    def _exec(self, command: str, plugin: dict, prev: dict | None, container_ns: str, container_id: str) -> dict | None:
        env = {
            "PATH": os.environ["PATH"], "CNI_COMMAND": command, "CNI_CONTAINERID": container_id,
            "CNI_NETNS": f"/run/netns/{container_ns}", "CNI_IFNAME": "eth0", "CNI_PATH": str(CNI_BIN),
        }
        proc = nsenter(self.node_ns, str(CNI_BIN / plugin["type"]), input=json.dumps(self._conf(plugin, prev)),
                       env=env, check=False)
        assert proc.returncode == 0, f"{plugin['type']} {command}: {proc.stdout} {proc.stderr}"
        return json.loads(proc.stdout) if command == "ADD" else None

    def add(self, container_ns: str, container_id: str) -> dict:
        result = None
        for plugin in self.conflist["plugins"]:
            result = self._exec("ADD", plugin, result, container_ns, container_id)
        return result

    def delete(self, container_ns: str, container_id: str, result: dict) -> None:
        for plugin in reversed(self.conflist["plugins"]):
            self._exec("DEL", plugin, result, container_ns, container_id)


@contextlib.contextmanager
def namespaces(*names: str):
    created = []
    try:
        for name in names:
            subprocess.run(["ip", "netns", "add", name], check=True)
            created.append(name)
        yield
    finally:
        for name in reversed(created):
            subprocess.run(["ip", "netns", "delete", name], check=False)


@pytest.mark.integration
@pytest.mark.skipif(not (CNI_BIN / "bridge").exists(), reason="containernetworking-plugins not installed (scripts/setup)")
@pytest.mark.skipif(shutil.which("ping") is None, reason="ping (iputils-ping) not installed")
def test_bridge_cni_with_real_plugins_between_two_nodes(tmp_path):
    """Two nodes (network namespaces joined by a veth), one pod namespace on each: the rendered
    conflist gives each pod an address in its node's CIDR that reaches the cni0 gateway, and with
    the routes unit's commands run on both nodes the pods reach each other across nodes."""
    tag = f"{os.getpid() % 10000}{uuid.uuid4().hex[:4]}"
    node_ns = {"n1": f"kpv-n1-{tag}", "n2": f"kpv-n2-{tag}"}
    pod_ns = {"n1": f"kpv-p1-{tag}", "n2": f"kpv-p2-{tag}"}
    node_ip = {"n1": "10.123.0.1", "n2": "10.123.0.2"}  # exist only inside our namespaces
    cluster = make("bridge", doc_hosts=[
        {"name": "n1", "address": node_ip["n1"], "roles": ["control-plane"]},
        {"name": "n2", "address": node_ip["n2"], "roles": ["worker"]},
    ])
    cidrs = node_pod_cidrs(cluster)
    results: dict[str, dict] = {}
    runtimes: dict[str, CNIRuntime] = {}
    with namespaces(*node_ns.values(), *pod_ns.values()):
        subprocess.run(["ip", "-n", node_ns["n1"], "link", "add", "uplink", "type", "veth", "peer", "name", "uplink",
                        "netns", node_ns["n2"]], check=True)
        for name, ns in node_ns.items():
            nsenter(ns, "ip", "addr", "add", f"{node_ip[name]}/24", "dev", "uplink")
            nsenter(ns, "ip", "link", "set", "uplink", "up")
            nsenter(ns, "ip", "link", "set", "lo", "up")
        try:
            for name in ("n1", "n2"):
                tree = render_cni_host(cluster, cluster.host(name), None)
                conflist = json.loads(tree[bridge.CONFLIST].content)
                runtimes[name] = CNIRuntime(conflist, node_ns[name], tmp_path / f"ipam-{name}")
                results[name] = runtimes[name].add(pod_ns[name], f"pod-{name}-{tag}")
                # the routes unit's commands, as systemd would run them on that node
                unit = tree[bridge.ROUTES_UNIT].content.decode()
                for line in unit.splitlines():
                    if line.startswith("ExecStart="):
                        nsenter(node_ns[name], *shlex.split(line.removeprefix("ExecStart=")))

            pod_ip = {}
            for name in ("n1", "n2"):
                (address,) = [ipaddress.ip_interface(ip["address"]) for ip in results[name]["ips"]]
                assert address.ip in cidrs[name], (address, cidrs[name])
                pod_ip[name] = str(address.ip)
                gateway = str(next(cidrs[name].hosts()))
                assert results[name]["ips"][0]["gateway"] == gateway
                # the pod's own view: eth0 holds the address, lo is up (loopback plugin)
                shown = nsenter(pod_ns[name], "ip", "-j", "addr", "show").stdout
                links = {link["ifname"]: link for link in json.loads(shown)}
                assert pod_ip[name] in {a["local"] for a in links["eth0"]["addr_info"]}
                assert "UP" in links["lo"]["flags"]
                ping = nsenter(pod_ns[name], "ping", "-c", "1", "-W", "2", gateway, check=False)
                assert ping.returncode == 0, ping.stdout + ping.stderr
            # the node's bridge carries the gateway address
            bridge_addr = nsenter(node_ns["n1"], "ip", "-j", "addr", "show", "dev", "cni0").stdout
            assert str(next(cidrs["n1"].hosts())) in {a["local"] for a in json.loads(bridge_addr)[0]["addr_info"]}
            # across nodes, via the routes
            ping = nsenter(pod_ns["n1"], "ping", "-c", "1", "-W", "2", pod_ip["n2"], check=False)
            assert ping.returncode == 0, ping.stdout + ping.stderr
            ping = nsenter(pod_ns["n2"], "ping", "-c", "1", "-W", "2", pod_ip["n1"], check=False)
            assert ping.returncode == 0, ping.stdout + ping.stderr
            # running the unit twice adds nothing (oneshot units rerun at every boot); a route of
            # kubeprov's to a node that left the cluster goes, a route of someone else's stays
            nsenter(node_ns["n1"], "ip", "route", "add", "10.244.9.0/24", "via", node_ip["n2"], "proto", bridge.ROUTES_PROTO)
            nsenter(node_ns["n1"], "ip", "route", "add", "10.99.0.0/24", "via", node_ip["n2"], "proto", "static")
            unit = render_cni_host(cluster, cluster.host("n1"), None)[bridge.ROUTES_UNIT].content.decode()
            for line in unit.splitlines():
                if line.startswith("ExecStart="):
                    nsenter(node_ns["n1"], *shlex.split(line.removeprefix("ExecStart=")))
            nat = nsenter(node_ns["n1"], "iptables", "-w", "-t", "nat", "-S", "POSTROUTING").stdout
            assert nat.count("MASQUERADE") == 1
            ours = nsenter(node_ns["n1"], "ip", "-o", "route", "show", "proto", bridge.ROUTES_PROTO).stdout.split("\n")
            assert [line.split()[:3] for line in ours if line] == [[str(cidrs["n2"]), "via", node_ip["n2"]]]
            assert "10.99.0.0/24" in nsenter(node_ns["n1"], "ip", "route", "show").stdout
        finally:
            for name, result in results.items():
                runtimes[name].delete(pod_ns[name], f"pod-{name}-{tag}", result)
        # DEL released the addresses host-local had reserved
        for name in results:
            reserved = [p.name for p in (tmp_path / f"ipam-{name}" / "kubeprov-bridge").glob("*")
                        if not p.name.startswith(("last_reserved_ip", "lock"))]
            assert reserved == [], reserved
