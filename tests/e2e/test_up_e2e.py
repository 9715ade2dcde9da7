"""`kubeprov up` for real: real Kubernetes binaries and images on the nspawn lab, every topology
built from a fresh lab in ONE `up`.

Needs KUBEPROV_E2E_BUNDLE=DIR: a directory of real Kubernetes binaries (DIR/bin/kubelet, kubeadm,
kubectl, kube-apiserver, …) or a complete offline bundle. tests/e2e/bundle.py assembles the images
from those binaries and this machine's Debian packages. No registry in this machine's reach ships
them, so without the variable every test here skips, saying so.

Stand-ins, named as such: CoreDNS runs a STAND-IN image (no CoreDNS binary can be built here; its
pods become Ready but answer no DNS), so nothing here proves DNS. etcd is Debian's real 3.4 under
kubeadm's image tag. Everything else is the real thing.

Per topology: every node Ready; every control-plane pod Ready (not only Running); a pod reaches a
Service whose only backend is on another node (kube-proxy + the bridge CNI across nodes); a
second `up` changes nothing and takes < 3 s; real kubeadm reads the cluster's configuration
(`certs check-expiration`, `token list`). HA: the VIP holder crashes (link down, processes killed)
while /readyz is probed through the VIP every 100 ms; the API answers again within 3 s and a new
pod runs. External etcd: with one member stopped, the API keeps serving writes.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from provision.lab.access import ssh_args
from provision.lab.topologies import TOPOLOGIES, cluster_document
from provision.lab.testing import unavailable_reason
from testkit import run_cli

SOURCE = os.environ.get("KUBEPROV_E2E_BUNDLE")

# Every e2e module's marks (each imports them): a lab test that skips, saying why, without real binaries.
E2E_MARKS = [
    pytest.mark.e2e, pytest.mark.lab,
    pytest.mark.skipif(not SOURCE, reason="KUBEPROV_E2E_BUNDLE=DIR (real Kubernetes binaries) is not set: "
                                          "no registry here ships them, so the e2e suite needs a bundle built beforehand"),
]
pytestmark = E2E_MARKS

ECHO_IMAGE = "kubeprov.test/echo:1"  # tests/e2e/bundle.py: answers TCP 8080 with its pod's hostname


@dataclass
class Built:
    topology: str
    cluster_file: Path
    info: object  # LabInfo
    bundle: Path
    doc: dict
    first_up_seconds: float = 0.0
    first_up_output: str = ""
    notes: dict = field(default_factory=dict)

    @property
    def admin(self) -> Path:
        return Path(self.doc["clusterDir"]) / "kubeconfigs" / "admin.conf"

    def kubectl(self, *args: str, check: bool = True, timeout: float = 120, stdin: str | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(self.bundle / "bin" / "kubectl"), f"--kubeconfig={self.admin}", *args], input=stdin,
                              capture_output=True, text=True, timeout=timeout)
        if check:
            assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
        return proc

    def ssh(self, name: str, command: str, *, check: bool = True, stdin: bytes | None = None, timeout: float = 120):
        host = next(h for h in self.info.hosts if h.name == name)
        proc = subprocess.run(ssh_args(host.address, self.info.key, self.info.known_hosts) + [command], input=stdin,
                              capture_output=True, timeout=timeout)
        if check:
            assert proc.returncode == 0, f"{name}: `{command}`: {proc.stderr.decode(errors='replace')}"
        return proc

    def up(self, timeout: float = 1800) -> tuple[int, str, str, float]:
        started = time.monotonic()
        code, out, err = run_cli("up", "--lab", "--no-merge-kubeconfig", "-c", self.cluster_file, timeout=timeout)
        return code, out, err, time.monotonic() - started

    @property
    def control_planes(self) -> list[str]:
        return [h["name"] for h in self.doc["hosts"] if "control-plane" in h["roles"]]

    @property
    def nodes(self) -> list[str]:
        return [h["name"] for h in self.doc["hosts"] if {"control-plane", "worker"} & set(h["roles"])]


def _kubernetes_version(bundle: Path) -> str:
    out = subprocess.run([str(bundle / "bin" / "kubelet"), "--version"], capture_output=True, text=True, check=True).stdout
    return out.split()[-1]  # "Kubernetes v1.28.4"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    from bundle import assemble

    return assemble(Path(SOURCE).resolve(), Path(os.environ.get("KUBEPROV_E2E_CACHE", "/var/cache/kubeprov/e2e-bundle")))


# This topology's hosts are given to kubeprov by DNS names, resolved through /etc/hosts on this
# machine: `up` must learn their IPs on the hosts (provision/addresses.py) and build the same cluster.
BY_NAME = "worker-local-lb"


def named_hosts(doc: dict, info, tmp: Path) -> tuple[dict, list[str]]:
    """`doc` with every host's address a name (NAME.LAB.kubeprov.test), a known_hosts that knows
    the names, and the /etc/hosts lines that resolve them."""
    lab = info.name
    names = {h.name: f"{h.name}.{lab}.kubeprov.test" for h in info.hosts}
    known = tmp / "known_hosts"
    lines = Path(info.known_hosts).read_text().splitlines()
    by_ip = {h.address: names[h.name] for h in info.hosts}
    extra = []
    for line in lines:  # "m1-1,10.213.0.11 ssh-ed25519 AAAA…": the same key under the name
        patterns, _, key = line.partition(" ")
        extra += [f"{by_ip[p]} {key}" for p in patterns.split(",") if p in by_ip]
    known.write_text("\n".join(lines + extra) + "\n")
    for host in doc["hosts"]:
        host["address"] = names[host["name"]]
        host.pop("internalAddress", None)
        host["ssh"]["knownHosts"] = str(known)
    return doc, [f"{h.address} {names[h.name]}  # kubeprov e2e {lab}" for h in info.hosts]


def add_etc_hosts(lines: list[str]) -> None:
    with open("/etc/hosts", "a") as hosts:
        hosts.write("".join(line + "\n" for line in lines))


def remove_etc_hosts(lines: list[str]) -> None:
    text = Path("/etc/hosts").read_text().splitlines(keepends=True)
    Path("/etc/hosts").write_text("".join(line for line in text if line.rstrip("\n") not in lines))  # in place: may be a bind mount


@pytest.fixture(scope="module", params=list(TOPOLOGIES))
def built(request, bundle, tmp_path_factory):
    from provision.lab import lifecycle

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    topology = TOPOLOGIES[request.param]
    tmp = tmp_path_factory.mktemp(request.param)
    name = f"e{os.getpid() % 10000}{list(TOPOLOGIES).index(request.param)}"
    info = lifecycle.up(name, topology.hosts, control_planes=topology.control_planes)
    etc_hosts: list[str] = []
    try:
        doc = cluster_document(request.param, info.cluster_file, info.hosts, version=_kubernetes_version(bundle),
                               bundle=bundle, cluster_dir=tmp / "cluster")
        if request.param == BY_NAME:
            doc, etc_hosts = named_hosts(doc, info, tmp)
            add_etc_hosts(etc_hosts)
        path = tmp / "cluster.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        result = Built(request.param, path, info, bundle, doc)
        code, out, err, seconds = result.up()
        assert code == 0, f"first up failed ({seconds:.0f} s):\n{out[-6000:]}\n{err}"
        result.first_up_seconds, result.first_up_output = seconds, out
        phases = re.findall(r"^(\S+)\s+done\s+(\d+\.\d+)\s*$", out, re.M)  # up's closing table
        slow = "; ".join(f"{name} {secs} s" for name, secs in phases if float(secs) >= 1)
        print(f"\n[e2e] {request.param}: first up {seconds:.1f} s ({slow})")
        yield result
    finally:
        remove_etc_hosts(etc_hosts)
        lifecycle.down(name)


def _ready(obj: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in obj["status"].get("conditions", []))


def test_every_node_and_control_plane_pod_is_ready(built):
    from provision.config import load_cluster
    from provision.phases.verify import expected_static_pods

    nodes = json.loads(built.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert {n["metadata"]["name"] for n in nodes if _ready(n)} == set(built.nodes)
    assert {n["status"]["nodeInfo"]["kubeletVersion"] for n in nodes} == {built.doc["kubernetesVersion"]}
    pods = {p["metadata"]["name"]: p for p in json.loads(built.kubectl("get", "pods", "-n", "kube-system", "-o", "json").stdout)["items"]}
    expected = expected_static_pods(load_cluster(built.cluster_file, None))
    not_ready = {name: [c for c in pods[name]["status"].get("conditions", []) if c["type"] == "Ready"] if name in pods else "missing"
                 for name in expected if name not in pods or not _ready(pods[name])}
    assert expected and not not_ready, not_ready  # each one named, with its Ready condition (reason, time)
    # Each is its kubelet's own mirror pod (the hash of the static pod it mirrors), none a placeholder
    # `up` set for one the kubelet had not made (provision/kube/mirror_pods.py).
    annotations = {name: pods[name]["metadata"].get("annotations", {}) for name in expected}
    assert all(a.get("kubernetes.io/config.hash") and a.get("kubernetes.io/config.mirror") == a["kubernetes.io/config.hash"]
               for a in annotations.values()), annotations
    proxies = [p for name, p in pods.items() if name.startswith("kube-proxy-")]
    assert len(proxies) == len(built.nodes) and all(_ready(p) for p in proxies)


def test_a_pod_reaches_a_service_whose_only_backend_is_on_another_node(built):
    backend_node, client_node = built.nodes[-1], built.nodes[0]
    manifest = f"""
apiVersion: v1
kind: Pod
metadata: {{name: echo, labels: {{app: echo}}}}
spec:
  nodeName: {backend_node}
  tolerations: [{{operator: Exists}}]
  containers: [{{name: echo, image: {ECHO_IMAGE}, imagePullPolicy: Never, ports: [{{containerPort: 8080}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo}}
spec: {{selector: {{app: echo}}, ports: [{{port: 80, targetPort: 8080}}]}}
"""
    built.kubectl("apply", "-f", "-", stdin=manifest)
    built.kubectl("wait", "--for=condition=Ready", "pod/echo", "--timeout=120s")
    service_ip = built.kubectl("get", "service", "echo", "-o", "jsonpath={.spec.clusterIP}").stdout.strip()
    client = f"""
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  nodeName: {client_node}
  restartPolicy: Never
  tolerations: [{{operator: Exists}}]
  containers:
  - name: client
    image: {ECHO_IMAGE}
    imagePullPolicy: Never
    command: [sh, -c, 'for i in $(seq 30); do nc -w 2 {service_ip} 80 </dev/null && exit 0; sleep 1; done; exit 1']
"""
    built.kubectl("apply", "-f", "-", stdin=client)
    deadline = time.monotonic() + 120
    while (phase := built.kubectl("get", "pod", "client", "-o", "jsonpath={.status.phase}").stdout) not in ("Succeeded", "Failed"):
        assert time.monotonic() < deadline, f"client pod still {phase}"
        time.sleep(1)
    logs = built.kubectl("logs", "client").stdout
    assert phase == "Succeeded" and "echo" in logs, f"{client_node} → service {service_ip} → {backend_node}: {phase}, {logs!r}"
    built.kubectl("delete", "pod", "client", "--wait=false")


def test_the_first_up_says_on_each_node_what_its_roles_could_not_do(built):
    """The roles' warnings reach `up`'s progress, one line per host: here, a bundle without crictl
    (none is built for these tests) leaves every node without it, and each node says so."""
    if (built.bundle / "bin" / "crictl").exists():
        pytest.skip("this bundle carries crictl: no node lacks it")
    warned = re.findall(r"^\s*(\S+)\s+warning\s+no crictl in the bundle; crictl not installed$", built.first_up_output, re.M)
    assert sorted(warned) == sorted(built.nodes), built.first_up_output[-4000:]


def test_a_second_up_changes_nothing_and_takes_under_3_s(built):
    code, out, err, seconds = built.up(timeout=600)
    assert code == 0, out[-4000:] + err
    changed = [line for line in out.splitlines() if " changed " in line]
    assert not changed, "\n".join(changed)
    print(f"\n[e2e] {built.topology}: no-op up {seconds:.2f} s")
    assert seconds < 3, f"a second up took {seconds:.1f} s"


def test_an_object_edited_by_hand_is_put_back_by_the_next_up(built):
    """A no-op up skips objects it finds as it applied them (provision/kube/live.py): one edited
    since must still be noticed and applied."""
    built.kubectl("label", "daemonset", "-n", "kube-system", "kube-proxy", "k8s-app=edited-by-hand", "--overwrite")
    code, out, err, _ = built.up(timeout=600)
    assert code == 0, out[-4000:] + err
    assert "daemonset.apps/kube-proxy configured" in out, out[-4000:]
    label = built.kubectl("get", "daemonset", "-n", "kube-system", "kube-proxy", "-o", "jsonpath={.metadata.labels.k8s-app}")
    assert label.stdout == "kube-proxy"


def test_real_kubeadm_reads_the_clusters_configuration(built):
    cp = built.control_planes[0]
    built.ssh(cp, "cat > /usr/local/bin/kubeadm && chmod 0755 /usr/local/bin/kubeadm",
              stdin=(built.bundle / "bin" / "kubeadm").read_bytes())
    certs = built.ssh(cp, "kubeadm certs check-expiration")
    said = (certs.stdout + certs.stderr).decode()
    assert "Falling back to default configuration" not in said and "Error reading configuration" not in said, said
    for name in ("admin.conf", "apiserver", "apiserver-kubelet-client", "front-proxy-client", "ca", "front-proxy-ca"):
        assert any(line.split()[:1] == [name] for line in said.splitlines()), f"{name} not listed:\n{said}"
    token = json.loads((Path(built.doc["clusterDir"]) / "bootstrap-token.json").read_text())["token"]
    listed = built.ssh(cp, "kubeadm token list").stdout.decode()
    assert token.split(".")[0] in listed, listed
    plan = built.ssh(cp, "kubeadm upgrade plan --allow-experimental-upgrades=false", check=False)
    plan_said = (plan.stdout + plan.stderr).decode()
    assert f"Cluster version: {built.doc['kubernetesVersion']}" in plan_said or \
           f"cluster version: {built.doc['kubernetesVersion']}" in plan_said.lower(), plan_said[-3000:]


def test_upgrade_plan_reads_the_running_versions_and_names_what_a_patch_upgrade_changes(built):
    """`kubeprov upgrade plan` against the running cluster: the versions it reads are the ones the
    cluster runs (the same kubeadm's upgrade plan reports above), a patch upgrade changes the
    control plane's three manifests, kubeadm-config and kube-proxy's DaemonSet; a skipped minor is refused."""
    if built.topology != "1cp-2workers":
        pytest.skip("once is enough: the 1cp-2workers topology")
    version = built.doc["kubernetesVersion"]
    target = f"v1.28.{int(version.rsplit('.', 1)[1]) + 3}"
    code, out, err = run_cli("upgrade", "plan", "-c", built.cluster_file, "--version", target, "-o", "json", timeout=300)
    assert code == 0, out + err
    plan = json.loads(out)
    running = {(c["component"], c["host"]): c["current"] for c in plan["components"] if c["component"] != "etcd"}
    cp = built.control_planes[0]
    assert {running[(c, cp)] for c in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")} == {version}
    assert {running[("kubelet", n)] for n in built.nodes} == {version}
    assert plan["allowed"] and plan["skew"] == []
    assert sorted(plan["files"][cp]) == [f"replace /etc/kubernetes/manifests/{c}.yaml"
                                         for c in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")]
    assert {"ConfigMap/kube-system/kubeadm-config", "DaemonSet/kube-system/kube-proxy"} <= set(plan["objects"])
    code, out, err = run_cli("upgrade", "plan", "-c", built.cluster_file, "--version", "v1.30.0", timeout=300)
    assert code == 1 and "v1.30.0 skips a minor" in out, out + err


def test_up_refuses_a_version_change_and_names_upgrade_apply(built, tmp_path):
    """The cluster file edited to another patch release: `up` must not roll that as a config change
    (the new images are on no host yet) nor prepare every host at once; it refuses before changing
    anything and names `upgrade apply`."""
    if built.topology != "1cp-2workers":
        pytest.skip("once is enough: the 1cp-2workers topology")
    version = built.doc["kubernetesVersion"]
    target = f"v1.28.{int(version.rsplit('.', 1)[1]) + 3}"
    edited = tmp_path / "cluster.yaml"
    edited.write_text(yaml.safe_dump({**built.doc, "kubernetesVersion": target}, sort_keys=False))
    code, out, err = run_cli("up", "--lab", "--no-merge-kubeconfig", "-c", edited, timeout=600)
    said = out + err
    assert code != 0 and f"runs Kubernetes {version} and the cluster file says {target}" in said, said[-3000:]
    assert f"kubeprov upgrade apply --version {target}" in said, said[-3000:]
    # Nothing changed on the hosts: `up` with the cluster's own file has nothing to do.
    code, out, err, _ = built.up(timeout=600)
    assert code == 0 and not [line for line in out.splitlines() if " changed " in line], out[-3000:] + err


def test_real_kubeadm_joins_a_worker_with_join_commands_line(built):
    """A host kubeprov prepared but did not join: real `kubeadm join` with `kubeprov join-command`'s
    line (token discovery, CA pinning, TLS bootstrap with kubeprov's RBAC and cluster-info)."""
    if built.topology != "1cp-2workers":
        pytest.skip("once is enough: the 1cp-2workers topology")
    from provision.lab import lifecycle

    info = lifecycle.up(built.info.name, len(built.info.hosts) + 1, control_planes=len(built.control_planes))
    extra = info.hosts[-1]
    doc = yaml.safe_load(built.cluster_file.read_text())
    doc["hosts"].append({**doc["hosts"][-1], "name": extra.name, "address": extra.address, "roles": ["worker"]})
    extended = built.cluster_file.with_name("with-extra-worker.yaml")
    extended.write_text(yaml.safe_dump(doc, sort_keys=False))
    code, out, err = run_cli("prepare", "--lab", "-c", extended, timeout=900)  # the new host only: the others are current
    assert code == 0, out[-3000:] + err
    code, line, err = run_cli("join-command", "-c", built.cluster_file)
    assert code == 0 and line.startswith("kubeadm join "), line + err
    subprocess.run(ssh_args(extra.address, info.key, info.known_hosts) + ["cat > /usr/local/bin/kubeadm && chmod 0755 /usr/local/bin/kubeadm"],
                   input=(built.bundle / "bin" / "kubeadm").read_bytes(), check=True, timeout=120)
    # No crictl can be had here (not a Debian package, no source to build it): kubeadm's check for it is waived.
    joined = subprocess.run(ssh_args(extra.address, info.key, info.known_hosts)
                            + [line.strip() + " --ignore-preflight-errors=FileExisting-crictl"],
                            capture_output=True, text=True, timeout=300)
    assert joined.returncode == 0, joined.stdout[-3000:] + joined.stderr[-3000:]
    built.kubectl("wait", "--for=condition=Ready", f"node/{extra.name}", "--timeout=180s")


def test_external_etcd_keeps_the_api_writable_with_a_member_down(built):
    if built.topology != "external-etcd":
        pytest.skip("external etcd topology only")
    member = next(h["name"] for h in built.doc["hosts"] if h["roles"] == ["etcd"])
    built.ssh(member, "systemctl stop etcd")
    try:
        for i in range(5):
            built.kubectl("create", "configmap", f"written-{i}", f"--from-literal=i={i}")
        assert built.kubectl("get", "configmap", "written-4", "-o", "jsonpath={.data.i}").stdout == "4"
    finally:
        built.ssh(member, "systemctl start etcd")


class Prober(threading.Thread):
    """GET /readyz through the endpoint every 100 ms; each answer's time, success, duration and,
    for a failure, why (status and body, or the error)."""

    def __init__(self, url: str, ca: Path):
        super().__init__(daemon=True)
        self.url, self.results, self.stopped = url, [], threading.Event()
        self.tls = ssl.create_default_context(cafile=str(ca))

    def run(self) -> None:
        while not self.stopped.is_set():
            started = time.monotonic()
            why = ""
            try:
                with urllib.request.urlopen(self.url, context=self.tls, timeout=2) as answer:
                    ok = answer.status == 200
            except urllib.error.HTTPError as exc:  # /readyz says which of its checks failed
                ok, why = False, f"{exc.code}: {exc.read().decode(errors='replace')[-300:]}"
            except OSError as exc:
                ok, why = False, str(exc)
            self.results.append((started, ok, time.monotonic() - started, why))
            self.stopped.wait(max(0.0, 0.1 - (time.monotonic() - started)))


def test_ha_the_api_survives_a_crash_of_the_vip_holder(built):
    if built.topology != "3cp-1worker-haproxy":
        pytest.skip("HA topology only")
    from provision.lab import host as lab_host
    from provision.lab.state import load

    vip = built.doc["controlPlaneEndpoint"].split(":")[0]
    holder = next(cp for cp in built.control_planes
                  if f" {vip}/" in built.ssh(cp, "ip -o -4 addr show").stdout.decode())
    prober = Prober(f"https://{vip}:6443/readyz", Path(built.doc["clusterDir"]) / "pki" / "ca.crt")
    prober.start()
    time.sleep(2)
    layout = load(built.info.name).layout
    number = next(i for i in range(1, len(built.info.hosts) + 1) if layout.host_name(i) == holder)
    crashed = time.monotonic()
    subprocess.run(["nsenter", f"--net=/run/netns/{layout.host_netns(number)}", "ip", "link", "set", "eth0", "down"], check=True)
    lab_host.stop(layout, number)  # SIGKILL of the host's every process: its kubelet, pods, keepalived
    time.sleep(8)
    prober.stopped.set()
    prober.join()
    before = [r for r in prober.results if r[0] < crashed]
    after = [r for r in prober.results if r[0] >= crashed]
    failed_before = [(round(t - crashed, 2), why) for t, ok, _, why in before if not ok]
    assert before and not failed_before, f"the endpoint was not healthy before the crash: {failed_before}"
    back = next((t for t, ok, _, _ in after if ok), None)
    assert back is not None, "the API never answered through the VIP after the crash"
    print(f"\n[e2e] VIP holder {holder} crashed: API answered through {vip} again after {back - crashed:.2f} s")
    assert back - crashed <= 3, f"the API answered again only after {back - crashed:.1f} s"
    slow = [round(seconds, 2) for t, ok, seconds, _ in after if t >= back and seconds > 2]
    assert not slow, f"requests after the failover hung: {slow}"
    # The cluster still schedules and runs a new pod (on a node that is still alive).
    survivor = next(n for n in built.nodes if n != holder)
    built.kubectl("run", "after-crash", f"--image={ECHO_IMAGE}", "--image-pull-policy=Never",
                  f"--overrides={json.dumps({'spec': {'nodeName': survivor}})}")
    built.kubectl("wait", "--for=condition=Ready", "pod/after-crash", "--timeout=120s")
