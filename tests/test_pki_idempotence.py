"""A second `certs generate` with nothing changed writes nothing at all."""

from __future__ import annotations

import re

from testkit import cluster_dir_of, hosts, run_cli, snapshot


def test_generate_twice_changes_nothing(make_cluster):
    path = make_cluster(hosts=hosts(3, 2), controlPlaneEndpoint="api.test.example:6443")
    rc, out, err = run_cli("certs", "generate", "-c", path)
    assert rc == 0, out + err
    cluster_dir = cluster_dir_of(path)
    before = snapshot(cluster_dir)
    assert sum(1 for name in before if name.endswith(".key")) > 20

    rc, out, err = run_cli("certs", "generate", "-c", path)
    assert rc == 0, out + err
    assert snapshot(cluster_dir) == before
    assert "created" not in out and "stale" not in out, out
    # The summary counts only kept items: at least 3 CAs, sa, 21 leaves and 2 + 6 + 5 kubeconfigs.
    summary = re.fullmatch(r"(\d+) kept", out.splitlines()[-2].strip())
    assert summary and int(summary.group(1)) >= 3 + 1 + 21 + 2 + 6 + 5, out

    rc, out, err = run_cli("certs", "check-expiration", "-c", path)
    assert rc == 0, out + err
    assert snapshot(cluster_dir) == before
