"""`kubeprov etcd backup|restore` without a cluster: the archive format, the sha256 refusals, never
overwriting, the CA material, and the snapshot's way through real etcd on this machine (the host
script streaming it over etcd's TLS JSON gateway, `etcdctl snapshot restore` making a data dir
that a real etcd starts from with exactly the snapshot's keys).

The same commands on a real cluster: tests/e2e/test_day2_etcd_e2e.py.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import pytest
import yaml
from testkit import cluster_dir_of, hosts, run_cli, snapshot

from provision.day2 import etcd_backup as eb
from provision.errors import KubeprovError

ETCD, ETCDCTL = shutil.which("etcd"), shutil.which("etcdctl")


def _ca(tmp_path: Path) -> dict[str, bytes]:
    return {"pki/ca.crt": b"CA CERT\n", "pki/ca.key": b"CA KEY\n", "pki/front-proxy-ca.crt": b"FP\n",
            "pki/etcd/ca.crt": b"ETCD CA\n", "pki/sa.key": b"SA KEY\n", "pki/sa.pub": b"SA PUB\n",
            "secrets/encryption-key": os.urandom(32)}


def _archive(snapshot_bytes: bytes = b"snapshot bytes" * 100, **manifest) -> tuple[bytes, eb.Backup]:
    backup = eb.Backup(snapshot_bytes, _ca(Path(".")), {"cluster": "demo", "revision": 42, "created": "2026-12-03T12:00:00Z",
                                                       "etcdTopology": "stacked", **manifest})
    return eb.build_archive(backup), backup


def _members(data: bytes) -> dict[str, tuple[bytes, int]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {i.name: (tar.extractfile(i).read(), i.mode) for i in tar}


# --- the archive ------------------------------------------------------------------------------


def test_archive_holds_snapshot_ca_material_manifest_and_sums_and_reads_back(tmp_path):
    data, backup = _archive()
    members = _members(data)
    assert set(members) == {"manifest.json", "snapshot.db", "SHA256SUMS", *backup.files}
    # SHA256SUMS is `sha256sum -c` format over every other member.
    (tmp_path / "x").mkdir()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(tmp_path / "x", filter="data")
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path / "x", capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count(": OK") == len(members) - 1
    # Keys are 0600 inside, certificates 0644.
    assert members["pki/ca.key"][1] == 0o600 and members["secrets/encryption-key"][1] == 0o600
    assert members["pki/ca.crt"][1] == 0o644
    manifest = json.loads(members["manifest.json"][0])
    assert manifest["kind"] == "kubeprov-etcd-backup" and manifest["format"] == 1
    assert manifest["snapshotSha256"] == hashlib.sha256(backup.snapshot).hexdigest()
    assert manifest["revision"] == 42 and manifest["cluster"] == "demo"

    path = eb.write_new(tmp_path / "b.tar.gz", data)
    read = eb.read_archive(path)
    assert read.snapshot == backup.snapshot and read.files == backup.files and read.manifest["revision"] == 42
    assert eb.build_archive(backup) == data  # deterministic


def test_backup_file_is_0600_with_its_sha256_beside_it(tmp_path):
    data, _ = _archive()
    path = eb.write_new(tmp_path / "sub" / "b.tar.gz", data)
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "sub").stat().st_mode & 0o777 == 0o700
    side = tmp_path / "sub" / "b.tar.gz.sha256"
    check = subprocess.run(["sha256sum", "-c", side.name], cwd=side.parent, capture_output=True, text=True)
    assert check.returncode == 0 and "b.tar.gz: OK" in check.stdout


def test_an_existing_file_is_never_overwritten(tmp_path):
    data, _ = _archive()
    target = tmp_path / "b.tar.gz"
    target.write_bytes(b"precious")
    with pytest.raises(KubeprovError, match="exists: refusing to overwrite"):
        eb.write_new(target, data)
    assert target.read_bytes() == b"precious" and not (tmp_path / "b.tar.gz.sha256").exists()
    # Its sidecar alone existing is refused too: the pair must stay consistent.
    other = tmp_path / "c.tar.gz"
    (tmp_path / "c.tar.gz.sha256").write_text("x  c.tar.gz\n")
    with pytest.raises(KubeprovError, match="c.tar.gz.sha256 exists"):
        eb.write_new(other, data)
    assert not other.exists()


def _repack(data: bytes, change: dict[str, bytes]) -> bytes:
    """The archive with some members' contents replaced, SHA256SUMS left as it was."""
    members = _members(data)
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb") as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for name, (content, mode) in members.items():
            content = change.get(name, content)
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), mode
            tar.addfile(info, io.BytesIO(content))
    return raw.getvalue()


def test_a_damaged_snapshot_or_ca_file_is_refused_naming_it(tmp_path):
    data, backup = _archive()
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(_repack(data, {"snapshot.db": backup.snapshot[:-1] + b"X"}))
    with pytest.raises(KubeprovError, match=r"sha256 mismatch for snapshot.db.*nothing was changed"):
        eb.read_archive(bad)
    bad2 = tmp_path / "bad2.tar.gz"
    bad2.write_bytes(_repack(data, {"pki/ca.key": b"another key\n"}))
    with pytest.raises(KubeprovError, match=r"sha256 mismatch for pki/ca.key"):
        eb.read_archive(bad2)


def test_the_archive_not_matching_its_recorded_sha256_is_refused(tmp_path):
    data, _ = _archive()
    path = eb.write_new(tmp_path / "b.tar.gz", data)
    path.write_bytes(data[:-10] + bytes(10))  # same size, other bytes
    with pytest.raises(KubeprovError, match=r"b.tar.gz: sha256 mismatch: the file is [0-9a-f]{64}, b.tar.gz.sha256 says"):
        eb.read_archive(path)


def test_not_a_backup_is_one_line(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not gzip at all")
    with pytest.raises(KubeprovError, match="not a readable kubeprov etcd backup"):
        eb.read_archive(junk)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escape")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    junk.write_bytes(raw.getvalue())
    with pytest.raises(KubeprovError, match="unexpected entry '../escape'"):
        eb.read_archive(junk)


# --- the CA material --------------------------------------------------------------------------


def test_ca_material_goes_into_an_empty_cluster_dir_and_a_different_ca_is_refused(tmp_path):
    files = _ca(tmp_path)
    written = eb.install_ca(tmp_path / "c", files)
    assert sorted(written) == sorted(files)
    assert (tmp_path / "c" / "pki" / "ca.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "c" / "pki" / "ca.crt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "c" / "pki").stat().st_mode & 0o777 == 0o700
    assert eb.install_ca(tmp_path / "c", files) == []  # the same again: nothing to write

    other = tmp_path / "other"
    (other / "pki").mkdir(parents=True)
    (other / "pki" / "ca.crt").write_bytes(b"ANOTHER CA\n")
    before = snapshot(other)
    with pytest.raises(KubeprovError, match=r"other/pki/ca.crt differs from the backup's.*nothing was changed"):
        eb.install_ca(other, files)
    assert snapshot(other) == before


# --- the CLI, without any host ----------------------------------------------------------------


@pytest.fixture
def generated(make_cluster):
    path = make_cluster(hosts=hosts(1, 2))
    code, out, err = run_cli("certs", "generate", "-c", path)
    assert code == 0, out + err
    return path


def test_restore_refuses_a_damaged_backup_in_one_line_before_touching_anything(generated, tmp_path):
    data, backup = _archive()
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(_repack(data, {"snapshot.db": b"Y" + backup.snapshot[1:]}))
    before = snapshot(cluster_dir_of(generated))
    started = time.monotonic()
    code, out, err = run_cli("etcd", "restore", bad, "-c", generated, "--yes")
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "sha256 mismatch for snapshot.db" in lines[0], err
    assert "Traceback" not in err and out == ""
    assert snapshot(cluster_dir_of(generated)) == before
    assert time.monotonic() - started < 20  # no host was tried (the hosts are TEST-NET addresses)


def test_backup_refuses_to_overwrite_and_dry_run_writes_nothing(generated, tmp_path):
    existing = tmp_path / "keep.tar.gz"
    existing.write_bytes(b"keep me")
    code, out, err = run_cli("etcd", "backup", "-c", generated, "-o", existing)
    assert code == 1 and "exists: refusing to overwrite it" in err and existing.read_bytes() == b"keep me"
    assert len([line for line in err.splitlines() if line.strip()]) == 1

    before = snapshot(cluster_dir_of(generated))
    code, out, err = run_cli("etcd", "backup", "-c", generated, "--dry-run")
    assert code == 0, err
    assert "cp1" in err and "first healthy member" in err and "etcd-backups/etcd-" in err
    assert out.strip() == "dry run: nothing was changed"
    assert snapshot(cluster_dir_of(generated)) == before


def test_restore_dry_run_with_a_backup_of_another_cluster_ca_is_refused(generated, tmp_path):
    data, _ = _archive()  # its CA is not the generated one
    path = eb.write_new(tmp_path / "b.tar.gz", data)
    code, out, err = run_cli("etcd", "restore", path, "-c", generated, "--dry-run")
    assert code == 1 and "pki/ca.crt differs from the backup's" in err, err


# --- real etcd: the host script, the restore tool, etcd starting from the result --------------


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def _etcdctl(endpoint: str, *args: str, tls: Path | None = None) -> subprocess.CompletedProcess:
    command = [ETCDCTL, f"--endpoints={endpoint}", "--dial-timeout=3s", "--command-timeout=5s"]
    if tls:
        command += [f"--cacert={tls}/ca.crt", f"--cert={tls}/healthcheck-client.crt", f"--key={tls}/healthcheck-client.key"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=30, env={**os.environ, "ETCDCTL_API": "3"})


def _start_etcd(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([ETCD, *args], stdout=log.open("w"), stderr=subprocess.STDOUT)


def _wait(endpoint: str, tls: Path | None, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while _etcdctl(endpoint, "endpoint", "health", tls=tls).returncode != 0:
        assert proc.poll() is None, f"etcd exited: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"etcd not healthy: {log.read_text()[-2000:]}"
        time.sleep(0.2)


@pytest.mark.integration
def test_snapshot_over_the_tls_gateway_restores_into_a_data_dir_real_etcd_starts_from(make_cluster, tmp_path):
    if not (ETCD and ETCDCTL):
        pytest.skip("etcd/etcdctl not installed (Debian etcd-server/etcd-client; run scripts/setup)")
    address = "127.0.0.1"
    path = make_cluster(hosts=[{"name": "cp1", "address": "192.0.2.11", "internalAddress": address, "roles": ["control-plane"]}])
    code, out, err = run_cli("certs", "generate", "-c", path)
    assert code == 0, out + err
    pki = cluster_dir_of(path) / "pki"
    tls = tmp_path / "tls"  # what /etc/kubernetes/pki/etcd holds on the member
    tls.mkdir()
    shutil.copy(pki / "etcd" / "ca.crt", tls / "ca.crt")
    for name in ("healthcheck-client.crt", "healthcheck-client.key"):
        shutil.copy(pki / "nodes" / "cp1" / "etcd" / name, tls / name)
    client, peer = _free_port(address), _free_port(address)
    endpoint = f"https://{address}:{client}"
    node = pki / "nodes" / "cp1" / "etcd"
    log = tmp_path / "etcd.log"
    proc = _start_etcd([
        "--name=cp1", f"--data-dir={tmp_path / 'data'}", f"--listen-client-urls={endpoint}", f"--advertise-client-urls={endpoint}",
        f"--listen-peer-urls=https://{address}:{peer}", f"--initial-advertise-peer-urls=https://{address}:{peer}",
        f"--initial-cluster=cp1=https://{address}:{peer}", f"--cert-file={node / 'server.crt'}", f"--key-file={node / 'server.key'}",
        f"--trusted-ca-file={pki / 'etcd' / 'ca.crt'}", "--client-cert-auth", f"--peer-cert-file={node / 'peer.crt'}",
        f"--peer-key-file={node / 'peer.key'}", f"--peer-trusted-ca-file={pki / 'etcd' / 'ca.crt'}", "--peer-client-cert-auth",
        f"--listen-metrics-urls=http://{address}:{_free_port(address)}",
    ], log)
    restored = None
    try:
        _wait(endpoint, tls, proc, log)
        for i in range(20):
            assert _etcdctl(endpoint, "put", f"/registry/configmaps/default/before-{i}", f"value-{i}", tls=tls).returncode == 0
        # The host's side of `etcd backup`, as it runs there (python3, the healthcheck client certificate).
        out_file = tmp_path / "host" / "etcd-snapshot.tmp"
        run = subprocess.run(["python3", "-", endpoint, str(tls), str(out_file)], input=eb._SNAPSHOT_SCRIPT, capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        info = json.loads(run.stdout)
        snap = out_file.read_bytes()
        assert info["sha256"] == hashlib.sha256(snap).hexdigest() and info["size"] == len(snap)
        assert info["version"].startswith("3.") and info["revision"] >= 21
        assert out_file.stat().st_mode & 0o777 == 0o600
        assert _etcdctl(endpoint, "put", "/registry/configmaps/default/after", "gone after restore", tls=tls).returncode == 0
        status = subprocess.run([ETCDCTL, "snapshot", "status", str(out_file), "-w", "json"], capture_output=True, text=True,
                                env={**os.environ, "ETCDCTL_API": "3"})
        assert status.returncode == 0, status.stderr  # etcdctl accepts it (its sha256 trailer included)

        # The archive, read back, then the restore's data dir for a member of another cluster.
        ca = eb.collect_ca(cluster_dir_of(path))
        archive = eb.write_new(tmp_path / "b.tar.gz", eb.build_archive(eb.Backup(snap, ca, {"cluster": "test", "revision": info["revision"],
                                                                                         "etcdTopology": "stacked"})))
        backup = eb.read_archive(archive)
        layout = eb.Layout("same-hosts", ["cp1"], [])
        cluster_file = yaml.safe_load(path.read_text())
        from provision.config import load_cluster

        plan = eb.make_plan(load_cluster(path, None), backup, layout)
        assert plan.seeds == {"cp1": (f"cp1=https://{address}:2380", f"https://{address}:2380")}
        assert cluster_file["name"] == "test"
        data = eb.prepare_data(plan, tmp_path / "work")
        restored = tmp_path / "restored"
        restored.mkdir()
        with tarfile.open(fileobj=io.BytesIO(data["cp1"]), mode="r:gz") as tar:
            names = tar.getnames()
            tar.extractall(restored, filter="data")
        assert "member/snap/db" in names and any(n.startswith("member/wal/") for n in names)
    finally:
        proc.kill()
        proc.wait()
    # A real etcd starts from the restored data dir alone and holds exactly the snapshot's keys.
    client2 = _free_port(address)
    endpoint2 = f"http://{address}:{client2}"
    log2 = tmp_path / "etcd2.log"
    proc2 = _start_etcd(["--name=cp1", f"--data-dir={restored}", f"--listen-client-urls={endpoint2}",
                         f"--advertise-client-urls={endpoint2}", f"--listen-peer-urls=http://{address}:{_free_port(address)}",
                         f"--listen-metrics-urls=http://{address}:{_free_port(address)}"], log2)
    try:
        _wait(endpoint2, None, proc2, log2)
        keys = _etcdctl(endpoint2, "get", "/registry/", "--prefix", "--keys-only").stdout.split()
        assert sorted(keys) == sorted(f"/registry/configmaps/default/before-{i}" for i in range(20))
        assert _etcdctl(endpoint2, "get", "/registry/configmaps/default/before-7", "--print-value-only").stdout.strip() == "value-7"
        members = json.loads(_etcdctl(endpoint2, "member", "list", "-w", "json").stdout)["members"]
        assert [(m["name"], m["peerURLs"]) for m in members] == [("cp1", [f"https://{address}:2380"])]
    finally:
        proc2.kill()
        proc2.wait()


def test_a_snapshot_that_fails_its_own_hash_is_refused_by_the_restore_tool(tmp_path):
    if not ETCDCTL:
        pytest.skip("etcdctl not installed (Debian etcd-client; run scripts/setup)")
    snap = tmp_path / "snapshot.db"
    snap.write_bytes(b"\0" * 4096 + b"not a snapshot" + bytes(32))
    with pytest.raises(KubeprovError, match=r"snapshot restore` for cp1 failed: .*nothing was changed on the hosts"):
        eb.restored_data_dir(snap, tmp_path, "cp1", "cp1=https://10.0.0.1:2380", "https://10.0.0.1:2380", "t")


# --- the host scripts, run here by sh on real directories ------------------------------------


def _tgz(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def _sh(script: str, *args, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", script, "sh", *map(str, args)], input=stdin, capture_output=True, timeout=60)


def test_swap_moves_the_old_data_aside_and_unpacks_the_new(tmp_path):
    data, aside = tmp_path / "etcd", tmp_path / "etcd.before-restore-X"
    (data / "member" / "wal").mkdir(parents=True)
    (data / "member" / "wal" / "0.wal").write_bytes(b"old wal")
    run = _sh(eb._SWAP, data, aside, stdin=_tgz({"member/snap/db": b"new db", "member/wal/1.wal": b"new wal"}))
    assert run.returncode == 0, run.stderr
    assert (aside / "member" / "wal" / "0.wal").read_bytes() == b"old wal"  # kept
    assert (data / "member" / "snap" / "db").read_bytes() == b"new db"
    assert not (data / "member" / "wal" / "0.wal").exists()
    assert (data / "member" / "snap" / "db").stat().st_mode & 0o077 == 0 and data.stat().st_mode & 0o777 == 0o700


def test_swap_puts_the_old_data_back_when_the_new_cannot_be_unpacked(tmp_path):
    data, aside = tmp_path / "etcd", tmp_path / "aside"
    (data / "member").mkdir(parents=True)
    (data / "member" / "db").write_bytes(b"old")
    run = _sh(eb._SWAP, data, aside, stdin=b"this is not gzip")
    assert run.returncode == 1 and b"unpacking the restored data" in run.stderr
    assert (data / "member" / "db").read_bytes() == b"old"


def test_seed_refuses_a_data_dir_that_is_not_empty(tmp_path):
    data = tmp_path / "etcd"
    run = _sh(eb._SEED, data, stdin=_tgz({"member/snap/db": b"db"}))
    assert run.returncode == 0 and (data / "member" / "snap" / "db").read_bytes() == b"db"
    again = _sh(eb._SEED, data, stdin=_tgz({"member/snap/db": b"other"}))
    assert again.returncode == 1 and b"not empty: refusing" in again.stderr
    assert (data / "member" / "snap" / "db").read_bytes() == b"db"


def test_stop_and_start_move_static_pod_manifests_out_and_back(tmp_path):
    manifests, stash = tmp_path / "manifests", tmp_path / "stash"
    manifests.mkdir()
    for name in ("etcd.yaml", "kube-apiserver.yaml", "kube-scheduler.yaml", "haproxy.yaml"):
        (manifests / name).write_text(name)
    run = _sh(eb._STOP, manifests, stash, "", "", "etcd.yaml", "kube-apiserver.yaml", "kube-scheduler.yaml",
              "kube-controller-manager.yaml")
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in manifests.iterdir()) == ["haproxy.yaml"]  # what restore does not stop stays
    assert sorted(p.name for p in stash.iterdir()) == ["etcd.yaml", "kube-apiserver.yaml", "kube-scheduler.yaml"]
    assert _sh(eb._START, manifests, stash, "", "etcd.yaml").returncode == 0  # etcd first
    assert sorted(p.name for p in manifests.iterdir()) == ["etcd.yaml", "haproxy.yaml"]
    assert _sh(eb._START, manifests, stash, "").returncode == 0  # then every other stashed one
    assert sorted(p.name for p in manifests.iterdir()) == ["etcd.yaml", "haproxy.yaml", "kube-apiserver.yaml", "kube-scheduler.yaml"]
    assert list(stash.iterdir()) == []
    assert (manifests / "kube-apiserver.yaml").read_text() == "kube-apiserver.yaml"


def test_an_older_local_restore_tool_than_the_snapshots_etcd_is_said():
    if not ETCDCTL:
        pytest.skip("etcdctl not installed (Debian etcd-client; run scripts/setup)")
    tool = eb.restore_tool()
    have = eb.tool_version(tool)
    assert have is not None and have[0] == 3
    assert eb.version_warning(tool, f"{have[0]}.{have[1]}.0") is None
    newer = eb.version_warning(tool, f"{have[0]}.{have[1] + 1}.0")
    assert newer and newer.startswith("warning: the local ") and f"{have[0]}.{have[1] + 1}.0" in newer


# --- the plan, per topology (what --dry-run prints) -----------------------------------------


def _plan(make_cluster, mode: str, **overrides):
    from provision.config import load_cluster

    cluster = load_cluster(make_cluster(**overrides), None)
    members = [m.name for m in cluster.etcd_members]
    layout = eb.Layout(mode, members if mode == "same-hosts" else [], [] if mode == "same-hosts" else members)
    _, backup = _archive()
    plan = eb.make_plan(cluster, backup, layout)
    return cluster, plan, eb.plan_lines(cluster, plan)


def test_fresh_stacked_hosts_seed_only_the_first_control_plane_as_a_one_member_cluster(make_cluster):
    cluster, plan, lines = _plan(make_cluster, "fresh", hosts=hosts(3, 1))
    assert plan.seeds == {"cp1": ("cp1=https://10.0.0.11:2380", "https://10.0.0.11:2380")}
    assert ("cp1", "seed the empty /var/lib/etcd (member cp1, initial cluster cp1=https://10.0.0.11:2380)") in lines
    assert not any(host in ("cp2", "cp3", "w1") for host, _ in lines)  # `up` joins them
    assert lines[-1] == ("local", "then run `up`'s phases: the control plane starts on the restored data")


def test_fresh_external_members_are_all_seeded_with_the_whole_initial_cluster(make_cluster):
    doc = hosts(1, 1) + [{"name": f"e{i}", "address": f"192.0.2.{30 + i}", "internalAddress": f"10.0.0.{30 + i}", "roles": ["etcd"]}
                         for i in (1, 2, 3)]
    cluster, plan, lines = _plan(make_cluster, "fresh", hosts=doc, etcd={"topology": "external"})
    initial = ",".join(f"e{i}=https://10.0.0.{30 + i}:2380" for i in (1, 2, 3))
    assert plan.seeds == {f"e{i}": (initial, f"https://10.0.0.{30 + i}:2380") for i in (1, 2, 3)}


def test_same_hosts_stop_every_control_plane_restore_every_member_then_restart_every_kubelet(make_cluster):
    cluster, plan, lines = _plan(make_cluster, "same-hosts", hosts=hosts(3, 1))
    initial = ",".join(f"cp{i}=https://10.0.0.{10 + i}:2380" for i in (1, 2, 3))
    assert set(plan.seeds) == {"cp1", "cp2", "cp3"} and {v[0] for v in plan.seeds.values()} == {initial}
    assert plan.aside.startswith("/var/lib/etcd.before-restore-") and plan.token.startswith("kubeprov-restore-")
    by_host: dict[str, list[str]] = {}
    for host, line in lines:
        by_host.setdefault(host, []).append(line)
    for cp in ("cp1", "cp2", "cp3"):
        steps = by_host[cp]
        assert steps[0].startswith("move etcd.yaml, kube-apiserver.yaml, kube-controller-manager.yaml, kube-scheduler.yaml out of")
        assert any(s.startswith(f"move /var/lib/etcd's contents to {plan.aside}") for s in steps)
        assert steps[-1].startswith("restart the kubelet")
    assert by_host["w1"] == ["restart the kubelet (its watches start again from the restored revision)"]  # nothing else on a worker


def test_stop_waits_until_the_named_processes_are_gone(tmp_path):
    manifests, stash = tmp_path / "manifests", tmp_path / "stash"
    manifests.mkdir()
    name = f"kpvw{os.getpid() % 100000}"  # a process name nothing else here has
    binary = tmp_path / name
    binary.symlink_to(shutil.which("sleep"))
    proc = subprocess.Popen([str(binary), "2"])
    reaper = threading.Thread(target=proc.wait)  # reaped when it ends, as a container's shim does: no zombie left
    reaper.start()
    try:
        started = time.monotonic()
        run = _sh(eb._STOP, manifests, stash, "", f"{name} no-such-process-here")
        assert run.returncode == 0, run.stderr
        assert time.monotonic() - started >= 1.0 and proc.poll() is not None  # it waited for the process to end
    finally:
        proc.kill()
        reaper.join()
