"""The offline bundle tests/e2e/bundle.py assembles from KUBEPROV_E2E_BUNDLE, checked for real.

KUBEPROV_E2E_BUNDLE=DIR is a directory of Kubernetes binaries (DIR/bin/* or DIR/*) or a finished
bundle. The bundle is assembled into KUBEPROV_E2E_CACHE (default <lab cache>/e2e-bundle,
i.e. /var/cache/kubeprov/e2e-bundle: outside the repository, never committed) and checked:
every image reference the e2e clusters' manifests use is there, SHA256SUMS verifies, `kubeprov
artifacts bundle` accepts it for each cluster shape, a second assemble() does no work; then a
throwaway containerd (its own root, state and socket in a temporary directory) imports every
image and runs each one's binaries: version checks, the rendered haproxy.cfg / keepalived.conf
checked by the image's own haproxy / keepalived, etcd started with the v1.28 static pod's flags
and probed where the kubelet probes it, iptables rules with the modules kube-proxy uses, and the
CoreDNS STAND-IN and echo images answering on their ports inside their network namespaces.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

try:  # tests/e2e on pythonpath: the same module object test_up_e2e.py imports as `bundle`
    import bundle as assembly
except ImportError:
    from e2e import bundle as assembly
from testkit import run_cli, stop, write_cluster

SOURCE = os.environ.get("KUBEPROV_E2E_BUNDLE")

pytestmark = [
    pytest.mark.e2e, pytest.mark.integration,
    pytest.mark.skipif(not SOURCE, reason="KUBEPROV_E2E_BUNDLE=DIR (real Kubernetes binaries, or a bundle) is not set"),
]


def _out() -> Path:
    from provision.lab.layout import cache_root

    return Path(os.environ.get("KUBEPROV_E2E_CACHE") or cache_root() / "e2e-bundle")


@pytest.fixture(scope="module")
def assembled() -> tuple[Path, list]:
    """(the bundle, what provision.artifacts would still refuse it for)."""
    try:
        return assembly.assemble(Path(SOURCE), _out()), []
    except assembly.BundleIncomplete as exc:
        return exc.bundle, exc.problems


@pytest.fixture(scope="module")
def version(assembled) -> str:
    bundle, _ = assembled
    out = subprocess.run([str(bundle / "bin/kubelet"), "--version"], capture_output=True, text=True, check=True).stdout
    return out.split()[-1]


def test_every_image_reference_the_manifests_use_is_in_the_bundle(assembled, version):
    from provision.artifacts.bundle import image_index, read_sums
    from provision.artifacts.images import normalise

    bundle, _ = assembled
    sums, problems = read_sums(bundle)
    assert not problems
    index, problems = image_index(bundle, sums)
    assert not problems
    wanted = assembly.needed_images(version)
    assert {"kube-apiserver", "kube-proxy", "etcd", "pause", "coredns", "haproxy", "keepalived"} <= {
        assembly._component(ref) for ref in wanted
    }
    missing = [ref for ref in [*wanted, assembly.ECHO_IMAGE] if normalise(ref) not in index]
    assert not missing, f"no tarball holds {missing}"


def test_sha256sums_verifies(assembled):
    from provision.artifacts.bundle import check_integrity

    bundle, _ = assembled
    _, problems = check_integrity(bundle)
    assert not problems, problems
    check = subprocess.run(["sha256sum", "--check", "--strict", "--quiet", "SHA256SUMS"], cwd=bundle, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_artifacts_layer_accepts_the_bundle_for_every_e2e_shape(assembled, version, tmp_path):
    """`kubeprov artifacts bundle --from DIR -c FILE` for each cluster shape the e2e builds."""
    bundle, problems = assembled
    refused = {}
    for name, doc in assembly.e2e_cluster_documents(version).items():
        file = write_cluster(tmp_path / f"{name}.yaml", **doc, artifacts={"source": "bundle", "bundleDir": str(bundle)})
        code, out, err = run_cli("artifacts", "bundle", "--from", bundle, "-c", file)
        if code != 0:
            refused[name] = err.strip()
    assert not problems and not refused, f"assemble(): {[str(p) for p in problems]}; kubeprov artifacts bundle: {refused}"


def test_a_second_assemble_does_no_work(assembled):
    bundle, _ = assembled
    if Path(SOURCE).resolve() == bundle:
        pytest.skip("KUBEPROV_E2E_BUNDLE is a finished bundle: assemble() returns it unchanged")
    before = {p: p.stat().st_mtime_ns for p in [bundle / "SHA256SUMS", *sorted((bundle / "images").iterdir())]}
    started = time.monotonic()
    try:
        again = assembly.assemble(Path(SOURCE), bundle)
    except assembly.BundleIncomplete as exc:
        again = exc.bundle
    assert again == bundle
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert time.monotonic() - started < 30


# --- a throwaway containerd ---------------------------------------------------------------------


class Containerd:
    def __init__(self, root: Path):
        self.root, self.socket = root, root / "containerd.sock"
        self.started: list[str] = []
        self.count = 0

    def ctr(self, *args, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *map(str, args)],
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"ctr {' '.join(map(str, args))} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
        return proc

    def _id(self, ref: str) -> str:
        self.count += 1
        return f"t{self.count}-{assembly._component(ref)}"

    @staticmethod
    def _options(mounts: dict[str, str] | None, writable: tuple[str, ...], privileged: bool, netns: int | None,
                 caps: tuple[str, ...]) -> list[str]:
        found = ["--privileged"] if privileged else []
        found += [f"--cap-add={cap}" for cap in caps]
        if netns is not None:  # join a sandbox's network namespace, as a pod's containers do
            found.append(f"--with-ns=network:/proc/{netns}/ns/net")
        for dst, src in (mounts or {}).items():
            found.append(f"--mount=type=bind,src={src},dst={dst},options=rbind:{'rw' if dst in writable else 'ro'}")
        return found

    def run(self, ref: str, *command: str, mounts: dict[str, str] | None = None, writable: tuple[str, ...] = (),
            privileged: bool = False, netns: int | None = None, caps: tuple[str, ...] = ()) -> tuple[int, str]:
        """`ctr run --rm`: (exit code, stdout + stderr). No command: the image's entrypoint and Cmd."""
        options = self._options(mounts, writable, privileged, netns, caps)
        proc = self.ctr("run", "--rm", "--snapshotter", "native", *options, ref, self._id(ref), *command, check=False, timeout=120)
        return proc.returncode, proc.stdout + proc.stderr

    def start(self, ref: str, *command: str, mounts: dict[str, str] | None = None, writable: tuple[str, ...] = (),
              privileged: bool = False, netns: int | None = None, caps: tuple[str, ...] = ()) -> tuple[str, int, Path]:
        """`ctr run -d`: (container id, its pid on this machine, its log file)."""
        cid = self._id(ref)
        log = self.root / f"{cid}.log"
        options = self._options(mounts, writable, privileged, netns, caps)
        self.ctr("run", "-d", "--snapshotter", "native", f"--log-uri=file://{log}", *options, ref, cid, *command)
        self.started.append(cid)
        return cid, self.pid(cid), log

    def pid(self, cid: str) -> int:
        for line in self.ctr("task", "ls").stdout.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == cid:
                return int(fields[1])
        raise AssertionError(f"no task {cid}")

    def status(self, cid: str) -> str:
        for line in self.ctr("task", "ls").stdout.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == cid:
                return fields[2]
        return "GONE"

    def remove(self, cid: str) -> None:
        if self.status(cid) == "RUNNING":
            self.ctr("task", "kill", "--signal", "SIGKILL", cid, check=False)
            deadline = time.monotonic() + 15
            while self.status(cid) == "RUNNING" and time.monotonic() < deadline:
                time.sleep(0.2)
        self.ctr("task", "rm", "--force", cid, check=False)
        self.ctr("containers", "rm", cid, check=False)
        if cid in self.started:
            self.started.remove(cid)


@pytest.fixture(scope="module")
def containerd(assembled, tmp_path_factory):
    missing = [tool for tool in ("containerd", "ctr", "runc", "nsenter", "curl") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"missing {missing} (scripts/setup installs containerd and runc)")
    bundle, _ = assembled
    root = tmp_path_factory.mktemp("containerd")
    config = root / "config.toml"
    config.write_text('version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n')
    daemon_handle = Containerd(root)
    with open(root / "containerd.log", "w") as log:
        daemon = subprocess.Popen(
            ["containerd", "--config", config, "--root", root / "root", "--state", root / "state", "--address", daemon_handle.socket],
            stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while daemon_handle.ctr("version", check=False).returncode != 0:
            assert daemon.poll() is None and time.monotonic() < deadline, (root / "containerd.log").read_text()[-3000:]
            time.sleep(0.2)
        for tarball in sorted((bundle / "images").glob("*.tar")):
            daemon_handle.ctr("images", "import", "--snapshotter", "native", tarball, timeout=300)
        yield daemon_handle
    finally:
        for cid in list(daemon_handle.started):
            daemon_handle.remove(cid)
        stop(daemon)
    assert str(root) not in Path("/proc/self/mounts").read_text()


@pytest.fixture
def sandbox(containerd, version):
    """A pod's sandbox: the pause image running; its network namespace is the pod's (pid returned)."""
    cid, pid, _ = containerd.start(_ref(version, "pause"))
    yield pid
    containerd.remove(cid)


def _ref(version: str, component: str) -> str:
    if component == "echo":
        return assembly.ECHO_IMAGE
    return next(ref for ref in assembly.needed_images(version) if assembly._component(ref) == component)


def test_containerd_imports_every_image_under_its_reference(containerd, version):
    from provision.artifacts.images import normalise

    listed = set(containerd.ctr("images", "ls", "--quiet").stdout.split())
    wanted = {normalise(ref) for ref in [*assembly.needed_images(version), assembly.ECHO_IMAGE]}
    assert wanted <= listed, wanted - listed
    check = containerd.ctr("images", "check").stdout
    assert "incomplete" not in check and "missing" not in check, check


VERSION_CHECKS = [
    ("kube-apiserver", ["kube-apiserver", "--version"], r"Kubernetes {version}\b"),
    ("kube-controller-manager", ["kube-controller-manager", "--version"], r"Kubernetes {version}\b"),
    ("kube-scheduler", ["kube-scheduler", "--version"], r"Kubernetes {version}\b"),
    ("kube-proxy", ["/usr/local/bin/kube-proxy", "--version"], r"Kubernetes {version}\b"),
    ("kube-proxy", ["iptables", "--version"], r"iptables v[\d.]+ \(nf_tables\)"),
    ("kube-proxy", ["ip6tables", "--version"], r"ip6tables v[\d.]+ \(nf_tables\)"),
    ("kube-proxy", ["iptables-save", "--version"], r"iptables-save v[\d.]+ \(nf_tables\)"),
    ("kube-proxy", ["iptables-restore", "--version"], r"iptables-restore v[\d.]+ \(nf_tables\)"),
    ("kube-proxy", ["ip6tables-restore", "--version"], r"ip6tables-restore v[\d.]+ \(nf_tables\)"),
    ("kube-proxy", ["conntrack", "--version"], r"conntrack v[\d.]+"),
    ("etcd", ["etcd", "--version"], r"etcd Version: 3\.4\.23"),  # Debian's etcd under kubeadm's tag
    ("etcd", ["etcdctl", "version"], r"etcdctl version: 3\.4\.23"),
    ("haproxy", ["haproxy", "-v"], r"HAProxy version \d+\.\d+"),
    ("haproxy", ["docker-entrypoint.sh", "haproxy", "-vv"], r"HAProxy version \d+\.\d+"),
    ("keepalived", ["keepalived", "--version"], r"Keepalived v\d+\.\d+"),
    ("keepalived", ["/container/tool/run", "--version"], r"Keepalived v\d+\.\d+"),
    ("keepalived", ["curl", "--version"], r"curl \d+\.\d+"),
]


@pytest.mark.parametrize(("component", "command", "expected"), VERSION_CHECKS, ids=[f"{c}:{cmd[0]}" for c, cmd, _ in VERSION_CHECKS])
def test_each_image_runs_its_binaries(containerd, version, component, command, expected):
    code, out = containerd.run(_ref(version, component), *command)
    assert code == 0, out
    assert re.search(expected.format(version=re.escape(version)), out), out


def test_every_image_has_passwd_group_and_a_sticky_tmp(assembled):
    """Read from each tarball's layer (most images have no shell to ask)."""
    import tarfile

    bundle, _ = assembled
    for tarball in sorted((bundle / "images").glob("*.tar")):
        with tarfile.open(tarball) as archive:
            index = json.load(archive.extractfile("index.json"))
            manifest = json.load(archive.extractfile(f"blobs/sha256/{index['manifests'][0]['digest'].split(':')[1]}"))
            layer = archive.extractfile(f"blobs/sha256/{manifest['layers'][0]['digest'].split(':')[1]}")
            with tarfile.open(fileobj=layer, mode="r|*") as rootfs:  # gzip-compressed, as registries ship layers
                seen = {m.name: m for m in rootfs}
        assert {"etc/passwd", "etc/group", "tmp"} <= set(seen), tarball.name
        assert seen["tmp"].mode & 0o7777 == 0o1777, tarball.name


def test_kube_proxy_iptables_loads_the_modules_kube_proxy_uses(containerd, version, sandbox):
    """Privileged (as the DaemonSet is), in a pod's network namespace: the match modules kube-proxy's
    rules use load, and iptables-save / ip6tables read the tables back."""
    ref = _ref(version, "kube-proxy")
    commands = [
        ["iptables", "-w", "-t", "nat", "-N", "KUBE-TEST"],
        ["iptables", "-w", "-t", "nat", "-A", "KUBE-TEST", "-m", "comment", "--comment", "kubeprov", "-m", "conntrack", "--ctstate", "NEW",
         "-m", "statistic", "--mode", "random", "--probability", "0.5", "-m", "mark", "--mark", "0x4000/0x4000",
         "-m", "addrtype", "--dst-type", "LOCAL", "-p", "tcp", "-m", "tcp", "--dport", "80", "-j", "DNAT", "--to-destination", "10.1.2.3:8080"],
        ["iptables", "-w", "-t", "filter", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"],
        ["ip6tables", "-w", "-t", "nat", "-N", "KUBE-TEST"],
    ]
    for command in commands:
        code, out = containerd.run(ref, *command, privileged=True, netns=sandbox)
        assert code == 0, f"{command}: {out}"
    code, out = containerd.run(ref, "iptables-save", "-t", "nat", privileged=True, netns=sandbox)
    assert code == 0 and '-m comment --comment kubeprov' in out and "--to-destination 10.1.2.3:8080" in out, out
    code, out = containerd.run(ref, "ip6tables-save", "-t", "nat", privileged=True, netns=sandbox)
    assert code == 0 and ":KUBE-TEST" in out, out
    code, out = containerd.run(ref, "conntrack", "-L", privileged=True, netns=sandbox)
    assert code == 0, out


def _rendered_ha(version: str) -> dict:
    from provision.render.ha import HAPROXY_CFG, KEEPALIVED_CONF, render_ha

    cluster = assembly.e2e_clusters(version)["stacked-haproxy-keepalived"]
    cp = render_ha(cluster, cluster.first_control_plane, None)
    worker = render_ha(cluster, cluster.workers[0], None)
    return {"cp-haproxy.cfg": cp[HAPROXY_CFG].content, "keepalived.conf": cp[KEEPALIVED_CONF].content,
            "worker-haproxy.cfg": worker[HAPROXY_CFG].content}


def test_haproxy_checks_the_rendered_configs_and_answers_its_probe(containerd, version, tmp_path):
    rendered = _rendered_ha(version)
    ref = _ref(version, "haproxy")
    for name in ("cp-haproxy.cfg", "worker-haproxy.cfg"):
        (tmp_path / name).write_bytes(rendered[name])
        code, out = containerd.run(ref, "docker-entrypoint.sh", "haproxy", "-c", "-f", "/usr/local/etc/haproxy/haproxy.cfg",
                                   mounts={"/usr/local/etc/haproxy/haproxy.cfg": str(tmp_path / name)})
        assert code == 0 and "valid" in out.lower(), f"{name}: {out}"
    # As the static pod runs it: no command, the image's entrypoint and Cmd, the worker's config. One
    # change: `ctr run` caps a container's RLIMIT_NOFILE at 1024, too few for maxconn 4000 (haproxy
    # wants ~8000 descriptors and, as the user haproxy, may not raise the hard limit); the kubelet's
    # containers inherit containerd's own limit instead (CRI drops the default rlimits).
    config = rendered["worker-haproxy.cfg"].decode()
    assert re.search(r"^\s*maxconn \d+$", config, re.M), config
    (tmp_path / "run-haproxy.cfg").write_text(re.sub(r"^(\s*)maxconn \d+$", r"\1maxconn 200", config, flags=re.M))
    cid, pid, log = containerd.start(ref, mounts={"/usr/local/etc/haproxy/haproxy.cfg": str(tmp_path / "run-haproxy.cfg")})
    try:
        from provision.render.ha import HAPROXY_HEALTH_PORT

        assert _wait_http(pid, HAPROXY_HEALTH_PORT, "/healthz") == 200, log.read_text()
        user = subprocess.run(["ps", "-o", "user=", "--ppid", str(pid)], capture_output=True, text=True).stdout.split()
        assert user and set(user) <= {"99", "haproxy"}, user  # the official image's user, not root
    finally:
        containerd.remove(cid)


def test_keepalived_checks_the_rendered_config(containerd, version, tmp_path, sandbox):
    """keepalived's own config test, in a pod network namespace that has the configured interface."""
    cluster = assembly.e2e_clusters(version)["stacked-haproxy-keepalived"]
    interface = cluster.load_balancer.interface
    link = subprocess.run(["nsenter", "-t", str(sandbox), "-n", "ip", "link", "add", interface, "type", "veth", "peer", "name", f"{interface}p"],
                          capture_output=True, text=True)
    assert link.returncode == 0, link.stderr
    rendered = _rendered_ha(version)
    (tmp_path / "keepalived.conf").write_bytes(rendered["keepalived.conf"])
    code, out = containerd.run(
        _ref(version, "keepalived"), "keepalived", "--config-test", "-f", "/usr/local/etc/keepalived/keepalived.conf",
        mounts={"/usr/local/etc/keepalived/keepalived.conf": str(tmp_path / "keepalived.conf")},
        netns=sandbox,
    )
    assert code == 0, out
    # Then as the static pod runs it (privileged here for VRRP's raw sockets; the pod adds NET_ADMIN,
    # NET_BROADCAST, NET_RAW): the image's entrypoint, the VRRP instance up, and the check script's
    # curl run and failing (no haproxy behind the address), which keepalived logs.
    cid, _, log = containerd.start(
        _ref(version, "keepalived"), privileged=True, netns=sandbox,
        mounts={"/usr/local/etc/keepalived/keepalived.conf": str(tmp_path / "keepalived.conf")},
    )
    try:
        deadline = time.monotonic() + 30
        script = re.compile(r"VRRP_Script\(check_apiserver\) failed \(exited with status (\d+)\)")
        while not script.search(log.read_text()):
            assert containerd.status(cid) == "RUNNING" and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        status = int(script.search(log.read_text()).group(1))
        assert status not in (126, 127), f"the check script could not run: {log.read_text()[-3000:]}"  # curl's own failure, not exec's
    finally:
        containerd.remove(cid)


def _in_netns(pid: int, *command: str, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", "-t", str(pid), "-n", *command], capture_output=True, text=True, timeout=timeout)


def _wait_http(pid: int, port: int, path: str, seconds: float = 20) -> int:
    deadline = time.monotonic() + seconds
    while True:
        proc = _in_netns(pid, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", f"http://127.0.0.1:{port}{path}")
        if proc.stdout.strip() == "200" or time.monotonic() > deadline:
            return int(proc.stdout.strip() or 0)
        time.sleep(0.3)


def test_etcd_runs_with_the_static_pods_flags_and_answers_its_probes(containerd, version, tmp_path):
    """Debian's etcd 3.4.23 with the flags the v1.28 stacked etcd manifest renders (cp1's address
    swapped for loopback, certificates made here), probed where the kubelet probes it."""
    from provision.render.etcd import render_etcd

    cluster = assembly.e2e_clusters(version)["stacked"]
    host = cluster.first_control_plane
    pod = yaml.safe_load(next(f for p, f in render_etcd(cluster, host, None).items() if p.suffix == ".yaml").content)
    container = pod["spec"]["containers"][0]
    command = [arg.replace(host.address, "127.0.0.1") for arg in container["command"]]
    pki = tmp_path / "pki"
    pki.mkdir()
    openssl = lambda *args: subprocess.run(["openssl", *args], cwd=pki, check=True, capture_output=True)  # noqa: E731
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-subj", "/CN=etcd-ca", "-days", "1")
    (pki / "ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")
    for name in ("server", "peer"):
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={host.name}")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", f"{name}.crt",
                "-days", "1", "-extfile", "ext")
    for key in pki.glob("*.key"):
        key.chmod(0o644)  # read by etcd as root in the container; a test key
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    # The manifest's two hostPath mounts (data dir, PKI dir), backed by directories made here.
    mounts = {m["mountPath"]: str(pki if "pki" in m["mountPath"] else data) for m in container["volumeMounts"]}
    cid, pid, log = containerd.start(_ref(version, "etcd"), *command, mounts=mounts, writable=(cluster.etcd.data_dir,))
    try:
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = (container.get(kind) or {}).get("httpGet")
            if get:
                assert _wait_http(pid, get["port"], get["path"]) == 200, f"{kind} {get['path']}: {log.read_text()[-3000:]}"
        health = _in_netns(pid, "curl", "-s", "--cacert", str(pki / "ca.crt"), "--cert", str(pki / "server.crt"), "--key", str(pki / "server.key"),
                           "https://127.0.0.1:2379/health")
        assert '"health":"true"' in health.stdout, health.stdout + health.stderr
    finally:
        containerd.remove(cid)


def test_pause_holds_until_stopped(containerd, version):
    cid, pid, log = containerd.start(_ref(version, "pause"))
    try:
        time.sleep(1)
        assert containerd.status(cid) == "RUNNING", log.read_text()
        user = subprocess.run(["ps", "-o", "uid=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
        assert user == "65535"
        containerd.ctr("task", "kill", "--signal", "SIGTERM", cid)
        deadline = time.monotonic() + 10
        while containerd.status(cid) == "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert containerd.status(cid) == "STOPPED"
    finally:
        containerd.remove(cid)


def test_coredns_stand_in_answers_the_probes_and_tcp_53(containerd, version):
    """The STAND-IN answers the Deployment's probes and accepts TCP 53; it answers no DNS."""
    from provision.render.addons.coredns import deployment

    cluster = assembly.e2e_clusters(version)["stacked"]
    container = deployment(cluster)["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    # The Deployment passes args to the image's entrypoint; ctr's command replaces both, so say both.
    entrypoint = "/coredns"
    cid, pid, log = containerd.start(_ref(version, "coredns"), entrypoint, *container["args"])
    try:
        for kind in ("livenessProbe", "readinessProbe"):
            get = container[kind]["httpGet"]
            port = ports.get(get["port"], get["port"])
            assert _wait_http(pid, port, get["path"]) == 200, f"{kind}: {log.read_text()}"
        tcp = _in_netns(pid, "bash", "-c", "echo > /dev/tcp/127.0.0.1/53")
        assert tcp.returncode == 0, tcp.stderr + log.read_text()
        assert "STAND-IN" in log.read_text()
    finally:
        containerd.remove(cid)


def test_echo_image_answers_with_its_hostname(containerd):
    cid, pid, log = containerd.start(assembly.ECHO_IMAGE)
    try:
        hostname = containerd.ctr("task", "exec", "--exec-id", "hostname", cid, "hostname").stdout.strip()
        assert hostname
        for _ in range(2):  # every connection, not just the first
            deadline = time.monotonic() + 10
            while True:
                reply = _in_netns(pid, "bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{assembly.ECHO_PORT}; cat <&3")
                if reply.returncode == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            assert reply.stdout == f"{hostname}\n", reply.stdout + reply.stderr + log.read_text()
    finally:
        containerd.remove(cid)
