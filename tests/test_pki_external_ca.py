"""External CA mode: ca.crt present, ca.key kept elsewhere. kubeprov can then issue nothing that
CA signs; it must say so in one line before writing anything, and accept a complete tree as is."""

from __future__ import annotations

from testkit import cluster_dir_of, hosts, run_cli, snapshot


def _generated(make_cluster):
    path = make_cluster(hosts=hosts(1, 1))
    rc, out, err = run_cli("certs", "generate", "-c", path)
    assert rc == 0, out + err
    return path, cluster_dir_of(path)


def test_complete_tree_is_accepted_and_untouched(make_cluster):
    path, cluster_dir = _generated(make_cluster)
    (cluster_dir / "pki" / "ca.key").unlink()
    before = snapshot(cluster_dir)

    rc, out, err = run_cli("certs", "generate", "-c", path)
    assert rc == 0, out + err
    assert "Traceback" not in err
    assert snapshot(cluster_dir) == before
    assert "external ca" in out  # the CA row is reported as external

    rc, out, err = run_cli("certs", "check-expiration", "-c", path)
    assert rc == 0, out + err
    ca_row = next(line.split() for line in out.splitlines() if line.startswith("ca "))
    assert ca_row[-1] == "yes", out  # EXTERNAL column of the CA table
    apiserver = next(line.split() for line in out.splitlines() if line.startswith("apiserver "))
    assert apiserver[-2:] == ["ca", "yes"], out
    etcd_server = next(line.split() for line in out.splitlines() if line.startswith("etcd-server "))
    assert etcd_server[-2:] == ["etcd-ca", "no"], out  # the etcd CA still has its key


def test_missing_leaf_is_refused_in_one_line(make_cluster):
    path, cluster_dir = _generated(make_cluster)
    pki = cluster_dir / "pki"
    (pki / "ca.key").unlink()
    (pki / "nodes" / "cp1" / "apiserver.crt").unlink()
    (pki / "nodes" / "cp1" / "apiserver.key").unlink()
    before = snapshot(cluster_dir)

    rc, out, err = run_cli("certs", "generate", "-c", path)
    assert rc != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "apiserver (cp1)" in lines[0] and "ca.key" in lines[0] and "the ca CA" in lines[0], err
    assert snapshot(cluster_dir) == before  # refused before anything was written


def test_fresh_directory_with_only_an_external_ca_is_refused_before_writing(make_cluster, tmp_path):
    """A first run with just ca.crt from elsewhere: nothing (not even other CAs) is created."""
    path, cluster_dir = _generated(make_cluster)
    ca_crt = (cluster_dir / "pki" / "ca.crt").read_bytes()
    other = make_cluster(file="other.yaml", hosts=hosts(1))
    other_dir = cluster_dir_of(other)
    (other_dir / "pki").mkdir(parents=True)
    (other_dir / "pki" / "ca.crt").write_bytes(ca_crt)
    before = snapshot(other_dir)

    rc, out, err = run_cli("certs", "generate", "-c", other)
    assert rc != 0 and len(err.strip().splitlines()) == 1, err
    assert "cannot issue apiserver (cp1)" in err and "more" in err, err
    assert snapshot(other_dir) == before


def test_renew_of_externally_signed_certs_is_refused_before_any_change(make_cluster):
    path, cluster_dir = _generated(make_cluster)
    (cluster_dir / "pki" / "etcd" / "ca.key").unlink()
    before = snapshot(cluster_dir)
    # apiserver (signed by ca, whose key is here) comes first in the table; etcd-server's CA is external.
    rc, out, err = run_cli("certs", "renew", "--local-only", "apiserver", "etcd-server", "-c", path)
    assert rc != 0 and len(err.strip().splitlines()) == 1, err
    assert "etcd-server (cp1)" in err and "ca.key" in err and "nothing was renewed" in err, err
    assert snapshot(cluster_dir) == before
    rc, out, err = run_cli("certs", "renew", "--local-only", "apiserver", "-c", path)  # its CA key is here
    assert rc == 0, out + err
