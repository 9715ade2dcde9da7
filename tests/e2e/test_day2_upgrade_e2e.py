"""Rolling changes on a running HA cluster with real binaries: renewed certificates, a config
change through `up` and `upgrade apply` from one real Kubernetes patch release to the next, while the API is used.

Needs KUBEPROV_E2E_BUNDLE=DIR (the version the lab is built at, e.g. v1.28.4; see
tests/e2e/test_up_e2e.py) and KUBEPROV_E2E_BUNDLE_NEXT=DIR (real binaries of a later patch of the
same minor, e.g. v1.28.7), each assembled by tests/e2e/bundle.py (the next one into
KUBEPROV_E2E_CACHE_NEXT, default /var/cache/kubeprov/e2e-bundle-next). Without either, every test
here skips, saying why. One lab (KUBEPROV_E2E_UPGRADE_LAB, default ug2): 3 stacked control planes
+ 1 worker behind the haproxy-keepalived VIP, removed at the end, failed or not.

In order, on that cluster, while /readyz is asked through the VIP every 100 ms and a client writes
and lists ConfigMaps through it every 200 ms (each failed request counted and named):
0. `certs renew all` rolls the renewed certificates and kubeconfigs out (control planes one at a
   time, workers not drained); every host holds them, and real `kubeadm certs check-expiration`
   on a control plane reads the new dates;
1. `up` with an extra kube-apiserver flag in the cluster file rolls the control planes one at a
   time: every API server runs with the flag;
2. `upgrade apply` refuses, exit 1 and nothing changed, when the file names another version and
   when the bundle lacks the target's artifacts;
3. `upgrade apply --version NEXT` is interrupted (killed) once its first control plane is done
   and the second one's roll has begun, and a second `upgrade apply` resumes (the first control
   plane is not rolled again): every node reports NEXT, every control-plane pod and
   kube-proxy runs NEXT's image;
4. real `kubeadm upgrade plan` (NEXT's kubeadm) on a control plane reads the cluster's version as NEXT.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from test_day2_reset_e2e import _build
from test_up_e2e import E2E_MARKS, SOURCE, _kubernetes_version, bundle  # noqa: F401  (bundle: the fixture)
from testkit import KUBEPROV, run_cli

from provision.lab.testing import unavailable_reason

NEXT = os.environ.get("KUBEPROV_E2E_BUNDLE_NEXT")

pytestmark = [
    *E2E_MARKS,
    pytest.mark.skipif(not NEXT, reason="KUBEPROV_E2E_BUNDLE_NEXT=DIR (real binaries of a later patch release to upgrade "
                                        "to) is not set: an upgrade needs two versions"),
]

LAB = os.environ.get("KUBEPROV_E2E_UPGRADE_LAB", "ug2")
TOPOLOGY = "3cp-1worker-haproxy"
FLAG = ("event-ttl", "2h0m0s")


class Traffic:
    """Through the VIP: GET /readyz every 100 ms, and a client (admin.conf's identity) that writes
    one of 20 ConfigMaps and lists them every 200 ms. Every request's (time, error or None)."""

    def __init__(self, built):
        cluster_dir = Path(built.doc["clusterDir"])
        user = yaml.safe_load((cluster_dir / "kubeconfigs" / "admin.conf").read_text())["users"][0]["user"]
        keys = cluster_dir / "e2e-traffic"
        keys.mkdir(exist_ok=True)
        (keys / "crt").write_bytes(base64.b64decode(user["client-certificate-data"]))
        (keys / "key").write_bytes(base64.b64decode(user["client-key-data"]))
        os.chmod(keys / "key", 0o600)
        self.tls = ssl.create_default_context(cafile=str(cluster_dir / "pki" / "ca.crt"))
        self.tls.load_cert_chain(str(keys / "crt"), str(keys / "key"))
        self.base = f"https://{built.doc['controlPlaneEndpoint']}"
        self.readyz: list[tuple[float, str | None]] = []
        self.client: list[tuple[float, str | None]] = []
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._loop, args=(self._probe, 0.1, self.readyz), daemon=True),
                        threading.Thread(target=self._loop, args=(self._write_and_list, 0.2, self.client), daemon=True)]

    def _probe(self, i: int) -> None:
        try:
            with urllib.request.urlopen(f"{self.base}/readyz", context=self.tls, timeout=2) as answer:
                assert answer.status == 200
        except urllib.error.HTTPError as error:  # /readyz lists its failed checks: say which
            failed = [line for line in error.read().decode(errors="replace").splitlines() if line.startswith("[-]")]
            raise AssertionError(f"/readyz {error.code}: {'; '.join(failed) or 'no failed check named'}") from None

    def _write_and_list(self, i: int) -> None:
        name = f"traffic-{i % 20}"
        body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"i": str(i)}}).encode()
        headers = {"Content-Type": "application/json"}
        url = f"{self.base}/api/v1/namespaces/default/configmaps"
        try:
            urllib.request.urlopen(urllib.request.Request(f"{url}/{name}", data=body, method="PUT", headers=headers),
                                   context=self.tls, timeout=5).read()
        except urllib.error.HTTPError as error:
            if error.code != 404:
                raise
            urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST", headers=headers), context=self.tls, timeout=5).read()
        listed = json.loads(urllib.request.urlopen(f"{url}?labelSelector=&limit=100", context=self.tls, timeout=5).read())
        assert any(item["metadata"]["name"] == name for item in listed["items"])

    def _loop(self, ask, period: float, results: list) -> None:
        i = 0
        while not self.stopped.is_set():
            started, i = time.monotonic(), i + 1
            try:
                ask(i)
                results.append((started, None))
            except Exception as error:  # noqa: BLE001 - every failure is counted and named
                results.append((started, f"{type(error).__name__}: {error}"))
            self.stopped.wait(max(0.0, period - (time.monotonic() - started)))

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        time.sleep(1)
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(1)
        self.stopped.set()
        for thread in self.threads:
            thread.join()

    def failures(self) -> dict[str, list]:
        return {"readyz": [(round(t, 1), e) for t, e in self.readyz if e], "client": [(round(t, 1), e) for t, e in self.client if e]}

    def said(self) -> str:
        failed = self.failures()
        return (f"/readyz: {len(self.readyz)} probes, {len(failed['readyz'])} failed; client: {len(self.client)} write+list, "
                f"{len(failed['client'])} failed" + (f" {failed}" if any(failed.values()) else ""))


@pytest.fixture(scope="module")
def ha(bundle, tmp_path_factory):  # noqa: F811
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    yield from _build(bundle, tmp_path_factory.mktemp(LAB), LAB, TOPOLOGY)


@pytest.fixture(scope="module")
def next_bundle() -> Path:
    from bundle import assemble

    return assemble(Path(NEXT).resolve(), Path(os.environ.get("KUBEPROV_E2E_CACHE_NEXT", "/var/cache/kubeprov/e2e-bundle-next")))


def _write(ha, name: str, **changes) -> Path:
    doc = yaml.safe_load(ha.cluster_file.read_text())
    for key, value in changes.items():
        doc[key] = value
    path = ha.cluster_file.with_name(name)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _with_flag(ha) -> dict:
    return {"controlPlane": {"apiServer": {"extraArgs": {FLAG[0]: FLAG[1]}}}}


def _not_after(ha, name: str) -> str:
    """The local certificate's expiry as `kubeadm certs check-expiration` prints it."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((Path(ha.doc["clusterDir"]) / "pki" / name).read_bytes())
    return f"{cert.not_valid_after_utc:%b %d, %Y %H:%M} UTC"


def test_certs_renew_all_rolls_out_with_the_api_serving_and_kubeadm_reads_the_new_dates(ha):
    cp = ha.control_planes[0]
    before = _not_after(ha, f"nodes/{cp}/apiserver.crt")
    time.sleep(61 - time.time() % 60)  # a new minute: kubeadm prints expiry dates to the minute
    with Traffic(ha) as traffic:
        started = time.monotonic()
        code, out, err = run_cli("certs", "renew", "all", "-c", ha.cluster_file, timeout=1800)
        seconds = time.monotonic() - started
    print(f"\n[e2e] certs renew all, rolled out: {seconds:.1f} s; {traffic.said()}\n{out[-4000:]}")
    assert code == 0, out[-6000:] + err
    settled = [line.split()[0] for line in out.splitlines() if "settled:" in line]
    assert settled == ha.nodes and settled[:3] == ha.control_planes, out[-6000:]  # control planes one at a time, in order
    assert "cordoned" not in out  # a worker's pods keep running: only its kubelet restarts
    assert not any(traffic.failures().values()), traffic.said()
    after = _not_after(ha, f"nodes/{cp}/apiserver.crt")
    assert after != before
    code, out, err = run_cli("certs", "check-expiration", "--on-hosts", "-c", ha.cluster_file, timeout=300)
    assert code == 0 and " differs" not in out and " missing" not in out, out + err  # every host holds the new ones
    ha.ssh(cp, "cat > /usr/local/bin/kubeadm && chmod 0755 /usr/local/bin/kubeadm", stdin=(ha.bundle / "bin" / "kubeadm").read_bytes())
    said = ha.ssh(cp, "kubeadm certs check-expiration").stdout.decode()
    print(f"\n[e2e] kubeadm certs check-expiration on {cp} after the renew:\n{said}")
    apiserver = next(line for line in said.splitlines() if line.startswith("apiserver "))
    assert after in apiserver, (after, apiserver)
    nodes = json.loads(ha.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert all(c["status"] == "True" for n in nodes for c in n["status"]["conditions"] if c["type"] == "Ready")


def test_a_rolling_config_change_keeps_the_api_serving(ha):
    path = _write(ha, "with-flag.yaml", **_with_flag(ha))
    ha.cluster_file = path  # later tests build on the changed cluster
    with Traffic(ha) as traffic:
        started = time.monotonic()
        code, out, err = run_cli("up", "--lab", "--no-merge-kubeconfig", "-c", path, timeout=1800)
        seconds = time.monotonic() - started
    print(f"\n[e2e] rolling config change (--{FLAG[0]}={FLAG[1]}) through up: {seconds:.1f} s; {traffic.said()}")
    assert code == 0, out[-6000:] + err
    rolled = [line for line in out.splitlines() if "settled:" in line]
    assert [line.split()[0] for line in rolled] == ha.control_planes, out[-6000:]  # one at a time, in order
    pods = json.loads(ha.kubectl("get", "pods", "-n", "kube-system", "-l", "component=kube-apiserver", "-o", "json").stdout)["items"]
    assert len(pods) == 3 and all(f"--{FLAG[0]}={FLAG[1]}" in p["spec"]["containers"][0]["command"] for p in pods)
    assert not any(traffic.failures().values()), traffic.said()


def test_upgrade_apply_refuses_another_version_and_a_bundle_without_it(ha, next_bundle):
    target = _kubernetes_version(next_bundle)
    code, out, err = run_cli("upgrade", "apply", "-c", ha.cluster_file, "--version", target, "--lab", timeout=300)
    assert code == 1 and f"kubernetesVersion in the cluster file is {ha.doc['kubernetesVersion']}, not {target}" in err, out + err
    old_bundle = _write(ha, "old-bundle.yaml", kubernetesVersion=target)
    code, out, err = run_cli("upgrade", "apply", "-c", old_bundle, "--version", target, "--lab", timeout=300)
    assert code == 1 and f"the artifacts lack {target}" in err and len(err.strip().splitlines()) == 1, out + err
    assert not (Path(ha.doc["clusterDir"]) / "upgrade.json").exists()
    nodes = json.loads(ha.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert {n["status"]["nodeInfo"]["kubeletVersion"] for n in nodes} == {ha.doc["kubernetesVersion"]}


def test_an_interrupted_upgrade_apply_resumes_and_every_node_reports_the_new_version(ha, next_bundle):
    target = _kubernetes_version(next_bundle)
    artifacts = {**ha.doc["artifacts"], "bundleDir": str(next_bundle)}
    path = _write(ha, "next.yaml", kubernetesVersion=target, artifacts=artifacts, **_with_flag(ha))
    command = [str(KUBEPROV), "upgrade", "apply", "-c", str(path), "--version", target, "--lab"]
    with Traffic(ha) as traffic:
        started = time.monotonic()
        dry = subprocess.run(command + ["--dry-run"], capture_output=True, text=True, timeout=300)
        assert dry.returncode == 0 and "etcd snapshot" in dry.stdout, dry.stdout + dry.stderr
        print(f"\n[e2e] upgrade apply --dry-run:\n{dry.stdout}")
        # Killed once the first control plane is done and the second one's roll has begun: a crash in
        # the middle, not a clean stop.
        first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        said = []
        for line in first.stdout:
            said.append(line)
            if line.split()[:1] == [ha.control_planes[1]]:
                first.send_signal(signal.SIGKILL)
                break
        first.wait(timeout=60)
        interrupted = time.monotonic() - started
        second = subprocess.run(command, capture_output=True, text=True, timeout=3600)
        seconds = time.monotonic() - started
    print(f"\n[e2e] upgrade apply to {target}: interrupted after {interrupted:.1f} s, resumed, done after {seconds:.1f} s; "
          f"{traffic.said()}\n--- first run:\n{''.join(said)}--- resumed run:\n{second.stdout}")
    assert first.returncode == -signal.SIGKILL, "".join(said)
    assert second.returncode == 0, second.stdout[-6000:] + second.stderr
    assert "resuming the interrupted upgrade" in second.stdout and "etcd snapshot:" not in second.stdout, second.stdout
    settled_again = [line.split()[0] for line in second.stdout.splitlines() if "settled:" in line]
    assert ha.control_planes[0] not in settled_again, second.stdout  # done before the kill: not rolled again
    nodes = json.loads(ha.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert {n["metadata"]["name"]: n["status"]["nodeInfo"]["kubeletVersion"] for n in nodes} == {n: target for n in ha.nodes}
    pods = json.loads(ha.kubectl("get", "pods", "-n", "kube-system", "-o", "json").stdout)["items"]
    images = {c["image"] for p in pods for c in p["spec"]["containers"]
              if c["name"] in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")}
    assert images and all(image.endswith(":" + target) for image in images), images
    assert not any(traffic.failures().values()), traffic.said()
    ha.cluster_file, ha.doc = path, yaml.safe_load(path.read_text())


def test_real_kubeadm_upgrade_plan_agrees_on_the_new_version(ha, next_bundle):
    target = _kubernetes_version(next_bundle)
    cp = ha.control_planes[0]
    ha.ssh(cp, "cat > /usr/local/bin/kubeadm && chmod 0755 /usr/local/bin/kubeadm", stdin=(next_bundle / "bin" / "kubeadm").read_bytes())
    plan = ha.ssh(cp, "kubeadm upgrade plan --allow-experimental-upgrades=false", check=False)
    said = (plan.stdout + plan.stderr).decode()
    print(f"\n[e2e] kubeadm upgrade plan on {cp}:\n{said[-1500:]}")
    assert f"cluster version: {target}" in said.lower(), said[-3000:]
