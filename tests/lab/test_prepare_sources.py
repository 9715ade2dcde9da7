"""`kubeprov prepare` without a bundle: kubelet, kubectl and crictl from `packages` and `release`.

Kubernetes binaries do not exist here, so both sources serve clearly labelled STAND-INs that only
prove installation, pinning, checksums and unit wiring — none is ever started:
- packages: .debs built here with dpkg-deb, in an apt repository laid out like pkgs.k8s.io's
  (<repo>/core:/stable:/v1.35/deb/ with Packages, Release signed by a throwaway GPG key, and
  Release.key), served on the lab bridge inside the lab's own network namespace;
- release: files in dl.k8s.io's and GitHub's layouts with their .sha256, served on loopback for
  the controller, which downloads, checks and copies them.

Its own lab (not the session `lab` fixture): it installs packages the other lab tests must not
inherit. Hosts 1 (control plane) and 2 (worker) use packages; host 3 (control plane) release.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import io
import os
import subprocess
import sys
import tarfile
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from provision.lab.layout import Layout
from provision.lab.system import in_netns
from provision.lab.testing import TestLab, running_lab

pytestmark = [pytest.mark.lab, pytest.mark.integration]

VERSION = "v1.35.0"
# pkgs.k8s.io names every build <version>-1.1 (kubelet 1.35.0-1.1; cri-tools follows the minor).
PINNED = "1.35.0-1.1"
NEWER = "1.35.1-1.1"  # also in the repository: apt must install the pin, not the newest
REPO_PORT = 8089  # on the lab bridge, beside the lab's own repository (8080)
K8S_PACKAGES = {"kubelet": "kubelet", "kubectl": "kubectl", "cri-tools": "crictl"}  # package → binary


def stand_in(name: str) -> str:
    return f'#!/bin/sh\necho "STAND-IN {name}, not a real binary" >&2\nexit 3\n'


@pytest.fixture(scope="module")
def own_lab():
    """A lab of its own: these tests change the hosts more than the shared `lab` may be changed."""
    with running_lab("s") as own:
        yield own


def kubeprov(*args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "provision", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def write_cluster(path: Path, lab: TestLab, hosts: list, roles: list[list[str]], artifacts: dict) -> Path:
    ssh = {"key": str(lab.key), "knownHosts": str(lab.known_hosts)}
    document = {
        "apiVersion": "kubeprov.io/v1alpha1", "kind": "Cluster", "name": path.stem,
        "kubernetesVersion": VERSION, "clusterDir": str(path.parent / f"{path.stem}-dir"), "cni": "bridge",
        "containerd": {"restrict_oom_score_adj": True},  # nspawn lacks CAP_SYS_RESOURCE
        "artifacts": artifacts,
        "hosts": [{"name": h.name, "address": h.address, "roles": r, "ssh": ssh} for h, r in zip(hosts, roles)],
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


# --- packages: a signed apt repository like pkgs.k8s.io's ---------------------------------------


def build_deb(out_dir: Path, work: Path, package: str, binary: str, version: str) -> None:
    root = work / f"{package}_{version}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin" / binary).write_text(stand_in(binary))
    (root / "usr/bin" / binary).chmod(0o755)
    (root / "DEBIAN/control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: amd64\nMaintainer: kubeprov tests <tests@kubeprov.invalid>\n"
        f"Description: STAND-IN {package} for kubeprov tests, not a real binary\n"
    )
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(out_dir / f"{package}_{version}_amd64.deb")],
                   check=True, capture_output=True)


def release_file(deb_dir: Path) -> str:
    lines = ["Origin: kubeprov-test STAND-IN", "Label: kubeprov-test", "Architectures: amd64", "Components:",
             "Date: Thu, 01 Jan 2026 00:00:00 UTC", "SHA256:"]
    for name in ("Packages", "Packages.gz"):
        data = (deb_dir / name).read_bytes()
        lines.append(f" {hashlib.sha256(data).hexdigest()} {len(data)} {name}")
    return "\n".join(lines) + "\n"


def build_repository(top: Path) -> Path:
    """<top>/core:/stable:/v1.35/deb/: debs, Packages, Release (+ InRelease, Release.gpg), Release.key."""
    deb_dir = top / "repo" / "core:" / "stable:" / "v1.35" / "deb"
    deb_dir.mkdir(parents=True)
    for package, binary in K8S_PACKAGES.items():
        for version in (PINNED, NEWER):
            build_deb(deb_dir, top / "debs-build", package, binary, version)
    scan = subprocess.run(["dpkg-scanpackages", "--multiversion", "."], cwd=deb_dir, check=True, capture_output=True, text=True)
    (deb_dir / "Packages").write_text(scan.stdout)
    (deb_dir / "Packages.gz").write_bytes(gzip.compress(scan.stdout.encode()))
    (deb_dir / "Release").write_text(release_file(deb_dir))
    gnupg = top / "gnupg"
    gnupg.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(gnupg), "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
    identity = "kubeprov test repository (throwaway) <tests@kubeprov.invalid>"
    subprocess.run([*gpg, "--quick-gen-key", identity, "ed25519", "sign", "1d"], check=True, capture_output=True)
    subprocess.run([*gpg, "--armor", "--detach-sign", "-o", str(deb_dir / "Release.gpg"), str(deb_dir / "Release")], check=True, capture_output=True)
    subprocess.run([*gpg, "--clearsign", "-o", str(deb_dir / "InRelease"), str(deb_dir / "Release")], check=True, capture_output=True)
    key = subprocess.run([*gpg, "--armor", "--export", identity], check=True, capture_output=True).stdout
    (deb_dir / "Release.key").write_bytes(key)
    return top / "repo"


@contextlib.contextmanager
def served_on_the_lab_bridge(lab: TestLab, directory: Path):
    """An HTTP server for `directory` on the bridge address, in the lab's namespace (as its own repo)."""
    gateway = urlsplit(lab.repo_url).hostname
    layout = Layout(lab.name, int(gateway.split(".")[2]))
    args = in_netns(layout.lan_netns, ["python3", "-m", "http.server", "--bind", layout.gateway,
                                       "--directory", str(directory), str(REPO_PORT)])
    server = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        probe = f"for i in $(seq 50); do python3 -c \"import urllib.request; urllib.request.urlopen('http://{gateway}:{REPO_PORT}/')\" && exit 0; sleep 0.2; done; exit 1"
        lab.ssh(lab.hosts[0], probe)
        yield f"http://{gateway}:{REPO_PORT}"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def packages(own_lab, tmp_path_factory):
    top = tmp_path_factory.mktemp("packages")
    repo = build_repository(top)
    with served_on_the_lab_bridge(own_lab, repo) as url:
        cluster = write_cluster(top / "pkgs.yaml", own_lab, own_lab.hosts[:2], [["control-plane"], ["worker"]],
                                {"source": "packages", "packageRepo": f"{url}/core:/stable:"})
        proc = kubeprov("prepare", "-c", str(cluster), "--lab")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        yield {"lab": own_lab, "file": cluster, "output": proc.stdout}


def test_packages_installs_the_pinned_stand_ins_held_and_wires_the_kubelet_unit(packages):
    lab = packages["lab"]
    control_plane, worker = lab.hosts[:2]
    for host, expected in ((control_plane, ["cri-tools", "kubectl", "kubelet"]), (worker, ["cri-tools", "kubelet"])):
        installed = lab.ssh(host, "dpkg-query -W -f='${Package} ${Version} ${Status}\\n' kubelet kubectl cri-tools 2>/dev/null",
                            check=False).stdout.splitlines()
        state = {line.split(" ", 2)[0]: tuple(line.split(" ", 2)[1:]) for line in installed if line.endswith("ok installed")}
        assert state == {name: (PINNED, "hold ok installed") for name in expected}, installed  # dpkg's "hold" selection
        assert sorted(lab.ssh(host, "apt-mark showhold").stdout.split()) == expected
        # They are the stand-ins from the signed repository, owned by their packages.
        assert "STAND-IN kubelet, not a real binary" in lab.ssh(host, "cat /usr/bin/kubelet").stdout
        assert lab.ssh(host, "dpkg -S /usr/bin/kubelet /usr/bin/crictl").stdout.split() == ["kubelet:", "/usr/bin/kubelet",
                                                                                          "cri-tools:", "/usr/bin/crictl"]
        keyring = lab.ssh(host, "cat /etc/apt/sources.list.d/kubernetes.list").stdout
        assert "deb [signed-by=/etc/apt/keyrings/kubernetes.asc] http://" in keyring and "/core:/stable:/v1.35/deb/ /" in keyring
        # apt keeps a repository's InRelease only once its signature verified against that key.
        assert lab.ssh(host, "ls /var/lib/apt/lists/ | grep -c '_core:_stable:_v1.35_deb_InRelease$'").stdout.strip() == "1"
        assert lab.ssh(host, "systemctl is-enabled kubelet").stdout.strip() == "enabled"
        assert lab.ssh(host, "systemctl is-active kubelet", check=False).stdout.strip() == "inactive"
        unit = lab.ssh(host, "systemctl cat kubelet").stdout
        assert "10-kubeadm.conf" in unit and "ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS" in unit
        # The container runtime is the host's Debian packages' (a bundle may carry it instead:
        # tests/lab/test_prepare.py), run by kubeprov's unit, the plugins linked into /opt/cni/bin.
        assert lab.ssh(host, "dpkg -S /usr/bin/containerd /usr/sbin/runc").stdout.split() == [
            "containerd:", "/usr/bin/containerd", "runc:", "/usr/sbin/runc"]
        assert lab.ssh(host, "readlink /opt/cni/bin/bridge").stdout.strip() == "/usr/lib/cni/bridge"
        assert lab.ssh(host, "systemctl show -P FragmentPath containerd").stdout.strip() == "/etc/systemd/system/containerd.service"
        assert lab.ssh(host, "systemctl is-active containerd").stdout.strip() == "active"


def test_packages_second_prepare_changes_nothing(packages):
    from provision.config.loader import load_cluster
    from provision.prepare import Options, prepare

    lab = packages["lab"]
    proc = kubeprov("prepare", "-c", str(packages["file"]), "--lab")
    assert proc.returncode == 0 and "nothing to do: all 2 hosts have this exact state" in proc.stdout, proc.stdout + proc.stderr
    report = prepare(load_cluster(packages["file"], None), Options(lab=True, force=True, known_hosts=lab.known_hosts))
    assert report.result.ok
    assert {name: h.changed for name, h in report.result.hosts.items()} == {h.name: 0 for h in lab.hosts[:2]}


# --- release: the controller downloads and checks, the role copies and checks again ------------


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def served_on_loopback(directory: Path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def build_release(root: Path, *, wrong_kubelet_sum: bool = False) -> dict[str, str]:
    """dl.k8s.io's <base>/<v>/bin/linux/amd64/<name>(.sha256) and cri-tools' GitHub tarball; → dest: sha256."""
    expected = {}
    bin_dir = root / "dl" / VERSION / "bin/linux/amd64"
    bin_dir.mkdir(parents=True)
    for name in ("kubelet", "kubectl"):
        data = stand_in(name).encode()
        (bin_dir / name).write_bytes(data)
        digest = hashlib.sha256(data + (b"x" if wrong_kubelet_sum and name == "kubelet" else b"")).hexdigest()
        (bin_dir / f"{name}.sha256").write_text(digest)  # dl.k8s.io publishes the bare digest
        expected[f"/usr/bin/{name}"] = hashlib.sha256(data).hexdigest()
    gh = root / "gh/kubernetes-sigs/cri-tools/releases/download" / VERSION
    gh.mkdir(parents=True)
    tarball = gh / f"crictl-{VERSION}-linux-amd64.tar.gz"
    crictl = stand_in("crictl").encode()
    with tarfile.open(tarball, "w:gz") as tar:
        info = tarfile.TarInfo("crictl")
        info.size, info.mode = len(crictl), 0o755
        tar.addfile(info, io.BytesIO(crictl))
    (gh / f"{tarball.name}.sha256").write_text(hashlib.sha256(tarball.read_bytes()).hexdigest())
    expected["/usr/bin/crictl"] = hashlib.sha256(crictl).hexdigest()
    return expected


def release_cluster(top: Path, lab: TestLab, url: str, name: str) -> Path:
    return write_cluster(top / f"{name}.yaml", lab, [lab.hosts[2]], [["control-plane"]],
                         {"source": "release", "releaseBaseURL": f"{url}/{name}/dl", "githubBaseURL": f"{url}/{name}/gh"})


def test_release_wrong_checksum_refused_before_any_host_is_touched_then_placed_and_verified(own_lab, tmp_path):
    host = own_lab.hosts[2]
    build_release(tmp_path / "web" / "bad", wrong_kubelet_sum=True)
    expected = build_release(tmp_path / "web" / "good")
    cache = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    with served_on_loopback(tmp_path / "web") as url:
        bad = kubeprov("prepare", "-c", str(release_cluster(tmp_path, own_lab, url, "bad")), "--lab", env=cache)
        assert bad.returncode == 5, bad.stdout + bad.stderr
        assert f"{url}/bad/dl/{VERSION}/bin/linux/amd64/kubelet: sha256 mismatch" in bad.stderr
        assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
        untouched = own_lab.ssh(host, "ls /var/lib/kubeprov/applied.json /usr/bin/kubelet /usr/bin/kubectl /usr/bin/crictl 2>/dev/null",
                                check=False)
        assert untouched.stdout == ""

        good = release_cluster(tmp_path, own_lab, url, "good")
        proc = kubeprov("prepare", "-c", str(good), "--lab", env=cache)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    got = own_lab.ssh(host, "sha256sum " + " ".join(sorted(expected))).stdout.split()
    assert dict(zip(got[1::2], got[0::2])) == expected
    assert own_lab.ssh(host, "stat -c %a /usr/bin/kubelet").stdout.strip() == "755"
    assert own_lab.ssh(host, "systemctl is-enabled kubelet").stdout.strip() == "enabled"
    assert own_lab.ssh(host, "systemctl is-active kubelet", check=False).stdout.strip() == "inactive"
    assert "ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS" in own_lab.ssh(host, "systemctl cat kubelet").stdout
    assert own_lab.ssh(host, "test -e /etc/apt/sources.list.d/kubernetes.list", check=False).returncode == 1

    # Idempotent: forced through Ansible again (the server is gone: the verified cache serves), 0 changed.
    from provision.config.loader import load_cluster
    from provision.prepare import Options, prepare

    os.environ["XDG_CACHE_HOME"], saved = cache["XDG_CACHE_HOME"], os.environ.get("XDG_CACHE_HOME")
    try:
        report = prepare(load_cluster(good, None), Options(lab=True, force=True, known_hosts=own_lab.known_hosts))
    finally:
        os.environ.pop("XDG_CACHE_HOME") if saved is None else os.environ.__setitem__("XDG_CACHE_HOME", saved)
    assert report.result.ok and {n: h.changed for n, h in report.result.hosts.items()} == {host.name: 0}
