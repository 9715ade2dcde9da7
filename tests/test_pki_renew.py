"""A cert that no longer matches the cluster is reported, never silently rewritten; `certs renew`
replaces it, backing up the old pair and keeping the key unless --new-key."""

from __future__ import annotations

import re

from testkit import cluster_dir_of, hosts, openssl_public_key, openssl_verify, openssl_x509, run_cli, snapshot

ENDPOINT = "api.test.example:6443"


def test_stale_sans_reported_then_renewed(make_cluster):
    path = make_cluster(hosts=hosts(3), controlPlaneEndpoint=ENDPOINT)
    rc, out, err = run_cli("certs", "generate", "-c", path)
    assert rc == 0, out + err
    cluster_dir = cluster_dir_of(path)
    pki = cluster_dir / "pki"
    cp1_crt, cp1_key = pki / "nodes/cp1/apiserver.crt", pki / "nodes/cp1/apiserver.key"
    original_crt, original_key = cp1_crt.read_bytes(), cp1_key.read_bytes()

    # The operator adds SANs: every apiserver cert is now stale, and generate leaves them alone.
    make_cluster(hosts=hosts(3), controlPlaneEndpoint=ENDPOINT,
                 certificates={"apiServerExtraSANs": ["api.new.example", "198.51.100.9"]})
    before = snapshot(cluster_dir)
    rc, out, err = run_cli("certs", "generate", "-c", path)
    assert rc == 0, out + err
    assert snapshot(cluster_dir) == before
    for host in ("cp1", "cp2", "cp3"):
        line = next(line for line in out.splitlines() if f"apiserver ({host})" in line)
        assert line.startswith("stale") and "api.new.example" in line and "198.51.100.9" in line, out
    assert "renew" in err  # tells how to fix it

    rc, out, err = run_cli("certs", "check-expiration", "-c", path)
    assert rc == 1 and "apiserver (cp1)" in err, out + err

    # Renew one host's cert, keeping its key.
    rc, out, err = run_cli("certs", "renew", "--local-only", "apiserver", "--host", "cp1", "-c", path)
    assert rc == 0, out + err
    backups = sorted((cluster_dir / "backup").iterdir())
    assert len(backups) == 1 and re.fullmatch(r"\d{8}T\d{6}Z", backups[0].name), backups
    assert (backups[0] / "pki/nodes/cp1/apiserver.crt").read_bytes() == original_crt
    assert (backups[0] / "pki/nodes/cp1/apiserver.key").read_bytes() == original_key
    assert cp1_key.read_bytes() == original_key  # the key is kept as it was
    assert openssl_public_key(cp1_crt, of_cert=True) == openssl_public_key(cp1_key, of_cert=False)
    renewed = openssl_x509(cp1_crt)
    assert "api.new.example" in renewed.dns and "198.51.100.9" in renewed.ips
    assert openssl_verify(pki / "ca.crt", cp1_crt)[0]
    assert (pki / "nodes/cp2/apiserver.crt").read_bytes() == before["pki/nodes/cp2/apiserver.crt"][0]

    rc, out, err = run_cli("certs", "check-expiration", "-c", path)
    assert rc == 1 and "apiserver (cp2)" in err and "apiserver (cp1)" not in err, out + err

    # --new-key replaces the key too; a second renew in the same second keeps the first backup.
    renewed_crt = cp1_crt.read_bytes()
    rc, out, err = run_cli("certs", "renew", "--local-only", "apiserver", "--host", "cp1", "--new-key", "-c", path)
    assert rc == 0, out + err
    assert cp1_key.read_bytes() != original_key
    assert openssl_public_key(cp1_crt, of_cert=True) == openssl_public_key(cp1_key, of_cert=False)
    assert openssl_public_key(cp1_crt, of_cert=True) != openssl_public_key(backups[0] / "pki/nodes/cp1/apiserver.key", of_cert=False)
    backups = sorted((cluster_dir / "backup").iterdir())
    assert len(backups) == 2
    assert (backups[0] / "pki/nodes/cp1/apiserver.crt").read_bytes() == original_crt
    assert (backups[1] / "pki/nodes/cp1/apiserver.crt").read_bytes() == renewed_crt

    # Renewing the rest clears every problem.
    rc, out, err = run_cli("certs", "renew", "--local-only", "apiserver", "-c", path)
    assert rc == 0, out + err
    rc, out, err = run_cli("certs", "check-expiration", "-c", path)
    assert rc == 0, out + err


def test_renew_unknown_name_or_host_is_one_line(make_cluster):
    path = make_cluster()
    assert run_cli("certs", "generate", "-c", path)[0] == 0
    for args in (("apiserverx",), ("apiserver", "--host", "nope")):
        rc, out, err = run_cli("certs", "renew", "--local-only", *args, "-c", path)
        assert rc != 0 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_two_renews_in_one_second_keep_both_backups(make_cluster):
    """Backups are named by the second; the second renew must not overwrite the first's backup."""
    import datetime as dt

    from provision.config import load_cluster
    from provision.pki import PKIStore

    path = make_cluster()
    store = PKIStore(load_cluster(path))
    store.generate()
    crt = store.root / "pki/nodes/cp1/apiserver.crt"
    original = crt.read_bytes()
    moment = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    store.renew(store.select(["apiserver"]), now=moment)
    store.renew(store.select(["apiserver"]), now=moment)
    backups = sorted(p.name for p in (store.root / "backup").iterdir())
    assert backups == ["20300102T030405Z", "20300102T030405Z.1"]
    assert (store.root / "backup/20300102T030405Z/pki/nodes/cp1/apiserver.crt").read_bytes() == original


def test_new_endpoint_makes_kubeconfigs_stale_until_renewed(make_cluster):
    """Moving controlPlaneEndpoint: admin.conf and a worker's kubelet.conf must point at it; the
    scheduler's and the control plane's kubelet kubeconfigs (its own address) stay valid."""
    path = make_cluster(controlPlaneEndpoint="10.0.0.11:6443", hosts=hosts(1, 1))
    assert run_cli("certs", "generate", "-c", path)[0] == 0
    make_cluster(controlPlaneEndpoint="api.moved.example:6443", hosts=hosts(1, 1))
    rc, out, err = run_cli("certs", "generate", "-c", path)
    assert rc == 0, out + err
    stale = {tuple(line.split()[1:3]) for line in out.splitlines() if line.startswith("stale")}
    assert {name for name, _ in stale} == {"apiserver", "admin.conf", "super-admin.conf", "kubelet.conf"}, out
    assert not any(name == "kubelet.conf" and "cp1" in where for name, where in stale), out
    assert "https://api.moved.example:6443" in out

    rc, out, err = run_cli("certs", "renew", "--local-only", "admin.conf", "super-admin.conf", "kubelet.conf", "apiserver", "-c", path)
    assert rc == 0, out + err
    admin = (cluster_dir_of(path) / "kubeconfigs" / "admin.conf").read_text()
    assert "server: https://api.moved.example:6443" in admin
    assert run_cli("certs", "check-expiration", "-c", path)[0] == 0
