"""The offline bundle, built for real: Debian's etcd, etcdctl, runc, containerd and CNI plugins, a
real OCI image (a busybox-static layer, laid out and tarred here) and a docker-archive; SHA256SUMS
written by the real `sha256sum`. kubelet/kubectl/crictl do not exist on this machine: their
files are shell scripts that say they are stand-ins, checked only for placement and checksum.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from provision.artifacts import ArtifactError, Kind, plan_artifacts, stage, verify_bundle
from provision.artifacts.images import image_refs
from provision.artifacts.needs import images
from provision.config.loader import cluster_from_data
from testkit import run_cli, stop

DEBIAN = {
    "bin/etcd": "/usr/bin/etcd",
    "bin/etcdctl": "/usr/bin/etcdctl",
    "bin/runc": "/usr/sbin/runc",
    "bin/containerd": "/usr/bin/containerd",
    "bin/containerd-shim-runc-v2": "/usr/bin/containerd-shim-runc-v2",
    "bin/ctr": "/usr/bin/ctr",
    **{f"cni/{p}": f"/usr/lib/cni/{p}" for p in ("bridge", "host-local", "loopback", "portmap", "tuning")},
}
STAND_INS = ("kubelet", "kubectl", "crictl", "kube-proxy")
BUSYBOX = Path("/bin/busybox")

pytestmark = pytest.mark.skipif(
    not all(Path(p).exists() for p in [*DEBIAN.values(), BUSYBOX]),
    reason="needs Debian's etcd-server, etcd-client, runc, containerd, containernetworking-plugins, busybox-static (scripts/setup)",
)


def cluster(bundle: Path | None = None, **fields):
    data = {
        "apiVersion": "kubeprov.io/v1alpha1", "kind": "Cluster", "kubernetesVersion": "v1.31.4", "cni": "bridge",
        "hosts": [
            {"name": "cp1", "address": "10.0.0.11", "roles": ["control-plane"]},
            {"name": "w1", "address": "10.0.0.21", "roles": ["worker"]},
        ],
    }
    if bundle is not None:
        data["artifacts"] = {"source": "bundle", "bundleDir": str(bundle)}
    return cluster_from_data(data | fields, "test")


def external(bundle: Path | None = None):
    return cluster(
        bundle, etcd={"topology": "external"},
        hosts=[
            {"name": "cp1", "address": "10.0.0.11", "roles": ["control-plane"]},
            {"name": "w1", "address": "10.0.0.21", "roles": ["worker"]},
            {"name": "etcd1", "address": "10.0.0.31", "roles": ["etcd"]},
        ],
    )


# --- a real OCI image, written by hand from the image-spec's layout ------------------------------


def _blob(blobs: dict[str, bytes], data: bytes) -> dict:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"digest": digest, "size": len(data)}


def _tar_bytes(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in entries:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _busybox_layer() -> bytes:
    data = BUSYBOX.read_bytes()
    bin_dir = tarfile.TarInfo("bin")
    bin_dir.type, bin_dir.mode = tarfile.DIRTYPE, 0o755
    busybox = tarfile.TarInfo("bin/busybox")
    busybox.size, busybox.mode = len(data), 0o755
    sh = tarfile.TarInfo("bin/sh")
    sh.type, sh.linkname = tarfile.SYMTYPE, "busybox"
    return _tar_bytes([(bin_dir, None), (busybox, data), (sh, None)])


def oci_image_tarball(path: Path, refs: list[str]) -> Path:
    """An OCI image layout (oci-layout, index.json, blobs/sha256/…) holding one busybox image under
    each of `refs`, tarred — the shape `ctr images export` and skopeo's oci-archive produce."""
    blobs: dict[str, bytes] = {}
    layer = _busybox_layer()
    layer_desc = {"mediaType": "application/vnd.oci.image.layer.v1.tar", **_blob(blobs, layer)}
    config = {
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh", "-c", "echo STAND-IN image: busybox under a Kubernetes name"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }
    config_desc = {"mediaType": "application/vnd.oci.image.config.v1+json", **_blob(blobs, json.dumps(config).encode())}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": config_desc, "layers": [layer_desc]}
    manifest_desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", **_blob(blobs, json.dumps(manifest).encode())}
    index = {
        "schemaVersion": 2,
        "manifests": [
            {**manifest_desc, "annotations": {"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1]}}
            for ref in refs
        ],
    }
    entries = []
    for name, data in [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", json.dumps(index).encode())] + [
        (f"blobs/sha256/{digest.split(':')[1]}", data) for digest, data in blobs.items()
    ]:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), 0o644
        entries.append((info, data))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_tar_bytes(entries))
    return path


def docker_archive(path: Path, repo_tags: list[str]) -> Path:
    """`docker save`'s shape: manifest.json with RepoTags, the config and the layer tar."""
    layer = _busybox_layer()
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": repo_tags, "Layers": ["layer/layer.tar"]}]).encode()
    entries = []
    for name, data in (("manifest.json", manifest), (config_name, config), ("layer/layer.tar", layer)):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        entries.append((info, data))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_tar_bytes(entries))
    return path


def write_sums(root: Path) -> None:
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != "SHA256SUMS")
    out = subprocess.run(["sha256sum", "--", *files], cwd=root, capture_output=True, text=True, check=True).stdout
    (root / "SHA256SUMS").write_text(out)


def build_bundle(root: Path, c) -> Path:
    """A complete bundle for cluster `c`: Debian's binaries, stand-ins, one OCI tarball with every
    image the cluster needs (names from the needs list; busybox content), SHA256SUMS last."""
    for rel, source in DEBIAN.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, root / rel)
    for name in STAND_INS:
        (root / "bin" / name).write_text(f"#!/bin/sh\necho 'STAND-IN {name}, not a real binary'\nexit 1\n")
        (root / "bin" / name).chmod(0o755)
    oci_image_tarball(root / "images/kubernetes.tar", [need.ref for need in images(c)])
    write_sums(root)
    return root


@pytest.fixture
def bundle(tmp_path):
    return build_bundle(tmp_path / "bundle", external())


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()} if root.exists() else {}


# --- tests ------------------------------------------------------------------------------------


def test_complete_bundle_is_verified_planned_and_staged(bundle, tmp_path):
    c = external(bundle)
    assert verify_bundle(bundle, c) == []
    plan = plan_artifacts(c)
    by_dest = {a.dest: a for a in plan.artifacts if a.kind is Kind.BINARY}
    # every Debian binary lands where the rendered units and containerd's config look for it
    for dest, bundled in {"/usr/bin/etcd": "bin/etcd", "/usr/sbin/runc": "bin/runc", "/opt/cni/bin/bridge": "cni/bridge",
                          "/usr/bin/containerd-shim-runc-v2": "bin/containerd-shim-runc-v2", "/usr/bin/kubelet": "bin/kubelet"}.items():
        assert by_dest[dest].path == bundle / bundled
        assert by_dest[dest].sha256 == hashlib.sha256((bundle / bundled).read_bytes()).hexdigest()
    root = tmp_path / "hosts"
    for host in ("cp1", "w1", "etcd1"):
        stage(plan, root / host, host)
    etcd_host = tree(root / "etcd1")
    assert set(etcd_host) == {"usr/bin/etcd", "usr/bin/etcdctl"}
    assert etcd_host["usr/bin/etcd"] == Path("/usr/bin/etcd").read_bytes()
    worker = tree(root / "w1")
    assert worker["usr/sbin/runc"] == Path("/usr/sbin/runc").read_bytes()
    assert worker["usr/bin/kubelet"].startswith(b"#!/bin/sh\necho 'STAND-IN kubelet")
    assert "usr/bin/kubectl" not in worker and "usr/bin/kubectl" in tree(root / "cp1")
    assert worker["var/lib/kubeprov/images/kubernetes.tar"] == (bundle / "images/kubernetes.tar").read_bytes()
    # the staged runc and etcdctl are the real programs
    assert subprocess.run([root / "w1/usr/sbin/runc", "--version"], capture_output=True, text=True).stdout.startswith("runc version")
    assert os.access(root / "etcd1/usr/bin/etcdctl", os.X_OK)


def test_one_wrong_checksum_refuses_the_bundle_before_anything_is_copied(bundle, tmp_path):
    c = external(bundle)
    plan = plan_artifacts(c)  # made while the bundle was good
    runc = bundle / "bin/runc"
    data = bytearray(runc.read_bytes())
    data[len(data) // 2] ^= 0xFF
    runc.write_bytes(bytes(data))
    listed = next(line.split()[0] for line in (bundle / "SHA256SUMS").read_text().splitlines() if line.endswith(" bin/runc"))
    actual = hashlib.sha256(bytes(data)).hexdigest()

    problems = verify_bundle(bundle, c)
    assert [str(p) for p in problems] == [f"bin/runc: sha256 mismatch: SHA256SUMS says {listed}, the file has {actual}"]
    with pytest.raises(ArtifactError, match=rf"bundle {bundle} refused: bin/runc: sha256 mismatch"):
        plan_artifacts(c)
    dest = tmp_path / "host"
    dest.mkdir()
    (dest / "keep").write_text("was here")
    with pytest.raises(ArtifactError, match="bin/runc: sha256 mismatch.*nothing was copied"):
        stage(plan, dest)  # the stale plan is re-checked file by file before any write
    assert tree(dest) == {"keep": b"was here"}


def test_unlisted_and_missing_files_are_named(bundle):
    (bundle / "bin/extra-tool").write_text("nobody listed me")
    (bundle / "cni/portmap").unlink()
    problems = {p.path: p.message for p in verify_bundle(bundle, external())}
    assert problems == {"bin/extra-tool": "not listed in SHA256SUMS", "cni/portmap": "missing (listed in SHA256SUMS)"}


def test_what_the_cluster_needs_but_the_bundle_lacks(tmp_path):
    c = external()
    root = build_bundle(tmp_path / "b", cluster())  # built for a stacked cluster: no etcd binaries needed there
    for rel in ("bin/etcd", "bin/etcdctl"):
        (root / rel).unlink()
    write_sums(root)
    problems = [str(p) for p in verify_bundle(root, c)]
    assert problems == [
        "bin/etcd: missing: etcd v3.5.24 for etcd1",
        "bin/etcdctl: missing: etcd v3.5.24 for etcd1",
    ]
    # the same bundle lacks flannel's images for a flannel cluster, named by reference
    flannel = {str(p) for p in verify_bundle(root, cluster(cni="flannel"))}
    assert any("ghcr.io/flannel-io/flannel:" in p for p in flannel) and all(p.startswith("images/: no tarball holds") for p in flannel)


def test_sha256sums_itself_is_checked(bundle):
    sums = bundle / "SHA256SUMS"
    good = sums.read_text()
    sums.write_text(good + "not a checksum line\n")
    assert [p.path for p in verify_bundle(bundle)] == ["SHA256SUMS"]
    sums.write_text(good + f"{'0' * 64}  ../outside\n")
    assert [str(p) for p in verify_bundle(bundle)] == ["../outside: unsafe path in SHA256SUMS (absolute, .. or not normalised)"]
    sums.unlink()
    assert "missing" in str(verify_bundle(bundle)[0])


def test_symlink_in_bundle_is_refused(bundle):
    (bundle / "bin/runc").unlink()
    (bundle / "bin/runc").symlink_to("/usr/sbin/runc")  # same bytes, but a link can point anywhere
    assert [str(p) for p in verify_bundle(bundle)] == ["bin/runc: is a symbolic link; a bundle holds regular files only"]


def test_image_names_read_from_oci_and_docker_archives(tmp_path):
    oci = oci_image_tarball(tmp_path / "a.tar", ["registry.k8s.io/pause:3.10", "docker.io/library/haproxy:2.8.5-alpine"])
    docker = docker_archive(tmp_path / "b.tar", ["osixia/keepalived:2.0.20", "haproxy:2.8.5-alpine"])
    assert image_refs(oci) == {"registry.k8s.io/pause:3.10", "docker.io/library/haproxy:2.8.5-alpine"}
    # Docker Hub short names mean what containerd makes of them
    assert image_refs(docker) == {"docker.io/osixia/keepalived:2.0.20", "docker.io/library/haproxy:2.8.5-alpine"}
    (tmp_path / "junk.tar").write_bytes(b"not a tar")
    with pytest.raises(ValueError, match="not a readable image tarball"):
        image_refs(tmp_path / "junk.tar")


def test_cli_bundle_check(bundle, tmp_path):
    config = tmp_path / "cluster.yaml"
    c = external()
    config.write_text(yaml.safe_dump({
        "apiVersion": "kubeprov.io/v1alpha1", "kind": "Cluster", "kubernetesVersion": "v1.31.4", "cni": "bridge",
        "etcd": {"topology": "external"},
        "hosts": [{"name": h.name, "address": h.address, "roles": [r.value for r in h.roles]} for h in c.hosts],
        "artifacts": {"source": "bundle", "bundleDir": "bundle"},  # relative to the file
    }))
    code, out, err = run_cli("artifacts", "bundle", "--from", bundle, "-c", config)
    assert (code, err) == (0, ""), err
    assert "everything Kubernetes v1.31.4 (kubernetes) needs is there" in out
    code, out, _ = run_cli("artifacts", "list", "-c", config)
    assert code == 0 and f"{bundle}/bin/etcd" in out and hashlib.sha256(Path("/usr/bin/etcd").read_bytes()).hexdigest() in out
    (bundle / "bin/kubectl").unlink()
    (bundle / "debs").mkdir()
    (bundle / "debs/stray.deb").write_bytes(b"!<arch>\n")
    code, out, err = run_cli("artifacts", "bundle", "--from", bundle, "-c", config)
    assert code == 1
    assert "bin/kubectl: missing (listed in SHA256SUMS)" in err and "debs/stray.deb: not listed in SHA256SUMS" in err
    assert "Traceback" not in err
    code, out, err = run_cli("artifacts", "list", "-c", config)
    assert code == ArtifactError.exit_code and err.count("\n") == 1 and "refused: bin/kubectl: missing" in err and "1 more" in err


@pytest.mark.integration
@pytest.mark.skipif(not shutil.which("containerd") or not shutil.which("ctr"), reason="containerd/ctr not installed (scripts/setup installs them)")
def test_real_containerd_imports_the_bundle_images_under_the_names_we_read(tmp_path):
    """The tarballs are real images: Debian's containerd imports and unpacks them (native
    snapshotter: no mounts to leave behind), and lists exactly the names image_refs reads."""
    import time

    oci = oci_image_tarball(tmp_path / "oci.tar", ["registry.k8s.io/pause:3.10", "registry.k8s.io/kube-proxy:v1.31.4"])
    docker = docker_archive(tmp_path / "docker.tar", ["haproxy:2.8.5-alpine"])
    run = tmp_path / "run"
    run.mkdir()
    config = run / "config.toml"
    config.write_text('version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n')
    socket = run / "containerd.sock"
    with open(run / "containerd.log", "w") as log:
        daemon = subprocess.Popen(
            ["containerd", "--config", config, "--root", run / "root", "--state", run / "state", "--address", socket],
            stdout=log, stderr=subprocess.STDOUT,
        )
    ctr = ["ctr", "--address", str(socket), "--namespace", "k8s.io"]
    try:
        deadline = time.monotonic() + 30
        while subprocess.run([*ctr, "version"], capture_output=True).returncode != 0:
            assert daemon.poll() is None and time.monotonic() < deadline, (run / "containerd.log").read_text()[-3000:]
            time.sleep(0.2)
        for tarball in (oci, docker):
            done = subprocess.run([*ctr, "images", "import", "--snapshotter", "native", tarball], capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
        listed = subprocess.run([*ctr, "images", "ls", "--quiet"], capture_output=True, text=True, check=True).stdout.split()
        assert set(listed) == image_refs(oci) | image_refs(docker)
        check = subprocess.run([*ctr, "images", "check"], capture_output=True, text=True, check=True).stdout
        assert check.count("complete") == 3, check
    finally:
        stop(daemon)
    assert str(run) not in Path("/proc/self/mounts").read_text()


def test_seal_writes_what_sha256sum_checks(tmp_path):
    from provision.artifacts.bundle import seal

    root = tmp_path / "b"
    (root / "bin").mkdir(parents=True)
    shutil.copy2("/usr/sbin/runc", root / "bin/runc")
    (root / "images").mkdir()
    docker_archive(root / "images/x.tar", ["busybox:stand-in"])
    seal(root)
    check = subprocess.run(["sha256sum", "--check", "--strict", "SHA256SUMS"], cwd=root, capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.splitlines() == ["bin/runc: OK", "images/x.tar: OK"]
    with pytest.raises(FileExistsError, match="sealed once"):
        seal(root)


def test_remembered_digests_skip_unchanged_files_and_never_hide_a_change(bundle, tmp_path):
    """A no-op run re-hashes nothing; a file changed in place — same size, mtime set back — is
    hashed again (its ctime moved) and refused."""
    from provision.artifacts.bundle import check_integrity
    from provision.artifacts.checksums import DigestCache

    cache_file = tmp_path / "digests.json"
    sums, problems = check_integrity(bundle, DigestCache(cache_file))
    assert not problems and cache_file.exists() and oct(cache_file.stat().st_mode & 0o777) == "0o600"
    remembered = json.loads(cache_file.read_text())
    assert len(remembered) == len(sums)
    again = DigestCache(cache_file)
    assert not check_integrity(bundle, again)[1] and not again.changed  # nothing hashed a second time

    victim = next(bundle / name for name in sums if name.startswith("bin/"))
    before = victim.stat()
    data = victim.read_bytes()
    victim.write_bytes(bytes([data[0] ^ 1]) + data[1:])
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))
    _, problems = check_integrity(bundle, DigestCache(cache_file))
    assert [p.path for p in problems] == [victim.relative_to(bundle).as_posix()] and "sha256 mismatch" in problems[0].message
