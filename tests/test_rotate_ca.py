"""`certs rotate-ca`: the local PKI through the rotation's steps (the CA file a bundle, the first
certificate signing), what the renderers make of it, the journal's resumption, the refusals and
the dry run. The rolls themselves are the rolling mechanism's (tests/test_rolling.py); the whole
rotation on real binaries is tests/e2e/test_day2_rotate_ca_e2e.py."""

from __future__ import annotations

import base64
import json
from pathlib import Path, PurePosixPath

import pytest
import yaml
from cryptography import x509
from testkit import cluster_dir_of, hosts, run_cli, snapshot

from provision.config.loader import load_cluster
from provision.pki import crypto
from provision.pki import rotate_ca as rc
from provision.pki.store import PKIStore, read_material


@pytest.fixture
def generated(make_cluster):
    path = make_cluster(hosts=hosts(3, 1), kubernetesVersion="v1.28.4", controlPlaneEndpoint="10.0.0.100:6443",
                        certificates={"keyAlgorithm": "ECDSA-P256"})
    code, out, err = run_cli("certs", "generate", "-c", path)
    assert code == 0, out + err
    return path, cluster_dir_of(path)


def _cluster(path: Path):
    return load_cluster(path)  # the cluster file names its clusterDir


def _certs(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def _embedded_ca(kubeconfig: Path) -> list[x509.Certificate]:
    doc = yaml.safe_load(kubeconfig.read_text())
    return x509.load_pem_x509_certificates(base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"]))


def _signed_by(cert_path: Path, ca: x509.Certificate) -> bool:
    return crypto.signed_by(crypto.load_cert(cert_path.read_bytes()), ca)


def _kubeconfig_cert(kubeconfig: Path) -> x509.Certificate:
    doc = yaml.safe_load(kubeconfig.read_text())
    return crypto.load_cert(base64.b64decode(doc["users"][0]["user"]["client-certificate-data"]))


def test_the_local_steps_trust_both_then_sign_with_the_new_ca_then_drop_the_old(generated):
    path, root = generated
    cluster = _cluster(path)
    pki = root / "pki"
    (old,) = _certs(pki / "ca.crt")
    old_key = (pki / "ca.key").read_bytes()
    admin, apiserver = root / "kubeconfigs" / "admin.conf", next((pki / "nodes").glob("*/apiserver.crt"))

    said = rc.local_step(cluster, root, "ca", "issue")
    first, new = _certs(pki / "ca.crt")
    assert first == old and new != old and (pki / "ca.key").read_bytes() == old_key, said  # the old still signs
    assert _embedded_ca(admin) == [old, new]  # clients trust both before any server changes
    assert _signed_by(apiserver, old)
    assert PKIStore(cluster, root).check()[0] and not any(r.problems for r in PKIStore(cluster, root).check()[0])

    rc.local_step(cluster, root, "ca", "reissue")
    assert _certs(pki / "ca.crt") == [new, old]
    assert crypto.keys_match(new, crypto.load_key((pki / "ca.key").read_bytes()))
    store = PKIStore(cluster, root)
    for cred in store.credentials():
        if cred.ca == "ca":
            cert = _kubeconfig_cert(cred.path) if cred.is_kubeconfig else crypto.load_cert(cred.path.read_bytes())
            assert crypto.signed_by(cert, new), cred.label
    assert _embedded_ca(admin) == [new, old]
    assert not any(r.problems for r in store.check()[0])
    # The old key is kept: in the staging area and as a backup of the replaced file.
    assert any(p.read_bytes() == old_key for p in (root / "backup").rglob("ca.key"))

    rc.local_step(cluster, root, "ca", "drop")
    assert _certs(pki / "ca.crt") == [new]
    assert _embedded_ca(admin) == [new]
    assert _signed_by(apiserver, new)
    assert not any(r.problems for r in PKIStore(cluster, root).check()[0])
    moved = rc.finish_local(root)
    assert moved and not (pki / rc.STAGING).exists() and (moved / "ca.old.key").read_bytes() == old_key


def test_a_local_step_run_again_changes_nothing(generated):
    path, root = generated
    cluster = _cluster(path)
    rc.local_step(cluster, root, "front-proxy-ca", "issue")
    rc.local_step(cluster, root, "front-proxy-ca", "reissue")
    before = snapshot(root)
    assert rc.local_step(cluster, root, "front-proxy-ca", "reissue") == []
    assert snapshot(root) == before


def test_an_interrupted_issue_keeps_the_new_key_it_made(generated):
    path, root = generated
    cluster = _cluster(path)
    stage = rc._stage(PKIStore(cluster, root), "etcd-ca")
    rc.local_step(cluster, root, "etcd-ca", "issue")
    new_key = stage["new.key"].read_bytes()
    stage["new.crt"].unlink()  # as if killed between the key and its certificate
    rc.local_step(cluster, root, "etcd-ca", "issue")
    new = crypto.load_cert(stage["new.crt"].read_bytes())
    assert crypto.keys_match(new, crypto.load_key(new_key))
    assert _certs(root / "pki" / "etcd" / "ca.crt")[1] == new


def test_the_controller_manager_signs_with_one_certificate_while_ca_crt_is_a_bundle(generated):
    from provision.render import render_hosts

    path, root = generated
    cluster = _cluster(path)
    cp = cluster.control_planes[0].name
    manifest = PurePosixPath("/etc/kubernetes/manifests/kube-controller-manager.yaml")
    signing = PurePosixPath("/etc/kubernetes/pki/ca-signing.crt")

    def flags(trees) -> dict:
        command = yaml.safe_load(trees[cp][manifest].content)["spec"]["containers"][0]["command"]
        return dict(a[2:].split("=", 1) for a in command if a.startswith("--"))

    before = render_hosts(cluster, read_material(PKIStore(cluster, root)))
    assert flags(before)["cluster-signing-cert-file"] == "/etc/kubernetes/pki/ca.crt" and signing not in before[cp]

    for step, signer in (("issue", 0), ("reissue", 0)):
        rc.local_step(cluster, root, "ca", step)
        material = read_material(PKIStore(cluster, root))
        trees = render_hosts(cluster, material)
        bundle = x509.load_pem_x509_certificates(trees[cp][PurePosixPath("/etc/kubernetes/pki/ca.crt")].content)
        (alone,) = x509.load_pem_x509_certificates(trees[cp][signing].content)
        assert len(bundle) == 2 and alone == bundle[signer]
        assert crypto.keys_match(alone, crypto.load_key(trees[cp][PurePosixPath("/etc/kubernetes/pki/ca.key")].content))
        assert flags(trees)["cluster-signing-cert-file"] == str(signing)
        assert flags(trees)["root-ca-file"] == "/etc/kubernetes/pki/ca.crt"  # pods get both
        worker = cluster.workers[0].name
        assert len(x509.load_pem_x509_certificates(trees[worker][PurePosixPath("/etc/kubernetes/pki/ca.crt")].content)) == 2

    rc.local_step(cluster, root, "ca", "drop")
    after = render_hosts(cluster, read_material(PKIStore(cluster, root)))
    assert flags(after)["cluster-signing-cert-file"] == "/etc/kubernetes/pki/ca.crt" and signing not in after[cp]


def test_desired_ca_orders_the_bundle_by_step():
    stage = {"old.crt": b"O", "new.crt": b"N", "old.key": b"ok", "new.key": b"nk"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rc, "bundle", lambda *pems: b"+".join(pems))
        assert rc.desired_ca(stage, "issue") == (b"O+N", b"ok")
        assert rc.desired_ca(stage, "reissue") == (b"N+O", b"nk")
        assert rc.desired_ca(stage, "drop") == (b"N", b"nk")
    with pytest.raises(ValueError):
        rc.desired_ca(stage, "trust")


def test_a_kubelets_cert_and_key_file_is_checked_against_the_new_ca(generated):
    _, root = generated
    pki = root / "pki"
    leaf = next((pki / "nodes").glob("*/apiserver-kubelet-client.crt"))
    pair = leaf.read_bytes() + leaf.with_suffix(".key").read_bytes()  # the kubelet keeps both in one file
    assert rc.signed_by_pem(pair, (pki / "ca.crt").read_bytes())
    assert not rc.signed_by_pem(pair, (pki / "front-proxy-ca.crt").read_bytes())
    assert not rc.signed_by_pem(b"", (pki / "ca.crt").read_bytes())  # no file: not signed


def test_the_steps_of_each_ca():
    assert [s.name for s in rc.steps_for("ca")] == ["issue", "trust", "pods", "reissue", "switch", "kubelets", "drop", "trust-new"]
    assert [s.name for s in rc.steps_for("etcd-ca")] == ["issue", "trust", "reissue", "switch", "drop", "trust-new"]


class Killed(Exception):
    """The run dies mid-roll."""


class _Facts:
    def forget(self, host):
        pass


class _Ctx:
    """What rotate() asks of an UpContext, without hosts."""

    def __init__(self, cluster, root):
        self.cluster, self.cluster_dir, self.lines, self.facts = cluster, root, [], _Facts()

    def say(self, host, text, status="ok"):
        self.lines.append((host, text))

    def reread_pki(self):
        pass


def test_an_interrupted_rotation_resumes_without_redoing_a_finished_step(generated, monkeypatch):
    from provision import rolling

    path, root = generated
    cluster = _cluster(path)
    rolls, resumed_with, die = [], {}, ["switch"]

    def roll(ctx, hosts, spec, journal):
        step = journal.key.rsplit(":", 1)[1]
        rolls.append(step)
        resumed_with[step] = sorted(name for name in journal.hosts if journal.done(name))
        if step in die:  # the switch roll: one host done, then the run dies
            die.clear()
            journal.mark(hosts[0].name, "done")
            raise Killed
        return []

    monkeypatch.setattr(rolling, "roll", roll)
    ctx = _Ctx(cluster, root)
    with pytest.raises(Killed):
        rc.rotate(rc.Rotation(ctx, "front-proxy-ca"))
    assert rolls == ["trust", "switch"]
    journal = json.loads((root / rc.JOURNAL).read_text())
    assert {k for k, v in journal["hosts"].items() if v["state"] == "done"} == {"issue", "trust", "reissue"}
    signed_once = (root / "pki" / "front-proxy-ca.crt").read_bytes()

    # Another CA's rotation is refused while this one is unfinished.
    with pytest.raises(rc.Refused, match="rotation of the front-proxy-ca CA is unfinished"):
        rc.check(cluster, root, "ca")
    rc.check(cluster, root, "front-proxy-ca")  # …and this one may continue

    rolls.clear()
    ctx = _Ctx(cluster, root)
    rc.rotate(rc.Rotation(ctx, "front-proxy-ca"))
    assert rolls == ["switch", "trust-new"]  # issue, trust and reissue not done again
    assert resumed_with["switch"] == [cluster.control_planes[0].name]  # the roll resumes host by host
    assert not any("1/6 issue" in text or "3/6 reissue" in text for _, text in ctx.lines if "done" not in text)
    assert (root / "pki" / "front-proxy-ca.crt").read_bytes() != signed_once
    assert len(_certs(root / "pki" / "front-proxy-ca.crt")) == 1
    assert not (root / rc.JOURNAL).exists() and not list(root.glob("rotate-ca.*.json"))


@pytest.mark.parametrize("args, said", [
    (["nope"], "unknown CA 'nope'; one of: ca, front-proxy-ca, etcd-ca"),
    (["ca"], "the ca CA is external"),
])
def test_bad_input_is_one_line_and_changes_nothing(generated, args, said):
    path, root = generated
    if args == ["ca"]:
        (root / "pki" / "ca.key").unlink()
    before = snapshot(root)
    code, out, err = run_cli("certs", "rotate-ca", *args, "-c", path)
    assert code != 0 and said in err and len(err.strip().splitlines()) == 1, out + err
    assert snapshot(root) == before


def test_the_dry_run_lists_the_steps_per_host_and_changes_nothing(generated):
    path, root = generated
    before = snapshot(root)
    code, out, err = run_cli("certs", "rotate-ca", "ca", "-c", path, "--dry-run")
    assert code == 0, out + err
    assert snapshot(root) == before
    names = [h["name"] for h in yaml.safe_load(path.read_text())["hosts"]]
    for step in ("1/8 issue", "3/8 pods", "4/8 reissue", "7/8 drop"):
        assert any(line.startswith("local") and step in line for line in out.splitlines()), out
    for step in ("2/8 trust", "5/8 switch", "6/8 kubelets", "8/8 trust-new"):
        assert [line.split()[0] for line in out.splitlines() if f" {step}:" in line and not line.startswith("local")] == names, out
    worker_trust = next(line for line in out.splitlines() if line.startswith(names[-1]) and "2/8 trust:" in line)
    assert "not drained" in worker_trust and "kubelet restarted" in worker_trust, out
    cp_switch = next(line for line in out.splitlines() if line.startswith(names[0]) and "5/8 switch:" in line)
    assert "/etc/kubernetes/pki/apiserver.crt" in cp_switch and "kube-apiserver" in cp_switch, out
    assert out.strip().endswith("dry run: nothing was changed")


class _Answer:
    def __init__(self, data=None):
        self.data, self.ok = data or {}, True

    def json(self, what):
        return self.data


def test_workloads_are_restarted_and_on_delete_ones_are_named_not_restarted():
    ran = []

    class Kubectl:
        def run(self, *args, **kw):
            ran.append(args)
            if args[0] == "get":
                return _Answer({"items": [
                    {"kind": "DaemonSet", "metadata": {"namespace": "kube-system", "name": "kube-proxy"},
                     "spec": {"updateStrategy": {"type": "RollingUpdate"}}},
                    {"kind": "StatefulSet", "metadata": {"namespace": "db", "name": "pg"},
                     "spec": {"updateStrategy": {"type": "OnDelete"}}},
                    {"kind": "Deployment", "metadata": {"namespace": "kube-system", "name": "coredns"}, "spec": {}}]})
            return _Answer()

    ctx = _Ctx(None, None)
    ctx.kubectl = lambda **kw: Kubectl()
    ctx.options = type("O", (), {"node_timeout": 60.0})()
    rc.restart_workloads(ctx)
    restarted = [a[2] for a in ran if a[:2] == ("rollout", "restart")]
    assert restarted == ["daemonset/kube-proxy", "deployment/coredns"]
    assert [a[2] for a in ran if a[:2] == ("rollout", "status")] == restarted
    assert any("db/statefulset/pg" in text and "OnDelete" in text for _, text in ctx.lines)
