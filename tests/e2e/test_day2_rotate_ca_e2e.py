"""`certs rotate-ca ca` on a running HA cluster with real binaries, while the API is used.

Needs KUBEPROV_E2E_BUNDLE=DIR (see tests/e2e/test_up_e2e.py); without it every test here skips,
saying why. One lab (KUBEPROV_E2E_ROTATE_CA_LAB, default rca): 3 stacked control planes + 1
worker behind the haproxy-keepalived VIP, removed at the end, failed or not.

In order, on that cluster:
1. bad input (an unknown CA) is one line, exit ≠ 0, nothing changed; `--dry-run` lists the
   steps per host and changes nothing;
2. while /readyz is asked through the VIP every 100 ms and a client writes and lists ConfigMaps
   through it every 200 ms (test_day2_upgrade_e2e.Traffic; its client reads the cluster
   directory's pki/ca.crt and admin.conf again when they change, as kubectl reads its kubeconfig
   on each call: a client that never reads its trust again cannot outlive its CA), `certs
   rotate-ca ca` completes with no failed request; every node Ready, every host's ca.crt the new
   CA alone, every kube-root-ca.crt too, every kubelet's client certificate signed by it;
3. real `kubeadm certs check-expiration` on a control plane shows the new CA.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import ssl
import threading
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from test_day2_reset_e2e import _build
from test_day2_upgrade_e2e import Traffic
from test_up_e2e import E2E_MARKS, bundle  # noqa: F401  (bundle: the fixture)
from testkit import run_cli, snapshot

from provision.lab.testing import unavailable_reason

pytestmark = [*E2E_MARKS]

LAB = os.environ.get("KUBEPROV_E2E_ROTATE_CA_LAB", "rca")
TOPOLOGY = "3cp-1worker-haproxy"


class RereadingTraffic(Traffic):
    """Traffic whose client reads its trust (pki/ca.crt) and identity (admin.conf's client
    certificate) again whenever either file changes."""

    def __init__(self, built):
        super().__init__(built)
        cluster_dir = Path(built.doc["clusterDir"])
        self.files = (cluster_dir / "pki" / "ca.crt", cluster_dir / "kubeconfigs" / "admin.conf")
        self.keys = cluster_dir / "e2e-traffic"
        self.lock = threading.Lock()
        self.seen: tuple | None = None
        self.reloads = 0
        self._reread()

    def _reread(self) -> None:
        with self.lock:
            seen = tuple((p.stat().st_mtime_ns, p.stat().st_ino) for p in self.files)
            if seen == self.seen:
                return
            ca, admin = self.files
            user = yaml.safe_load(admin.read_text())["users"][0]["user"]
            n = self.reloads + 1
            (self.keys / f"crt-{n}").write_bytes(base64.b64decode(user["client-certificate-data"]))
            (self.keys / f"key-{n}").write_bytes(base64.b64decode(user["client-key-data"]))
            os.chmod(self.keys / f"key-{n}", 0o600)
            tls = ssl.create_default_context(cafile=str(ca))
            tls.load_cert_chain(str(self.keys / f"crt-{n}"), str(self.keys / f"key-{n}"))
            self.tls, self.seen, self.reloads = tls, seen, n

    def _probe(self, i: int) -> None:
        self._reread()
        super()._probe(i)

    def _write_and_list(self, i: int) -> None:
        self._reread()
        super()._write_and_list(i)


@pytest.fixture(scope="module")
def ha(bundle, tmp_path_factory):  # noqa: F811
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    yield from _build(bundle, tmp_path_factory.mktemp(LAB), LAB, TOPOLOGY)


def _ca(ha) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates((Path(ha.doc["clusterDir"]) / "pki" / "ca.crt").read_bytes())


@pytest.fixture(scope="module")
def old_ca(ha) -> x509.Certificate:
    (cert,) = _ca(ha)
    return cert


def test_bad_input_is_refused_and_the_dry_run_changes_nothing(ha, old_ca):
    cluster_dir = Path(ha.doc["clusterDir"])
    before = snapshot(cluster_dir)
    code, out, err = run_cli("certs", "rotate-ca", "nope", "-c", ha.cluster_file, "--lab", timeout=300)
    assert code != 0 and len(err.strip().splitlines()) == 1 and "unknown CA 'nope'" in err, out + err
    code, out, err = run_cli("certs", "rotate-ca", "ca", "-c", ha.cluster_file, "--lab", "--dry-run", timeout=300)
    assert code == 0, out + err
    print(f"\n[e2e] certs rotate-ca ca --dry-run:\n{out}")
    assert snapshot(cluster_dir) == before
    for step in ("2/8 trust", "5/8 switch", "6/8 kubelets", "8/8 trust-new"):
        assert [line.split()[0] for line in out.splitlines() if f" {step}:" in line and not line.startswith("local")] == ha.nodes, out


def test_rotate_ca_keeps_the_api_serving_and_every_node_ready(ha, old_ca):
    with RereadingTraffic(ha) as traffic:
        started = time.monotonic()
        code, out, err = run_cli("certs", "rotate-ca", "ca", "-c", ha.cluster_file, "--lab", timeout=3600)
        seconds = time.monotonic() - started
    print(f"\n[e2e] certs rotate-ca ca: {seconds:.1f} s; {traffic.said()}; client reread its files {traffic.reloads} times\n"
          f"{out[-8000:]}")
    assert code == 0, out[-8000:] + err
    (new,) = _ca(ha)
    assert new != old_ca
    nodes = json.loads(ha.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert sorted(n["metadata"]["name"] for n in nodes) == sorted(ha.nodes)
    assert all(any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"]) for n in nodes), nodes
    roots = json.loads(ha.kubectl("get", "configmaps", "-A", "--field-selector=metadata.name=kube-root-ca.crt", "-o", "json").stdout)
    assert roots["items"] and all(x509.load_pem_x509_certificates(i["data"]["ca.crt"].encode()) == [new] for i in roots["items"])
    for name in ha.nodes:
        on_host = x509.load_pem_x509_certificates(ha.ssh(name, "cat /etc/kubernetes/pki/ca.crt").stdout)
        assert on_host == [new], name
        pem = ha.ssh(name, "cat /var/lib/kubelet/pki/kubelet-client-current.pem").stdout  # its certificate, then its key
        x509.load_pem_x509_certificate(pem).verify_directly_issued_by(new)  # raises if another CA signed it
    assert not any(traffic.failures().values()), traffic.said()


def test_real_kubeadm_certs_check_expiration_shows_the_new_ca(ha, old_ca, bundle):  # noqa: F811
    (new,) = _ca(ha)
    cp = ha.control_planes[0]
    ha.ssh(cp, "cat > /usr/local/bin/kubeadm && chmod 0755 /usr/local/bin/kubeadm", stdin=(bundle / "bin" / "kubeadm").read_bytes())
    result = ha.ssh(cp, "kubeadm certs check-expiration", check=False)
    said = (result.stdout + result.stderr).decode()
    print(f"\n[e2e] kubeadm certs check-expiration on {cp}:\n{said}")
    assert result.returncode == 0, said

    def shown(when: dt.datetime) -> str:  # kubeadm's EXPIRES column
        return when.astimezone(dt.timezone.utc).strftime("%b %d, %Y %H:%M UTC")

    ca_row = next(line for line in said.splitlines() if line.split()[:1] == ["ca"])
    assert shown(new.not_valid_after_utc) in ca_row, (ca_row, shown(new.not_valid_after_utc))
    assert shown(old_ca.not_valid_after_utc) != shown(new.not_valid_after_utc)  # the row tells them apart
    apiserver = next(line for line in said.splitlines() if line.split()[:1] == ["apiserver"])
    assert "MISSING" not in said and apiserver.split()[-2] == "ca", said
