"""The HA API endpoint files: kube-vip, haproxy + keepalived, the workers' local API load balancer.

What the rules are, independently of the code: kube-vip's manifest carries the VIP, interface
and port and leader election; on ≥ 1.29 the first control plane bootstraps with super-admin.conf
(kube-vip issue #684: admin.conf has no RBAC before kubeadm binds kubeadm:cluster-admins) while
everyone else - and everyone before 1.29, when admin.conf was system:masters - uses admin.conf.
haproxy and keepalived are judged by the real binaries (`haproxy -c`, `keepalived -t`), and the
haproxy config is run for real in front of TLS servers standing in for API servers.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
import uuid
from pathlib import Path, PurePosixPath

import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml
from testkit import hosts, openssl_x509, stop

from provision.config.loader import cluster_from_data
from provision.config.models import Cluster
from provision.errors import ConfigError
from provision.pki.kubeconfigs import parse as parse_kubeconfig
from provision.pki.store import PKIStore, read_material
from provision.render import HOST_RENDERERS, render_hosts
from provision.render import ha

MANIFESTS = PurePosixPath("/etc/kubernetes/manifests")
NEWEST = min(35, int(kubernetes_validate.utils.latest_version().split(".")[1]))
MINORS = range(28, NEWEST + 1)
VIP = "10.0.0.100"


def make(tmp_path: Path | None = None, **kwargs) -> Cluster:
    return Cluster.model_validate(make_doc(tmp_path, **kwargs))


def refused(**kwargs) -> ConfigError:
    """The loader's (`config validate`'s) error for the cluster make(**kwargs) would build."""
    with pytest.raises(ConfigError) as caught:
        cluster_from_data(make_doc(**kwargs), "cluster.yaml")
    return caught.value


def make_doc(tmp_path: Path | None = None, *, version: str = "v1.31.4", cps: int = 3, workers: int = 1, **overrides) -> dict:
    doc = {
        "apiVersion": "kubeprov.io/v1alpha1",
        "kind": "Cluster",
        "name": "ha",
        "kubernetesVersion": version,
        "hosts": hosts(cps, workers),
        "controlPlaneEndpoint": f"{VIP}:6443",
        "certificates": {"keyAlgorithm": "ECDSA-P256"},
    }
    if tmp_path is not None:
        doc["clusterDir"] = str(tmp_path / "cluster")
    doc.update(overrides)
    return doc


def validate_strictly(doc: dict) -> None:
    for minor in MINORS:
        try:
            kubernetes_validate.validate(doc, f"1.{minor}", strict=True)
        except kubernetes_validate.utils.ValidationError as exc:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']} invalid for 1.{minor}: {str(exc).splitlines()[0]}")


def pod(tree, name: str) -> dict:
    return yaml.safe_load(tree[MANIFESTS / f"{name}.yaml"].content)


def env_of(doc: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in doc["spec"]["containers"][0]["env"]}


def kubeconfig_host_path(doc: dict) -> str:
    (volume,) = [v for v in doc["spec"]["volumes"] if v["name"] == "kubeconfig"]
    return volume["hostPath"]["path"]


def test_ha_renderer_is_registered():
    assert ha.render_ha in HOST_RENDERERS


# --- kube-vip ----------------------------------------------------------------------------------


@pytest.mark.parametrize("minor", MINORS)
def test_kube_vip_on_every_control_plane_only_and_valid(minor):
    cluster = make(version=f"v1.{minor}.0", loadBalancer={"interface": "ens3"})
    assert cluster.load_balancer_mode.value == "kube-vip"  # a VIP no host has
    for host in cluster.hosts:
        tree = ha.render_ha(cluster, host, None)
        if "worker" in host.roles:
            assert tree == {}
            continue
        assert set(tree) == {MANIFESTS / "kube-vip.yaml"}
        doc = pod(tree, "kube-vip")
        validate_strictly(doc)
        env = env_of(doc)
        assert env["address"] == VIP and env["port"] == "6443" and env["vip_interface"] == "ens3"
        assert env["vip_arp"] == "true" and env["cp_enable"] == "true" and env["vip_leaderelection"] == "true"
        assert doc["spec"]["hostNetwork"] is True
        assert "NET_ADMIN" in doc["spec"]["containers"][0]["securityContext"]["capabilities"]["add"]
        # kube-vip dials kubernetes:<port>: it must resolve to this host's API server
        assert {"ip": "127.0.0.1", "hostnames": ["kubernetes"]} in doc["spec"]["hostAliases"]


@pytest.mark.parametrize("minor", MINORS)
def test_kube_vip_super_admin_only_while_the_first_control_plane_bootstraps(minor):
    cluster = make(version=f"v1.{minor}.2")
    first, *others = cluster.control_planes
    bootstrap_path = "/etc/kubernetes/super-admin.conf" if minor >= 29 else "/etc/kubernetes/admin.conf"
    assert kubeconfig_host_path(pod(ha.render_ha(cluster, first, None), "kube-vip")) == bootstrap_path
    for host in others:
        assert kubeconfig_host_path(pod(ha.render_ha(cluster, host, None), "kube-vip")) == "/etc/kubernetes/admin.conf"
    for host in cluster.control_planes:
        after = ha.render_kube_vip_after_bootstrap(cluster, host)
        doc = pod(after, "kube-vip")
        validate_strictly(doc)
        assert kubeconfig_host_path(doc) == "/etc/kubernetes/admin.conf"
        # the switch changes which file backs the mount, nothing else
        before = pod(ha.render_ha(cluster, host, None), "kube-vip")
        before["spec"]["volumes"] = doc["spec"]["volumes"]
        assert before == doc
    assert ha.render_kube_vip_after_bootstrap(cluster, cluster.workers[0]) == {}


@pytest.mark.parametrize("version", ["v1.28.9", "v1.29.4", "v1.35.0"])
def test_kube_vip_kubeconfig_is_a_file_the_pki_puts_on_that_host(tmp_path, version):
    cluster = make(tmp_path, version=version, workers=0)
    store = PKIStore(cluster, tmp_path / "cluster")
    store.generate()
    trees = render_hosts(cluster, read_material(store))
    for host in cluster.control_planes:
        for tree in (trees[host.name], ha.render_kube_vip_after_bootstrap(cluster, host)):
            path = PurePosixPath(kubeconfig_host_path(pod(tree, "kube-vip")))
            assert path in trees[host.name], f"{path} is not rendered on {host.name}"
            # and it is a kubeconfig for the endpoint kube-vip serves
            assert parse_kubeconfig(trees[host.name][path].content).server == f"https://{VIP}:6443"


def test_kube_vip_needs_endpoint_port_equal_to_api_server_port():
    """Refused by the model (so by `config validate`), explicit or by default for a VIP."""
    for lb in ({"mode": "kube-vip"}, {}):
        error = refused(controlPlaneEndpoint=f"{VIP}:8443", loadBalancer=lb)
        assert error.field == "controlPlaneEndpoint" and "differs from apiServerPort 6443" in error.message
    assert refused(loadBalancer={"mode": "kube-vip"}, controlPlaneEndpoint=None).field == "controlPlaneEndpoint"


def test_no_load_balancer_no_files():
    cluster = make(controlPlaneEndpoint="api.example.test:6443")
    assert cluster.load_balancer_mode.value == "none"
    assert all(ha.render_ha(cluster, host, None) == {} for host in cluster.hosts)


# --- haproxy + keepalived ----------------------------------------------------------------------


def haproxy_check(cfg: bytes, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / f"haproxy-{uuid.uuid4().hex[:6]}.cfg"
    path.write_bytes(cfg)
    return subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)


@contextlib.contextmanager
def netns_with_link(name: str):
    """A network namespace of our own holding a link `name` (keepalived checks interfaces exist).

    A veth pair, both ends inside the namespace: this kernel has no dummy module."""
    ns = f"kpv-ha-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", name, "type", "veth", "peer", "name", "peer0"], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", name, "up"], check=True)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)


def keepalived_check(conf: bytes, tmp_path: Path, ns: str) -> subprocess.CompletedProcess:
    path = tmp_path / f"keepalived-{uuid.uuid4().hex[:6]}.conf"
    path.write_bytes(conf)
    return subprocess.run(
        ["ip", "netns", "exec", ns, "keepalived", "--config-test", "--log-console", "-f", str(path)],
        capture_output=True, text=True, timeout=30,
    )


needs_haproxy = pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed (scripts/setup)")
needs_keepalived = pytest.mark.skipif(shutil.which("keepalived") is None, reason="keepalived not installed (scripts/setup)")


@needs_haproxy
@needs_keepalived
@pytest.mark.parametrize("endpoint_port", [6443, 8443])
def test_haproxy_keepalived_accepted_by_the_real_binaries(tmp_path, endpoint_port):
    cluster = make(
        controlPlaneEndpoint=f"{VIP}:{endpoint_port}",
        loadBalancer={"mode": "haproxy-keepalived", "interface": "ens5", "virtualRouterID": 77},
    )
    priorities = []
    with netns_with_link("ens5") as ns:
        for host in cluster.hosts:
            tree = ha.render_ha(cluster, host, None)
            if host not in cluster.control_planes:
                assert tree == {}
                continue
            assert set(tree) == {
                MANIFESTS / "haproxy.yaml", MANIFESTS / "keepalived.yaml",
                PurePosixPath("/etc/haproxy/haproxy.cfg"), PurePosixPath("/etc/keepalived/keepalived.conf"),
            }
            for name in ("haproxy", "keepalived"):
                validate_strictly(pod(tree, name))
            cfg = tree[PurePosixPath("/etc/haproxy/haproxy.cfg")].content
            proc = haproxy_check(cfg, tmp_path)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            text = cfg.decode()
            # the VIP only, never a wildcard: with equal ports the API server owns its own address
            assert re.search(rf"^\s*bind {re.escape(VIP)}:{endpoint_port} transparent$", text, re.M)
            servers = re.findall(r"^\s*server (\S+) (\S+) check$", text, re.M)
            assert servers == [(cp.name, f"{cp.advertise_address}:6443") for cp in cluster.control_planes]
            assert "option httpchk GET /readyz" in text and "check-ssl verify none" in text

            conf = tree[PurePosixPath("/etc/keepalived/keepalived.conf")].content
            proc = keepalived_check(conf, tmp_path, ns)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            text = conf.decode()
            assert "virtual_router_id 77" in text and "interface ens5" in text
            assert f"{VIP}/32 dev ens5" in text
            # its own haproxy's monitor (which fails with no API server behind it), not its own API server
            assert f"http://127.0.0.1:{ha.HAPROXY_SERVING_PORT}/serving" in text and "/readyz" not in text
            peers = re.search(r"unicast_peer \{([^}]*)\}", text).group(1).split()
            assert peers == [cp.advertise_address for cp in cluster.control_planes if cp != host]
            priorities.append(int(re.search(r"^\s*priority (\d+)$", text, re.M).group(1)))

            expected_bind = host.advertise_address if endpoint_port == 6443 else None
            assert ha.apiserver_bind_address(cluster, host) == expected_bind
    assert priorities == sorted(priorities, reverse=True) and len(set(priorities)) == len(priorities)


@needs_keepalived
def test_keepalived_check_catches_a_broken_config(tmp_path):
    """The check above means something: keepalived -t rejects what it should."""
    cluster = make(loadBalancer={"mode": "haproxy-keepalived", "interface": "ens5"})
    conf = ha.keepalived_conf(cluster, cluster.first_control_plane).encode()
    with netns_with_link("other0") as ns:  # the configured interface is missing here
        assert keepalived_check(conf, tmp_path, ns).returncode != 0
    with netns_with_link("ens5") as ns:
        assert keepalived_check(conf.replace(b"virtual_router_id", b"virtual_router"), tmp_path, ns).returncode != 0


def test_haproxy_keepalived_needs_an_ip_endpoint():
    """Refused by the model (so by `config validate`); tests/test_config_gate.py runs the CLI."""
    error = refused(controlPlaneEndpoint="api.example.test:6443", loadBalancer={"mode": "haproxy-keepalived"})
    assert error.field == "controlPlaneEndpoint" and "'api.example.test' is not an IP address" in error.message
    assert refused(loadBalancer={"mode": "haproxy-keepalived"}, controlPlaneEndpoint=None).field == "controlPlaneEndpoint"


def test_apiserver_keeps_its_default_bind_without_haproxy():
    cluster = make()
    assert all(ha.apiserver_bind_address(cluster, h) is None for h in cluster.hosts)


# --- the workers' local API load balancer ------------------------------------------------------


@needs_haproxy
def test_worker_local_lb_files_and_kubelet_conf(tmp_path):
    cluster = make(tmp_path, cps=2, workers=2, loadBalancer={"workerLocalLB": True, "workerLocalLBPort": 7443})
    store = PKIStore(cluster, tmp_path / "cluster")
    store.generate()
    trees = render_hosts(cluster, read_material(store))
    for host in cluster.hosts:
        tree = trees[host.name]
        kubelet = parse_kubeconfig(tree[PurePosixPath("/etc/kubernetes/kubelet.conf")].content)
        if host in cluster.workers:
            validate_strictly(pod(tree, "haproxy"))
            cfg = tree[PurePosixPath("/etc/haproxy/haproxy.cfg")].content
            assert haproxy_check(cfg, tmp_path).returncode == 0
            assert re.search(r"^\s*bind 127\.0\.0\.1:7443$", cfg.decode(), re.M)
            assert kubelet.server == "https://127.0.0.1:7443"
        else:  # control planes keep kube-vip; their kubelets talk to their own API server
            assert MANIFESTS / "haproxy.yaml" not in tree
            assert kubelet.server == f"https://{host.advertise_address}:6443"
    # the API server certificate must then be valid for 127.0.0.1
    for cp in cluster.control_planes:
        cert = openssl_x509(trees[cp.name][PurePosixPath("/etc/kubernetes/pki/apiserver.crt")].content)
        assert "127.0.0.1" in cert.ips and "localhost" in cert.dns


def test_without_worker_local_lb_the_apiserver_cert_has_no_loopback(tmp_path):
    cluster = make(tmp_path, cps=1, workers=1)
    store = PKIStore(cluster, tmp_path / "cluster")
    store.generate()
    trees = render_hosts(cluster, read_material(store))
    cert = openssl_x509(trees["cp1"][PurePosixPath("/etc/kubernetes/pki/apiserver.crt")].content)
    assert "127.0.0.1" not in cert.ips
    assert parse_kubeconfig(trees["w1"][PurePosixPath("/etc/kubernetes/kubelet.conf")].content).server == f"https://{VIP}:6443"


# --- haproxy really balancing (integration) ----------------------------------------------------


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def fake_apiservers(tmp_path: Path, addresses: list[str], port: int, ready: dict[str, bool]):
    """TLS servers standing in for kube-apiservers (a test double: no apiserver binary exists here).

    GET /readyz answers 200 or 500 as `ready` says; any other path answers with the server's
    address, so a client can tell which backend haproxy picked.
    """
    key, crt = tmp_path / "srv.key", tmp_path / "srv.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", crt, "-days", "1", "-subj", "/CN=kube-apiserver"],
        check=True, capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(crt, key)
    servers = []

    for address in addresses:

        class Handler(http.server.BaseHTTPRequestHandler):
            me = address

            def do_GET(self):  # noqa: N802
                ok = self.path != "/readyz" or ready[self.me]
                body = (self.me if self.path != "/readyz" else "ok").encode()
                self.send_response(200 if ok else 500)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer((address, port), Handler)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    try:
        yield
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@contextlib.contextmanager
def running_haproxy(cfg: bytes, tmp_path: Path):
    path = tmp_path / "run-haproxy.cfg"
    path.write_bytes(cfg)
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop(proc, timeout=10)


def _get(url: str) -> tuple[int, str]:
    context = ssl._create_unverified_context()  # the test double's self-signed certificate
    try:
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


@pytest.mark.integration
@needs_haproxy
def test_rendered_haproxy_sends_traffic_only_to_ready_api_servers(tmp_path):
    """The worker config, run by the real haproxy: 127.0.0.1:<port> → every control plane whose
    /readyz says 200; a control plane that is not ready gets no traffic."""
    api_port = _free_port("127.0.0.1")
    lb_port = _free_port("127.0.0.1")
    addresses = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
    cluster = Cluster.model_validate(
        {
            "apiVersion": "kubeprov.io/v1alpha1",
            "kind": "Cluster",
            "kubernetesVersion": "v1.31.0",
            "apiServerPort": api_port,
            "hosts": [{"name": f"cp{i}", "address": a, "roles": ["control-plane"]} for i, a in enumerate(addresses, 1)]
            + [{"name": "w1", "address": "127.0.0.21", "roles": ["worker"]}],
            "loadBalancer": {"workerLocalLB": True, "workerLocalLBPort": lb_port},
        }
    )
    cfg = ha.render_ha(cluster, cluster.host("w1"), None)[PurePosixPath("/etc/haproxy/haproxy.cfg")].content
    ready = {a: True for a in addresses}
    ready["127.0.0.12"] = False
    with fake_apiservers(tmp_path, addresses, api_port, ready), running_haproxy(cfg, tmp_path) as proc:
        health_url = f"http://127.0.0.1:{ha.HAPROXY_HEALTH_PORT}/healthz"
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            with contextlib.suppress(OSError):
                if _get(health_url)[0] == 200:
                    break
            assert time.monotonic() < deadline, "haproxy never answered its health endpoint"
            time.sleep(0.05)
        time.sleep(3)  # the rendered checks (every 1 s, down after 2 failures) mark the unready server down
        answers = [_get(f"https://127.0.0.1:{lb_port}/version") for _ in range(30)]
        assert {status for status, _ in answers} == {200}
        assert {body for _, body in answers} == {"127.0.0.11", "127.0.0.13"}
        # What keepalived tracks: haproxy can serve while one API server answers, and not once none does.
        serving_url = f"http://127.0.0.1:{ha.HAPROXY_SERVING_PORT}/serving"
        assert _get(serving_url)[0] == 200
        ready.update({a: False for a in addresses})
        time.sleep(3)
        assert _get(serving_url)[0] == 503
        assert _get(health_url)[0] == 200  # liveness is haproxy itself: it is not restarted for that
