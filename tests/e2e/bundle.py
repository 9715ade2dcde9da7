"""Turn a directory of Kubernetes binaries into a complete offline bundle for the e2e tests.

    assemble(source, out, version=None) -> out

`source` is either a finished bundle (it has images/ and SHA256SUMS: returned unchanged) or a
directory holding the binaries of one Kubernetes build, as `source/bin/<name>` or `source/<name>`
(kubelet, kubectl, kubeadm, kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy,
and optionally pause, crictl, containerd…). `out` receives a bundle in the layout
provision/artifacts reads (bin/, cni/, images/*.tar, SHA256SUMS, see provision/artifacts/bundle.py),
sealed with its `seal`. Nothing here builds Kubernetes: it only packs binaries that exist.

Which images: exactly the references provision.artifacts.needs.images() reads from the rendered
manifests of the clusters the e2e builds (stacked etcd; external etcd; loadBalancer
haproxy-keepalived; workerLocalLB; the bridge CNI), each cluster made through the project's own
loader. A reference this module has no recipe for is an error, never a silent omission.

What each image holds (one uncompressed layer, an OCI archive named by io.containerd.image.name):
  kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy
        the real binary from `source` at /usr/local/bin/<name> (the manifests run the bare name,
        or /usr/local/bin/kube-proxy). kube-proxy also gets this controller's iptables (Debian's
        nft backend, xtables-nft-multi and its xtables modules, the alternatives names as
        symlinks) and conntrack, each with every library `ldd` lists and the dynamic loader.
  etcd  REAL etcd, but Debian's etcd-server/etcd-client 3.4.23 from this controller, tagged with
        the reference kubeadm's manifests use (registry.k8s.io/etcd:3.5.x-0). The flags our v1.28
        static pod renders are all accepted by 3.4.23; its /health ignores the ?exclude=NOSPACE /
        ?serializable= options the probes pass (it answers plain health), and it has no /livez or
        /readyz (the ≥ 1.31 probes would fail against it).
  pause the real `pause` from `source` when there is one; otherwise a STAND-IN: busybox-static
        running a shell that sleeps until it is told to stop.
  coredns
        A STAND-IN, NOT CoreDNS (no CoreDNS binary exists here): busybox-static whose entrypoint
        ignores CoreDNS's arguments, serves the HTTP health and ready endpoints the rendered
        Deployment's probes ask for, and accepts TCP on port 53 (closing at once). It ANSWERS NO
        DNS QUERY: names do not resolve in a cluster built from this bundle.
  haproxy
        Debian's haproxy from this controller with its libraries, behind the official image's
        interface the manifest relies on: Entrypoint docker-entrypoint.sh, Cmd `haproxy -f
        /usr/local/etc/haproxy/haproxy.cfg`, user haproxy, stop signal SIGUSR1.
  keepalived
        Debian's keepalived from this controller with its libraries, behind osixia/keepalived's
        Entrypoint /container/tool/run (here a script running keepalived on
        /usr/local/etc/keepalived/keepalived.conf in the foreground, as osixia's does), plus
        every program the rendered keepalived.conf's check scripts run (curl), with libraries.
  kubeprov.test/echo:1
        A test image (busybox-static): `nc` listening on TCP 8080 that answers every connection
        with the pod's hostname and a newline, then closes. (busybox's wget segfaults inside
        pods on these kernels; its nc does not.)
Every image has /etc/passwd and /etc/group (root, nobody, and the image's own user) and /tmp (1777).

bin/ and cni/: whatever provision.artifacts.needs.components() asks of a bundle for those
clusters, from `source` when it has the file, else from this controller's Debian packages
(containerd, containerd-shim-runc-v2, runc, etcd, etcdctl, the CNI plugins in /usr/lib/cni),
plus kubeadm (from `source`) and ctr riding along. kubelet, kubectl and crictl come only from
`source`: Debian bookworm ships none of them, and nothing here fakes one. If the bundle still lacks
something the artifacts layer needs, assemble() seals what it could and raises BundleIncomplete
naming each missing file.

Cache: the bundle carries ASSEMBLED.json (sealed with it): the version, the image references and
the sha256 of every input file (source binaries, controller binaries and libraries, busybox) and of
the whole recipe. When `out` already holds a sealed bundle with the same stamp, assemble() returns
it without work; otherwise it builds next to `out` and swaps it in. A non-empty `out` that this
module did not make is never deleted.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import yaml

from provision.artifacts import bundle as layout
from provision.artifacts.images import normalise
from provision.artifacts.needs import components, images
from provision.config.loader import cluster_from_data
from provision.config.models import Cluster, LoadBalancer

__all__ = ["BundleIncomplete", "ECHO_IMAGE", "ECHO_PORT", "STAMP", "assemble", "e2e_cluster_documents", "e2e_clusters", "needed_images"]

STAMP = "ASSEMBLED.json"
ECHO_IMAGE = "kubeprov.test/echo:1"
ECHO_PORT = 8080
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static (statically linked: no libraries)
CNI_HOST_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
# Files a bundle may take from this controller when `source` lacks them (Debian's packages).
CONTROLLER_BINARIES = ("containerd", "containerd-shim-runc-v2", "runc", "etcd", "etcdctl", "ctr")
# Ride along in bin/ when present: kubeadm from the build, ctr for importing images by hand.
EXTRA_BINARIES = ("kubeadm", "ctr")
# kube-proxy (iptables mode) runs these; Debian's `iptables` alternatives point them at the nft backend.
IPTABLES_NAMES = ("iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_MTIME = 0  # every layer entry: reproducible layers, reproducible digests
_PASSWD = {"root": (0, 0, "/root", "/bin/sh"), "nobody": (65534, 65534, "/nonexistent", "/usr/sbin/nologin")}
_WORKER_LOCAL_LB = LoadBalancer.model_fields["worker_local_lb"].alias or "worker_local_lb"
_VIP = "10.0.0.100"  # never contacted: the clusters below are only rendered


class BundleIncomplete(RuntimeError):
    """The bundle was written and sealed, but the artifacts layer would still refuse it."""

    def __init__(self, bundle: Path, problems: list):
        self.bundle, self.problems = bundle, problems
        listed = "\n  ".join(str(p) for p in problems)
        super().__init__(f"bundle {bundle} lacks what provision.artifacts needs:\n  {listed}")


# --- which clusters, which images ---------------------------------------------------------------


def _hosts(cps: int, workers: int, etcd: int = 0) -> list[dict]:
    found = [{"name": f"cp{i}", "address": f"10.0.0.{10 + i}", "roles": ["control-plane"]} for i in range(1, cps + 1)]
    found += [{"name": f"w{i}", "address": f"10.0.0.{20 + i}", "roles": ["worker"]} for i in range(1, workers + 1)]
    found += [{"name": f"etcd{i}", "address": f"10.0.0.{30 + i}", "roles": ["etcd"]} for i in range(1, etcd + 1)]
    return found


def e2e_cluster_documents(version: str) -> dict[str, dict]:
    """The cluster files (as data) of the shapes the e2e builds, the bridge CNI throughout: four of
    our own, plus each of provision/lab/topologies.py's (the lab shapes the e2e suite builds) when
    that module exists, shaped from a lab-like cluster file (the first N hosts control planes)."""
    ha = {"controlPlaneEndpoint": f"{_VIP}:6443", "loadBalancer": {"mode": "haproxy-keepalived", _WORKER_LOCAL_LB: True}}
    shapes = {
        "stacked": {"hosts": _hosts(1, 2)},
        "stacked-haproxy-keepalived": {"hosts": _hosts(3, 1), **ha},
        "external-etcd": {"hosts": _hosts(1, 1, 3), "etcd": {"topology": "external"}},
        "external-etcd-haproxy-keepalived": {"hosts": _hosts(3, 1, 3), "etcd": {"topology": "external"}, **ha},
    }
    base = {"apiVersion": "kubeprov.io/v1alpha1", "kind": "Cluster", "name": "e2e", "kubernetesVersion": version, "cni": "bridge"}
    docs = {name: base | fields for name, fields in shapes.items()}
    try:
        from provision.lab.topologies import TOPOLOGIES, cluster_document
    except ImportError:
        return docs
    from types import SimpleNamespace

    with tempfile.TemporaryDirectory() as tmp:
        for name, topology in TOPOLOGIES.items():
            hosts = [{"name": f"lab{i}", "address": f"10.0.0.{10 + i}", "roles": ["control-plane" if i <= topology.control_planes else "worker"]}
                     for i in range(1, topology.hosts + 1)]
            lab_file = Path(tmp) / "lab.yaml"
            lab_file.write_text(yaml.safe_dump(base | {"hosts": hosts}, sort_keys=False))
            docs[f"lab-{name}"] = cluster_document(name, lab_file, [SimpleNamespace(address=h["address"]) for h in hosts], version=version)
    return docs


def e2e_clusters(version: str) -> dict[str, Cluster]:
    """Those shapes as the project's loader makes them."""
    return {name: cluster_from_data(doc, f"e2e shape {name}") for name, doc in e2e_cluster_documents(version).items()}


def needed_images(version: str) -> list[str]:
    """Every image reference the e2e clusters' manifests use, exactly as written there."""
    return sorted({need.ref for cluster in e2e_clusters(version).values() for need in images(cluster)})


def _component(ref: str) -> str:
    """registry.k8s.io/kube-proxy:v1.28.4 → kube-proxy; docker.io/osixia/keepalived:2.0.20 → keepalived."""
    path = normalise(ref).split("@")[0].rsplit(":", 1)[0]
    return path.rsplit("/", 1)[-1]


# --- an image's root filesystem -----------------------------------------------------------------


@dataclass
class _Entry:
    kind: str  # "dir", "file", "symlink"
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    data: bytes | None = None  # a generated file
    source: Path | None = None  # a host file copied as is
    target: str = ""  # symlink


def _canonical(path: str) -> str:
    """Paths inside every image are merged-/usr, as Debian's are: /lib/x → usr/lib/x."""
    parts = PurePosixPath(path).relative_to("/").parts
    if parts and parts[0] in ("bin", "sbin", "lib", "lib64"):
        parts = ("usr", *parts)
    return "/".join(parts)


def _ldd(binary: Path) -> list[str]:
    """The absolute library paths `ldd` lists for a binary (loader included); [] if static."""
    proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        if "not a dynamic executable" in text or "statically linked" in text:
            return []
        raise RuntimeError(f"ldd {binary}: {text.strip()}")
    if "statically linked" in text:
        return []
    missing = [line.strip() for line in text.splitlines() if "not found" in line]
    if missing:
        raise RuntimeError(f"ldd {binary}: libraries not found on this controller: {missing}")
    found = []
    for line in text.splitlines():
        match = re.search(r"=>\s+(/\S+)", line) or re.match(r"\s*(/\S+)\s+\(", line)
        if match:
            found.append(match.group(1))
    return found


class Rootfs:
    """A root filesystem described entry by entry, written out as one layer tarball."""

    def __init__(self, users: dict[str, tuple[int, int, str, str]] | None = None):
        self.entries: dict[str, _Entry] = {}
        for name in ("usr", "usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "usr/local", "usr/local/bin", "usr/local/sbin",
                     "etc", "run", "var", "var/lib"):
            self.dir(name)
        for name in ("bin", "sbin", "lib", "lib64"):
            self.entries[name] = _Entry("symlink", 0o777, target=f"usr/{name}")
        self.entries["var/run"] = _Entry("symlink", 0o777, target="../run")
        self.dir("tmp", 0o1777)
        self.dir("root", 0o700)
        accounts = _PASSWD | (users or {})
        self.file("etc/passwd", "".join(f"{n}:x:{u}:{g}:{n}:{h}:{s}\n" for n, (u, g, h, s) in accounts.items()).encode(), 0o644)
        self.file("etc/group", "".join(f"{n}:x:{g}:\n" for n, (_, g, _, _) in accounts.items()).encode(), 0o644)

    def _parents(self, path: str) -> None:
        parent = PurePosixPath(path).parent
        while str(parent) not in (".", ""):
            self.entries.setdefault(str(parent), _Entry("dir"))
            parent = parent.parent

    def dir(self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        path = _canonical("/" + path.lstrip("/"))
        self._parents(path)
        self.entries[path] = _Entry("dir", mode, uid, gid)

    def file(self, path: str, data: bytes, mode: int = 0o755) -> None:
        path = _canonical("/" + path.lstrip("/"))
        self._parents(path)
        self.entries[path] = _Entry("file", mode, data=data)

    def symlink(self, path: str, target: str) -> None:
        path = _canonical("/" + path.lstrip("/"))
        self._parents(path)
        self.entries[path] = _Entry("symlink", 0o777, target=target)

    def host_file(self, source: Path, dest: str, mode: int | None = None) -> None:
        """A file of this controller (symlinks followed) at `dest`, with the libraries it links."""
        real = Path(os.path.realpath(source))
        if not real.is_file():
            raise FileNotFoundError(f"{source}: not on this controller")
        path = _canonical("/" + dest.lstrip("/"))
        self._parents(path)
        self.entries[path] = _Entry("file", mode if mode is not None else (real.stat().st_mode & 0o7777), source=real)
        self.libraries(real)

    def libraries(self, binary: Path) -> None:
        """Every shared library `ldd` lists, each under its own name (SONAME), in its real directory."""
        for lib in _ldd(binary):
            real = Path(os.path.realpath(lib))
            # /lib/x86_64-linux-gnu/libc.so.6 → usr/lib/x86_64-linux-gnu/libc.so.6 (the loader: usr/lib64/…)
            path = _canonical(os.path.join(os.path.realpath(os.path.dirname(lib)), os.path.basename(lib)))
            if path not in self.entries:
                self._parents(path)
                self.entries[path] = _Entry("file", 0o755, source=real)

    def write_layer(self, out: Path) -> None:
        with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as archive:
            for path in sorted(self.entries):
                entry = self.entries[path]
                info = tarfile.TarInfo(path)
                info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = _MTIME, entry.mode, entry.uid, entry.gid, "", ""
                if entry.kind == "dir":
                    info.type = tarfile.DIRTYPE
                    archive.addfile(info)
                elif entry.kind == "symlink":
                    info.type, info.linkname = tarfile.SYMTYPE, entry.target
                    archive.addfile(info)
                elif entry.data is not None:
                    info.size = len(entry.data)
                    archive.addfile(info, _BytesReader(entry.data))
                else:
                    info.size = entry.source.stat().st_size
                    with open(entry.source, "rb") as handle:
                        archive.addfile(info, handle)

    def recipe(self, digest_of) -> list:
        """What the layer will hold, with each file's content digest: the stamp's view of it."""
        found = []
        for path in sorted(self.entries):
            e = self.entries[path]
            content = hashlib.sha256(e.data).hexdigest() if e.data is not None else digest_of(e.source) if e.source else ""
            found.append([path, e.kind, oct(e.mode), e.uid, e.gid, e.target, content])
        return found

    def sources(self) -> list[Path]:
        return [e.source for e in self.entries.values() if e.source is not None]


class _BytesReader:
    def __init__(self, data: bytes):
        self.data, self.offset = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.data) if size < 0 else self.offset + size
        chunk, self.offset = self.data[self.offset:end], min(end, len(self.data))
        return chunk


def _busybox(root: Rootfs, *applets: str) -> None:
    """busybox-static as /usr/bin/busybox, with /bin/sh and the named applets linked to it."""
    root.host_file(BUSYBOX, "/usr/bin/busybox", 0o755)
    for applet in ("sh", *applets):
        root.symlink(f"/usr/bin/{applet}", "busybox")


# --- the images ---------------------------------------------------------------------------------


@dataclass
class Image:
    ref: str
    root: Rootfs
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    user: str = ""
    workdir: str = ""
    stop_signal: str = ""
    env: list[str] = field(default_factory=lambda: [f"PATH={PATH}"])
    labels: dict[str, str] = field(default_factory=dict)

    def config(self, diff_id: str) -> dict:
        config: dict = {"Env": self.env, "Labels": self.labels or None}
        for key, value in (("Entrypoint", self.entrypoint), ("Cmd", self.cmd), ("User", self.user),
                           ("WorkingDir", self.workdir), ("StopSignal", self.stop_signal)):
            if value:
                config[key] = value
        return {
            "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
            "config": {k: v for k, v in config.items() if v is not None},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "kubeprov tests/e2e/bundle.py"}],
        }

    @property
    def file_name(self) -> str:
        repo, _, tag = normalise(self.ref).rpartition(":")
        return re.sub(r"[^A-Za-z0-9._-]", "_", f"{repo.rsplit('/', 1)[-1]}_{tag}") + ".tar"


def _sha256_path(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_oci_archive(image: Image, out: Path, work: Path) -> None:
    """An OCI image layout (oci-layout, index.json, blobs/sha256/…) tarred: what `ctr images
    import` reads, named by io.containerd.image.name (provision/artifacts/images.py reads it too)."""
    layer = work / "layer.tar"
    image.root.write_layer(layer)
    diff_id = _sha256_path(layer)
    # Compressed, as registries ship layers: a third of the bytes to copy to every host.
    blob = work / "layer.tar.gz"
    with open(layer, "rb") as raw, open(blob, "wb") as packed_file:
        with gzip.GzipFile(fileobj=packed_file, mode="wb", compresslevel=1, mtime=0) as packed:
            shutil.copyfileobj(raw, packed, 1 << 20)
    layer.unlink()
    layer, layer_digest = blob, _sha256_path(blob)
    config = json.dumps(image.config(f"sha256:{diff_id}"), sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": f"sha256:{layer_digest}", "size": layer.stat().st_size}],
    }, sort_keys=True).encode()
    manifest_digest = hashlib.sha256(manifest).hexdigest()
    index = json.dumps({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": f"sha256:{manifest_digest}", "size": len(manifest),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": image.ref, "org.opencontainers.image.ref.name": image.ref.rsplit(":", 1)[1]},
        }],
    }, sort_keys=True).encode()
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as archive:
        def add(name: str, data: bytes | None = None, source: Path | None = None) -> None:
            info = tarfile.TarInfo(name)
            info.mtime, info.mode = _MTIME, 0o644
            if source is not None:
                info.size = source.stat().st_size
                with open(source, "rb") as handle:
                    archive.addfile(info, handle)
            else:
                info.size = len(data)
                archive.addfile(info, _BytesReader(data))

        for name in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, _MTIME
            archive.addfile(info)
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", index)
        add(f"blobs/sha256/{manifest_digest}", manifest)
        add(f"blobs/sha256/{hashlib.sha256(config).hexdigest()}", config)
        add(f"blobs/sha256/{layer_digest}", source=layer)
    layer.unlink()


def _find(source: Path, name: str, sub: str = "bin") -> Path | None:
    for candidate in (source / sub / name, source / name):
        if candidate.is_file():
            return candidate
    return None


def _server_image(ref: str, binary: Path, dest: str) -> Image:
    """A Kubernetes server binary at `dest` (the manifests run the bare name: /usr/local/bin is on PATH)."""
    root = Rootfs()
    root.host_file(binary, dest, 0o755)
    return Image(ref, root, entrypoint=[dest])


def _kube_proxy_image(ref: str, binary: Path, dest: str) -> Image:
    image = _server_image(ref, binary, dest)
    root = image.root
    multi: Path | None = None
    for name in IPTABLES_NAMES:
        host = shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
        if host is None:
            raise FileNotFoundError(f"{name}: not on this controller (Debian's iptables package)")
        real = Path(os.path.realpath(host))  # /usr/sbin/iptables → /etc/alternatives/iptables → xtables-nft-multi
        if "nft" not in real.name:
            raise RuntimeError(f"{host} resolves to {real}, not the nft backend the hosts use (update-alternatives --set iptables …-nft)")
        multi = multi or real
        if real != multi:
            raise RuntimeError(f"{host} resolves to {real}, the others to {multi}")
        root.symlink(f"/usr/sbin/{name}", real.name)
        nft_name = name.replace("tables", "tables-nft", 1)  # iptables-save → iptables-nft-save, as Debian names them
        root.symlink(f"/usr/sbin/{nft_name}", real.name)
    root.host_file(multi, f"/usr/sbin/{multi.name}", 0o755)
    # The match/target modules iptables dlopens (libxt_*.so): not in ldd's list, so the directory whole.
    libxtables = next(Path(p) for p in _ldd(multi) if "libxtables" in p)
    modules = Path(os.path.realpath(libxtables)).parent / "xtables"
    if not modules.is_dir():
        raise FileNotFoundError(f"{modules}: iptables' xtables modules directory is missing")
    for module in sorted(modules.iterdir()):
        if module.is_symlink():
            root.symlink(f"{_canonical(str(modules))}/{module.name}", os.readlink(module))
        elif module.is_file():
            root.host_file(module, f"{_canonical(str(modules))}/{module.name}", 0o644)
    conntrack = shutil.which("conntrack", path="/usr/sbin:/sbin:/usr/bin")
    if conntrack is None:
        raise FileNotFoundError("conntrack: not on this controller (apt-get install conntrack)")
    root.host_file(Path(conntrack), "/usr/sbin/conntrack", 0o755)
    for data in ("/etc/protocols", "/etc/services", "/etc/ethertypes"):
        if Path(data).is_file():
            root.host_file(Path(data), data, 0o644)
    return image


def _etcd_image(ref: str, command0: str) -> Image:
    # REAL etcd, at Debian's version (etcd-server/etcd-client 3.4.23 on this controller), under
    # kubeadm's tag (3.5.x-0): no etcd 3.5 binary is available here. The v1.28 static pod's flags
    # are all accepted by 3.4.23; see the module docstring for what differs (probe endpoints).
    root = Rootfs()
    dest = command0 if command0.startswith("/") else f"/usr/local/bin/{command0}"
    for name in ("etcd", "etcdctl"):
        host = shutil.which(name, path="/usr/bin:/usr/sbin")
        if host is None:
            raise FileNotFoundError(f"{name}: not on this controller (Debian's etcd-server / etcd-client)")
        root.host_file(Path(host), str(PurePosixPath(dest).parent / name), 0o755)
    root.dir("/var/lib/etcd", 0o700)
    version = subprocess.run([shutil.which("etcd"), "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    return Image(ref, root, cmd=[dest], labels={"io.kubeprov.real-version": version.strip(),
                                                 "io.kubeprov.note": "Debian's etcd 3.4.23 under kubeadm's etcd tag"})


PAUSE_STAND_IN = """#!/bin/sh
# kubeprov STAND-IN pause (tests/e2e/bundle.py): busybox sh holding the pod's namespaces, asleep until
# it is stopped. The bundle's source had no real `pause` binary.
trap 'exit 0' TERM INT
while :; do sleep 3600 & wait $!; done
"""


def _pause_image(ref: str, real: Path | None) -> Image:
    root = Rootfs()
    if real is not None:
        root.host_file(real, "/pause", 0o755)
        labels = {}
    else:
        # STAND-IN: no pause binary in the source; busybox-static sleeping forever does the job.
        _busybox(root, "sleep")
        root.file("/pause", PAUSE_STAND_IN.encode(), 0o755)
        labels = {"io.kubeprov.stand-in": "pause: busybox sleeping, not Kubernetes' pause"}
    return Image(ref, root, entrypoint=["/pause"], user="65535:65535", labels=labels)


COREDNS_STAND_IN = """#!/bin/sh
# kubeprov STAND-IN for CoreDNS (tests/e2e/bundle.py). THIS IS NOT CoreDNS AND ANSWERS NO DNS.
# It ignores CoreDNS's arguments ({args}), answers the Deployment's probes (HTTP {probes}) and accepts
# TCP on port {dns_port} (closing each connection at once), so the pods become Ready and the port is open.
echo "kubeprov STAND-IN coredns: not CoreDNS, answers no DNS; ignoring arguments: $*" >&2
pids=
{servers}
nc -ll -p {dns_port} -e /bin/true & pids="$pids $!"
trap 'kill $pids 2>/dev/null; exit 0' TERM INT
while :; do sleep 3600 & wait $!; done
"""


def _coredns_image(ref: str, container: dict) -> Image:
    """STAND-IN (busybox-static): the probes' HTTP endpoints and a TCP listener on 53. No DNS at all."""
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    root = Rootfs()
    _busybox(root, "httpd", "nc", "sleep", "true", "kill")
    servers, probes = [], []
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        get = (container.get(kind) or {}).get("httpGet")
        if not get:
            continue
        port = ports.get(get["port"], get["port"]) if isinstance(get["port"], str) else get["port"]
        docroot = f"/stand-in/www-{port}"
        root.file(f"{docroot}{get['path']}", b"OK\n", 0o644)
        line = f"httpd -f -p {int(port)} -h {docroot} & pids=\"$pids $!\""
        if line not in servers:
            servers.append(line)
        probes.append(f"{get['path']} on {port}")
    dns = [p["containerPort"] for p in container.get("ports", []) if p["containerPort"] == 53 and p.get("protocol", "TCP") == "TCP"]
    script = COREDNS_STAND_IN.format(
        args=" ".join(container.get("args", [])), probes=", ".join(probes), dns_port=dns[0] if dns else 53, servers="\n".join(servers),
    )
    root.file("/coredns", script.encode(), 0o755)
    return Image(ref, root, entrypoint=["/coredns"],
                 labels={"io.kubeprov.stand-in": "coredns: busybox answering the probes and TCP 53; NO DNS"})


# The official haproxy image's docker-entrypoint.sh (2.8), which the static pod relies on: no
# command/args in the manifest, so this entrypoint and the Cmd below run.
HAPROXY_ENTRYPOINT = """#!/bin/sh
set -e
# first arg is `-f` or `--some-option`
if [ "${1#-}" != "$1" ]; then
	set -- haproxy "$@"
fi
if [ "$1" = 'haproxy' ]; then
	shift # "haproxy"
	# if the user wants "haproxy", let's add a couple useful flags
	#   -W  -- "master-worker mode" (similar to the old "haproxy-systemd-wrapper"; allows for reload via "SIGUSR2")
	#   -db -- disables background mode
	set -- haproxy -W -db "$@"
fi
exec "$@"
"""


def _haproxy_image(ref: str, config_path: str) -> Image:
    """Debian's haproxy behind the official image's interface (entrypoint, Cmd, user, stop signal)."""
    root = Rootfs(users={"haproxy": (99, 99, "/var/lib/haproxy", "/usr/sbin/nologin")})
    _busybox(root)
    host = shutil.which("haproxy", path="/usr/sbin:/usr/bin")
    if host is None:
        raise FileNotFoundError("haproxy: not on this controller (Debian's haproxy)")
    root.host_file(Path(host), "/usr/local/sbin/haproxy", 0o755)
    root.file("/usr/local/bin/docker-entrypoint.sh", HAPROXY_ENTRYPOINT.encode(), 0o755)
    root.dir(str(PurePosixPath(config_path).parent))
    root.dir("/var/lib/haproxy", 0o755, 99, 99)
    return Image(ref, root, entrypoint=["docker-entrypoint.sh"], cmd=["haproxy", "-f", config_path],
                 user="haproxy", workdir="/var/lib/haproxy", stop_signal="SIGUSR1")


KEEPALIVED_RUN = """#!/bin/sh
# kubeprov: osixia/keepalived's entrypoint (/container/tool/run) reduced to what it ends in:
# keepalived in the foreground on the mounted config, logging to the console.
exec /usr/local/sbin/keepalived -f {config} --dont-fork --log-console --log-detail --dump-conf "$@"
"""


def _keepalived_image(ref: str, config_path: str, conf_text: str) -> Image:
    """Debian's keepalived, and every program the rendered config's vrrp_script lines run."""
    root = Rootfs()
    _busybox(root)
    host = shutil.which("keepalived", path="/usr/sbin:/usr/bin")
    if host is None:
        raise FileNotFoundError("keepalived: not on this controller (Debian's keepalived)")
    root.host_file(Path(host), "/usr/local/sbin/keepalived", 0o755)
    for script in re.findall(r'^\s*script\s+"([^"]+)"', conf_text, re.M):
        program = shlex.split(script)[0]
        if not program.startswith("/"):
            raise RuntimeError(f"keepalived.conf runs {program!r}: keepalived wants an absolute path")
        if not Path(program).is_file():
            raise FileNotFoundError(f"{program}: keepalived.conf's check script runs it, and it is not on this controller")
        root.host_file(Path(program), program, 0o755)
    root.file("/container/tool/run", KEEPALIVED_RUN.format(config=config_path).encode(), 0o755)
    root.dir(str(PurePosixPath(config_path).parent))
    return Image(ref, root, entrypoint=["/container/tool/run"])


ECHO_REPLY = """#!/bin/sh
# kubeprov test image: one connection's answer, the pod's hostname.
hostname
"""


def _echo_image() -> Image:
    root = Rootfs()
    _busybox(root, "nc", "hostname")
    root.file("/usr/local/bin/kubeprov-echo", ECHO_REPLY.encode(), 0o755)
    return Image(ECHO_IMAGE, root, cmd=["nc", "-ll", "-p", str(ECHO_PORT), "-e", "/usr/local/bin/kubeprov-echo"],
                 labels={"io.kubeprov.test-image": f"answers TCP {ECHO_PORT} with the pod's hostname"})


def _rendered(clusters: dict[str, Cluster]) -> dict:
    """What the recipes read from the manifests: commands, the CoreDNS container, HA config paths."""
    from provision.render.addons.coredns import coredns_objects
    from provision.render.addons.kube_proxy import kube_proxy_objects
    from provision.render.etcd import render_etcd
    from provision.render.ha import HAPROXY_MANIFEST, KEEPALIVED_CONF, KEEPALIVED_MANIFEST, render_ha

    found: dict = {}
    for cluster in clusters.values():
        for obj in kube_proxy_objects(cluster):
            if obj.get("kind") == "DaemonSet":
                found["kube-proxy"] = obj["spec"]["template"]["spec"]["containers"][0]
        for obj in coredns_objects(cluster):
            if obj.get("kind") == "Deployment":
                found["coredns"] = obj["spec"]["template"]["spec"]["containers"][0]
        cp = cluster.first_control_plane
        for path, file in render_etcd(cluster, cp, None).items():
            if path.suffix == ".yaml":
                found["etcd"] = yaml.safe_load(file.content)["spec"]["containers"][0]
        tree = render_ha(cluster, cp, None)
        if HAPROXY_MANIFEST in tree and KEEPALIVED_MANIFEST in tree:
            found["haproxy"] = yaml.safe_load(tree[HAPROXY_MANIFEST].content)["spec"]["containers"][0]
            found["keepalived"] = yaml.safe_load(tree[KEEPALIVED_MANIFEST].content)["spec"]["containers"][0]
            found["keepalived.conf"] = tree[KEEPALIVED_CONF].content.decode()
    return found


def _mounted_config(container: dict, suffix: str) -> str:
    paths = [m["mountPath"] for m in container.get("volumeMounts", []) if m["mountPath"].endswith(suffix)]
    if len(paths) != 1:
        raise RuntimeError(f"{container['name']}: expected one mounted *{suffix}, found {paths}")
    return paths[0]


def _images(source: Path, version: str) -> list[Image]:
    clusters = e2e_clusters(version)
    rendered = _rendered(clusters)
    built = []
    for ref in needed_images(version):
        name = _component(ref)
        if name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy"):
            binary = _find(source, name)
            if binary is None:
                raise FileNotFoundError(f"{source}: no {name} binary (bin/{name} or {name}); the image {ref} needs it")
            # The control-plane pods run the bare name (flags.command); kube-proxy's DaemonSet an absolute path.
            command0 = rendered["kube-proxy"]["command"][0] if name == "kube-proxy" else name
            dest = command0 if command0.startswith("/") else f"/usr/local/bin/{command0}"
            built.append(_kube_proxy_image(ref, binary, dest) if name == "kube-proxy" else _server_image(ref, binary, dest))
        elif name == "etcd":
            built.append(_etcd_image(ref, rendered["etcd"]["command"][0]))
        elif name == "pause":
            built.append(_pause_image(ref, _find(source, "pause")))
        elif name == "coredns":
            built.append(_coredns_image(ref, rendered["coredns"]))
        elif name == "haproxy":
            built.append(_haproxy_image(ref, _mounted_config(rendered["haproxy"], ".cfg")))
        elif name == "keepalived":
            built.append(_keepalived_image(ref, _mounted_config(rendered["keepalived"], ".conf"), rendered["keepalived.conf"]))
        else:
            raise RuntimeError(f"the e2e manifests use {ref}, and tests/e2e/bundle.py has no recipe for {name!r} images")
    built.append(_echo_image())
    return built


# --- bin/ and cni/ ------------------------------------------------------------------------------


def _binaries(source: Path, version: str) -> dict[str, Path]:
    """{bundle path: file to copy} for what the artifacts layer needs and what rides along. What
    nothing can supply (crictl, unless `source` has it) is left out: crictl is optional in a bundle."""
    wanted = {f"{layout.BIN_DIR}/{name}" for name in EXTRA_BINARIES}
    for cluster in e2e_clusters(version).values():
        for component in components(cluster):
            wanted.update(layout.bundle_path(component.name, file) for file in component.files)
    chosen = {}
    for rel in sorted(wanted):
        name = PurePosixPath(rel).name
        if rel.startswith(f"{layout.CNI_DIR}/"):
            found = _find(source, name, layout.CNI_DIR) or (CNI_HOST_DIR / name if (CNI_HOST_DIR / name).is_file() else None)
        else:
            found = _find(source, name)
            if found is None and name in CONTROLLER_BINARIES:
                host = shutil.which(name, path="/usr/bin:/usr/sbin:/sbin:/bin")
                found = Path(host) if host else None
        if found is not None:
            chosen[rel] = Path(os.path.realpath(found))
    return chosen


# --- assembling ---------------------------------------------------------------------------------


def _is_bundle(path: Path) -> bool:
    return (path / layout.IMAGES_DIR).is_dir() and (path / layout.SUMS).is_file()


def _version_of(source: Path) -> str:
    for name in ("kubelet", "kubeadm"):
        binary = _find(source, name)
        if binary is not None:
            flag = ["version", "-o", "short"] if name == "kubeadm" else ["--version"]
            out = subprocess.run([str(binary), *flag], capture_output=True, text=True, check=True).stdout.split()
            return out[-1]
    raise FileNotFoundError(f"{source}: no kubelet or kubeadm to read the Kubernetes version from; pass version=")


@contextmanager
def _locked(out: Path):
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _module_digest() -> str:
    return _sha256_path(Path(__file__))


def _stamp(version: str, built: list[Image], binaries: dict[str, Path], digest_of) -> dict:
    inputs: dict[str, str] = {}
    for path in [*binaries.values(), *(s for image in built for s in image.root.sources())]:
        inputs[str(path)] = digest_of(path)
    recipe = {
        "images": {image.ref: [image.root.recipe(digest_of), image.config("")] for image in built},
        "binaries": {rel: digest_of(path) for rel, path in binaries.items()},
    }
    return {
        "version": version,
        "images": sorted(image.ref for image in built),
        "binaries": sorted(binaries),
        "module": _module_digest(),
        "recipe": hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest(),
        "inputs": dict(sorted(inputs.items())),
    }


def _read_stamp(out: Path) -> dict | None:
    try:
        return json.loads((out / STAMP).read_text())
    except (OSError, ValueError):
        return None


def _sealed_and_whole(out: Path) -> bool:
    sums, problems = layout.read_sums(out)
    return not problems and all((out / rel).is_file() for rel in sums)


def _check(out: Path, version: str) -> None:
    sums, problems = layout.read_sums(out)
    for cluster in e2e_clusters(version).values():
        for problem in layout.check_contents(out, sums, components(cluster), images(cluster)):
            # One line per missing file or image, not one per cluster shape (only the host lists differ).
            key = (problem.path, re.sub(r"\b(for|needed on) .*$", "", problem.message))
            if key not in {(p.path, re.sub(r"\b(for|needed on) .*$", "", p.message)) for p in problems}:
                problems.append(problem)
    if problems:
        raise BundleIncomplete(out, problems)


def assemble(source: Path, out: Path, version: str | None = None) -> Path:
    """A complete, sealed offline bundle at `out` built from the binaries in `source` (or `source`
    itself when it is already a bundle). Cached: same inputs, same stamp, no work.

    Raises BundleIncomplete (after sealing what it could) when the artifacts layer would still
    refuse the bundle (a missing binary or image).
    """
    source, out = Path(source).resolve(), Path(out).resolve()
    if _is_bundle(source):
        return source
    version = version or _version_of(source)
    digests: dict[Path, str] = {}

    def digest_of(path: Path) -> str:
        if path not in digests:
            digests[path] = _sha256_path(path)
        return digests[path]

    with _locked(out):
        built = _images(source, version)
        binaries = _binaries(source, version)
        stamp = _stamp(version, built, binaries, digest_of)
        if _read_stamp(out) == stamp and _sealed_and_whole(out):
            _check(out, version)
            return out
        if out.exists() and any(out.iterdir()) and _read_stamp(out) is None:
            raise FileExistsError(f"{out} exists and holds no {STAMP}: not a bundle this module made; refusing to replace it")
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            bundle = work / "bundle"
            for sub in (layout.BIN_DIR, layout.CNI_DIR, layout.IMAGES_DIR):
                (bundle / sub).mkdir(parents=True)
            for rel, path in binaries.items():
                shutil.copyfile(path, bundle / rel)
                os.chmod(bundle / rel, 0o755)
            for image in built:
                write_oci_archive(image, bundle / layout.IMAGES_DIR / image.file_name, work)
            (bundle / STAMP).write_text(json.dumps(stamp, indent=1) + "\n")
            layout.seal(bundle)
            old = work / "old"
            if out.exists():
                out.rename(old)
            bundle.rename(out)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        _check(out, version)
        return out


if __name__ == "__main__":  # python tests/e2e/bundle.py SOURCE OUT [VERSION]
    import sys

    print(assemble(Path(sys.argv[1]), Path(sys.argv[2]), *(sys.argv[3:4] or [None])))
