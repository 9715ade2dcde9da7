"""Release downloads against a real HTTP server on loopback (http.server in a thread on 127.0.0.1).

The server serves files this test writes, each with a checksum file in the shape its upstream
publishes (written by the real `sha256sum`), and counts requests per path, so "cached" means
"no request reached the server".
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import subprocess
import tarfile
import threading
from collections import Counter
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from testkit import run_cli

from provision import retries
from provision.artifacts import ArtifactError, Cache, Downloader, Kind, fetch_release, plan_artifacts, stage
from provision.config import load_cluster
from provision.config.loader import cluster_from_data
from provision.config.models import Artifacts
from provision.retries import Backoff

RELEASE_KEY = Artifacts.model_fields["release_base_url"].alias  # the file's spellings of the keys
GITHUB_KEY = Artifacts.model_fields["github_base_url"].alias

STAND_IN = "#!/bin/sh\necho 'STAND-IN {name}, not a real binary'\n"

# Retries after 10 and 20 ms: the real backoff's shape (doubling, capped) at a test's pace.
QUICK = Backoff(attempts=5, first=0.01, maximum=0.02)


class Server:
    """A static file server on 127.0.0.1 counting GETs per path. /nolength/<path> serves the same
    file without a Content-Length header (as a chunked or streaming upstream would).

    `failures[path]`: what the next GETs of that path get instead of the file, one per request —
    an HTTP status (503, 404, …), "drop" (the connection closed before any answer), or "truncate"
    (the file's full Content-Length, half its bytes, then the connection closed)."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: Counter[str] = Counter()
        self.failures: dict[str, list] = {}
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self):
                server.requests[self.path] += 1
                planned = server.failures.get(self.path)
                if planned:
                    failure = planned.pop(0)
                    if failure == "drop":
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                    elif failure == "truncate":
                        data = (server.root / self.path.lstrip("/")).read_bytes()
                        self.send_response(200)
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data[: len(data) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                    else:
                        self.send_error(failure)
                    return
                if self.path.startswith("/nolength/"):
                    data = (server.root / self.path.removeprefix("/nolength/")).read_bytes()
                    self.send_response(200)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(data)
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    with Server(root) as server:
        yield server


def publish(path: Path, data: bytes, *, style: str = "bare", sums_file: Path | None = None) -> Path:
    """Write a file and its checksum as upstream publishes it: 'bare' (<digest>), 'named'
    (<digest>  <file>) next to it, or appended to a shared SHA256SUMS."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    line = subprocess.run(["sha256sum", path.name], cwd=path.parent, capture_output=True, text=True, check=True).stdout
    if style == "bare":
        (path.parent / f"{path.name}.sha256").write_text(line.split()[0] + "\n")
    elif style == "named":
        (path.parent / f"{path.name}.sha256").write_text(line)
    else:
        with open(sums_file, "a") as handle:
            handle.write(line)
    return path


def test_good_file_is_accepted_and_cached(served, tmp_path):
    data = b"a release file\n" * 1000
    publish(served.root / "v1/kubelet", data)
    downloader = Downloader(Cache(tmp_path / "cache"))
    url = f"{served.url}/v1/kubelet"
    first = downloader.fetch(url, f"{url}.sha256")
    assert first.read_bytes() == data
    assert first.name == hashlib.sha256(data).hexdigest()  # keyed by sha256
    assert served.requests == {"/v1/kubelet.sha256": 1, "/v1/kubelet": 1}
    # A second fetch, even by a fresh Downloader on the same cache, asks the server nothing.
    again = Downloader(Cache(tmp_path / "cache")).fetch(url, f"{url}.sha256")
    assert again == first
    assert served.requests == {"/v1/kubelet.sha256": 1, "/v1/kubelet": 1}
    assert not list((tmp_path / "cache/tmp").iterdir())


def test_cached_file_damaged_later_is_downloaded_again(served, tmp_path):
    data = b"x" * 5000
    publish(served.root / "f", data)
    downloader = Downloader(Cache(tmp_path / "cache"))
    path = downloader.fetch(f"{served.url}/f", f"{served.url}/f.sha256")
    path.write_bytes(b"damaged")
    assert downloader.fetch(f"{served.url}/f", f"{served.url}/f.sha256").read_bytes() == data
    assert served.requests["/f"] == 2


def test_same_content_under_another_url_is_not_downloaded_twice(served, tmp_path):
    data = b"same bytes"
    publish(served.root / "a/tool", data)
    publish(served.root / "b/tool", data)
    downloader = Downloader(Cache(tmp_path / "cache"))
    downloader.fetch(f"{served.url}/a/tool", f"{served.url}/a/tool.sha256")
    downloader.fetch(f"{served.url}/b/tool", f"{served.url}/b/tool.sha256")
    assert served.requests["/b/tool.sha256"] == 1 and served.requests["/b/tool"] == 0


def test_wrong_checksum_is_refused_and_nothing_is_kept(served, tmp_path):
    publish(served.root / "kubectl", b"what was published")
    (served.root / "kubectl").write_bytes(b"what is served now")  # tampered after publishing
    published = (served.root / "kubectl.sha256").read_text().split()[0]
    actual = hashlib.sha256(b"what is served now").hexdigest()
    cache = tmp_path / "cache"
    url = f"{served.url}/kubectl"
    said: list[str] = []
    with pytest.raises(ArtifactError) as caught:
        Downloader(Cache(cache), backoff=QUICK, on_retry=said.append).fetch(url, f"{url}.sha256")
    message = str(caught.value)
    assert "\n" not in message
    assert url in message and f"expected {published}" in message and f"got {actual}" in message
    assert [p for p in cache.rglob("*") if p.is_file()] == []  # no file, no index entry
    # The whole file arrived and is not what was published: asking again would get the same bytes.
    assert served.requests["/kubectl"] == 1 and said == []


def test_server_down_is_tried_a_bounded_number_of_times_and_names_the_url(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1.31.4/bin/linux/amd64/kubelet"
    said: list[str] = []
    downloader = Downloader(Cache(tmp_path / "cache"), timeout=2, backoff=Backoff(attempts=3, first=0.01), on_retry=said.append)
    with pytest.raises(ArtifactError) as caught:
        downloader.fetch(url, f"{url}.sha256")
    assert str(caught.value) == f"cannot download {url}.sha256: [Errno 111] Connection refused (gave up after 3 attempts)"
    assert said == [f"retry 1/2 in 10ms: {url}.sha256: [Errno 111] Connection refused",
                    f"retry 2/2 in 20ms: {url}.sha256: [Errno 111] Connection refused"]


def test_a_mirror_failing_twice_then_serving_is_fetched_with_two_retry_lines(served, tmp_path):
    data = b"a release file\n" * 1000
    publish(served.root / "v1/kubelet", data)
    url = f"{served.url}/v1/kubelet"
    served.failures["/v1/kubelet"] = [503, "drop"]
    said: list[str] = []
    path = Downloader(Cache(tmp_path / "cache"), backoff=QUICK, on_retry=said.append).fetch(url, f"{url}.sha256")
    assert path.read_bytes() == data
    assert said == [
        f"retry 1/4 in 10ms: {url}: HTTP 503 Service Unavailable",
        f"retry 2/4 in 20ms: {url}: the server closed the connection without answering",
    ]
    assert served.requests == {"/v1/kubelet.sha256": 1, "/v1/kubelet": 3}
    assert not list((tmp_path / "cache/tmp").iterdir())  # no part file of the failed attempts is left


def test_a_body_cut_short_is_downloaded_again_not_refused_as_a_wrong_file(served, tmp_path):
    data = bytes(range(256)) * 40  # 10 240 bytes
    publish(served.root / "crictl.tar.gz", data)
    url = f"{served.url}/crictl.tar.gz"
    served.failures["/crictl.tar.gz"] = ["truncate"]
    served.failures["/crictl.tar.gz.sha256"] = ["truncate"]  # the checksum file is retried the same way
    said: list[str] = []
    path = Downloader(Cache(tmp_path / "cache"), backoff=QUICK, on_retry=said.append).fetch(url, f"{url}.sha256")
    assert path.read_bytes() == data
    assert said == [f"retry 1/4 in 10ms: {url}.sha256: the body ended after 32 of 65 bytes",
                    f"retry 1/4 in 10ms: {url}: the body ended after 5120 of 10240 bytes"]


def test_a_mirror_that_keeps_failing_gives_one_error_line_after_the_last_attempt(served, tmp_path):
    publish(served.root / "kubectl", b"never served")
    url = f"{served.url}/kubectl"
    served.failures["/kubectl"] = [502, 429, 500, 503, 503]
    said: list[str] = []
    downloader = Downloader(Cache(tmp_path / "cache"), backoff=Backoff(attempts=4, first=0.01, maximum=0.02), on_retry=said.append)
    with pytest.raises(ArtifactError) as caught:
        downloader.fetch(url, f"{url}.sha256")
    assert str(caught.value) == f"cannot download {url}: HTTP 503 Service Unavailable (gave up after 4 attempts)"
    assert said == [f"retry 1/3 in 10ms: {url}: HTTP 502 Bad Gateway",
                    f"retry 2/3 in 20ms: {url}: HTTP 429 Too Many Requests",
                    f"retry 3/3 in 20ms: {url}: HTTP 500 Internal Server Error"]
    assert served.requests["/kubectl"] == 4
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("status", [404, 403])
def test_missing_or_forbidden_file_fails_at_once_naming_url_and_status(served, tmp_path, status):
    publish(served.root / "present", b"data")
    served.failures["/present"] = [status]
    said: list[str] = []
    with pytest.raises(ArtifactError, match=rf"^cannot download {served.url}/present: HTTP {status} \w[\w ]*$"):
        Downloader(Cache(tmp_path / "cache"), backoff=QUICK, on_retry=said.append).fetch(
            f"{served.url}/present", f"{served.url}/present.sha256")
    assert served.requests["/present"] == 1 and said == []


def test_retry_lines_go_to_stderr_or_to_the_sink_a_command_routes_them_to(served, tmp_path, capfd):
    publish(served.root / "tool", b"tool bytes")
    url = f"{served.url}/tool"
    served.failures["/tool"] = [503]
    Downloader(Cache(tmp_path / "a"), backoff=QUICK).fetch(url, f"{url}.sha256")
    out, err = capfd.readouterr()
    # stdout may be piped into another command (`$(kubeprov join-command)`): nothing lands there.
    assert (out, err) == ("", f"retry 1/4 in 10ms: {url}: HTTP 503 Service Unavailable\n")
    served.failures["/tool"] = [503]
    routed: list[tuple] = []
    with retries.saying_to(lambda host, line: routed.append((host, line))):
        Downloader(Cache(tmp_path / "b"), backoff=QUICK).fetch(url, f"{url}.sha256")
    assert routed == [(None, f"retry 1/4 in 10ms: {url}: HTTP 503 Service Unavailable")]
    assert capfd.readouterr() == ("", "")


@pytest.mark.parametrize("prefix", ["", "/nolength"], ids=["content-length", "streamed"])
def test_size_cap(served, tmp_path, prefix):
    data = b"0123456789" * 1000  # 10 000 bytes
    publish(served.root / "big", data)
    cache = tmp_path / "cache"
    url = f"{served.url}{prefix}/big"
    with pytest.raises(ArtifactError, match=r"9999-byte limit"):
        Downloader(Cache(cache), max_bytes=9999).fetch(url, f"{served.url}/big.sha256")
    assert [p for p in cache.rglob("*") if p.is_file()] == []
    # at exactly the limit it passes, also when the server sends no length
    assert Downloader(Cache(cache), max_bytes=10000).fetch(url, f"{served.url}/big.sha256").read_bytes() == data


def test_checksum_file_listing_many_files(served, tmp_path):
    sums = served.root / "rel/SHA256SUMS"
    sums.parent.mkdir(parents=True)
    for name in ("etcd-a.tar.gz", "etcd-b.tar.gz", "etcd-c.zip"):
        publish(served.root / "rel" / name, name.encode() * 100, style="sums", sums_file=sums)
    path = Downloader(Cache(tmp_path / "cache")).fetch(f"{served.url}/rel/etcd-b.tar.gz", f"{served.url}/rel/SHA256SUMS")
    assert path.read_bytes() == b"etcd-b.tar.gz" * 100
    with pytest.raises(ArtifactError, match="has no sha256 for etcd-d.tar.gz"):
        Downloader(Cache(tmp_path / "cache")).fetch(f"{served.url}/rel/etcd-d.tar.gz", f"{served.url}/rel/SHA256SUMS")


def test_only_http_urls(tmp_path):
    with pytest.raises(ArtifactError, match="only http and https"):
        Downloader(Cache(tmp_path / "cache")).fetch("file:///etc/passwd", "file:///etc/passwd.sha256")


# --- the whole release source, through the plan ---------------------------------------------


def _tar(path: Path, members: dict[str, Path | bytes]) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz", compresslevel=1) as archive:  # speed over size
        for name, source in members.items():
            data = source.read_bytes() if isinstance(source, Path) else source
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            archive.addfile(info, io.BytesIO(data))
    return path.read_bytes()


def upstream_mirror(root: Path, version: str, etcd: str) -> dict[str, Path]:
    """Lay out, under root, the release files at upstream's paths (as documented by each project),
    with real Debian binaries where this machine has them and labelled stand-ins where it does not.
    Returns {host path: the file that should land there}."""
    lands: dict[str, Path] = {}
    stand_ins = root.parent / "stand-ins"
    stand_ins.mkdir()
    for name in ("kubelet", "kubectl", "crictl"):
        (stand_ins / name).write_text(STAND_IN.format(name=name))
    k8s = root / "release" / version / "bin/linux/amd64"
    for name in ("kubelet", "kubectl"):
        publish(k8s / name, (stand_ins / name).read_bytes())
        lands[f"/usr/bin/{name}"] = stand_ins / name
    gh = root / "gh"
    crictl = {"v1.31.1": "v1.31.1", "v1.28.0": "v1.28.0"}
    cri = gh / "kubernetes-sigs/cri-tools/releases/download"
    for v in crictl:
        data = _tar(cri / v / f"crictl-{v}-linux-amd64.tar.gz", {"crictl": stand_ins / "crictl"})
        publish(cri / v / f"crictl-{v}-linux-amd64.tar.gz", data, style="bare")
    lands["/usr/bin/crictl"] = stand_ins / "crictl"
    containerd_bins = {f"bin/{n}": Path("/usr/bin") / n for n in ("containerd", "containerd-shim-runc-v2", "ctr")}
    tarball = gh / "containerd/containerd/releases/download/v1.7.24/containerd-1.7.24-linux-amd64.tar.gz"
    publish(tarball, _tar(tarball, containerd_bins), style="named")
    tarball.with_name(tarball.name + ".sha256").rename(tarball.with_name(tarball.name + ".sha256sum"))
    lands["/usr/bin/containerd"] = Path("/usr/bin/containerd")
    lands["/usr/bin/containerd-shim-runc-v2"] = Path("/usr/bin/containerd-shim-runc-v2")
    lands["/usr/bin/ctr"] = Path("/usr/bin/ctr")
    runc_dir = gh / "opencontainers/runc/releases/download/v1.2.4"
    runc_dir.mkdir(parents=True)
    publish(runc_dir / "runc.amd64", Path("/usr/sbin/runc").read_bytes(), style="sums", sums_file=runc_dir / "runc.sha256sum")
    publish(runc_dir / "runc.arm64", b"not for us", style="sums", sums_file=runc_dir / "runc.sha256sum")
    lands["/usr/sbin/runc"] = Path("/usr/sbin/runc")
    plugins = {f"./{p}": Path("/usr/lib/cni") / p for p in ("bridge", "host-local", "loopback", "portmap", "vlan")}
    cni = gh / "containernetworking/plugins/releases/download/v1.6.2/cni-plugins-linux-amd64-v1.6.2.tgz"
    publish(cni, _tar(cni, plugins), style="named")
    for p in ("bridge", "host-local", "loopback", "portmap"):
        lands[f"/opt/cni/bin/{p}"] = Path("/usr/lib/cni") / p
    etcd_dir = gh / f"etcd-io/etcd/releases/download/{etcd}"
    top = f"etcd-{etcd}-linux-amd64"
    etcd_tar = etcd_dir / f"{top}.tar.gz"
    data = _tar(etcd_tar, {f"{top}/etcd": Path("/usr/bin/etcd"), f"{top}/etcdctl": Path("/usr/bin/etcdctl"), f"{top}/README.md": b"readme"})
    publish(etcd_tar, data, style="sums", sums_file=etcd_dir / "SHA256SUMS")
    lands["/usr/bin/etcd"] = Path("/usr/bin/etcd")
    lands["/usr/bin/etcdctl"] = Path("/usr/bin/etcdctl")
    return lands


needs_debian_binaries = pytest.mark.skipif(
    not all(Path(p).exists() for p in ("/usr/bin/containerd", "/usr/sbin/runc", "/usr/bin/etcd", "/usr/lib/cni/bridge")),
    reason="Debian's containerd, runc, etcd-server and containernetworking-plugins are needed (scripts/setup installs them)",
)


@needs_debian_binaries
def test_release_source_end_to_end(served, tmp_path):
    cluster = cluster_from_data(
        {
            "apiVersion": "kubeprov.io/v1alpha1", "kind": "Cluster", "kubernetesVersion": "v1.31.4",
            "etcd": {"topology": "external"},
            "hosts": [
                {"name": "cp1", "address": "10.0.0.11", "roles": ["control-plane"]},
                {"name": "w1", "address": "10.0.0.21", "roles": ["worker"]},
                {"name": "etcd1", "address": "10.0.0.31", "roles": ["etcd"]},
            ],
            "artifacts": {"source": "release", "releaseBaseURL": f"{served.url}/release", "githubBaseURL": f"{served.url}/gh"},
        },
        "test",
    )
    lands = upstream_mirror(served.root, "v1.31.4", "v3.5.24")
    plan = plan_artifacts(cluster)
    assert served.requests == {}  # planning downloads nothing
    downloader = Downloader(Cache(tmp_path / "cache"))
    fetched = fetch_release(plan, downloader)
    downloads = [a for a in fetched.artifacts if a.kind in (Kind.BINARY, Kind.ARCHIVE)]
    assert len(downloads) == 7 and all(a.path and a.path.is_file() for a in downloads)
    assert all(count == 1 for count in served.requests.values())
    hosts_root = tmp_path / "hosts"
    for host in ("cp1", "w1", "etcd1"):
        stage(fetched, hosts_root / host, host)
    placed = {
        host: {"/" + p.relative_to(hosts_root / host).as_posix() for p in (hosts_root / host).rglob("*") if p.is_file()}
        for host in ("cp1", "w1", "etcd1")
    }
    node_files = set(lands) - {"/usr/bin/kubectl", "/usr/bin/etcd", "/usr/bin/etcdctl"}
    assert placed["w1"] == node_files
    assert placed["cp1"] == node_files | {"/usr/bin/kubectl"}
    assert placed["etcd1"] == {"/usr/bin/etcd", "/usr/bin/etcdctl"}
    for host, paths in placed.items():
        for path in paths:
            target = hosts_root / host / path.lstrip("/")
            assert target.read_bytes() == lands[path].read_bytes(), path
            assert target.stat().st_mode & 0o777 == 0o755
    # the placed Debian etcd is the real program
    assert "etcd Version" in subprocess.run([hosts_root / "etcd1/usr/bin/etcd", "--version"], capture_output=True, text=True).stdout
    # a second run is served entirely from the cache
    before = Counter(served.requests)
    fetch_release(plan_artifacts(cluster), Downloader(Cache(tmp_path / "cache")))
    assert served.requests == before


@needs_debian_binaries
def test_list_shows_what_the_cache_verified_and_the_plan_is_plain_data(served, tmp_path):
    upstream_mirror(served.root, "v1.31.4", "v3.5.24")
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump({
        "apiVersion": "kubeprov.io/v1alpha1", "kind": "Cluster", "kubernetesVersion": "v1.31.4", "cni": "bridge",
        "hosts": [{"name": "cp1", "address": "10.0.0.11", "roles": ["control-plane"]}],
        "artifacts": {"source": "release", RELEASE_KEY: f"{served.url}/release", GITHUB_KEY: f"{served.url}/gh"},
    }))
    cache = tmp_path / "cache"
    code, out, err = run_cli("artifacts", "list", "-c", config, "--cache-dir", cache)
    assert code == 0, err
    kubelet_row = next(line for line in out.splitlines() if line.startswith("kubelet "))
    assert f"published at {served.url}/release/v1.31.4/bin/linux/amd64/kubelet.sha256" in kubelet_row
    plan = fetch_release(plan_artifacts(load_cluster(config)), Downloader(Cache(cache)))
    published = (served.root / "release/v1.31.4/bin/linux/amd64/kubelet.sha256").read_text().strip()
    code, out, err = run_cli("artifacts", "list", "-c", config, "--cache-dir", cache)
    kubelet_row = next(line for line in out.splitlines() if line.startswith("kubelet "))
    assert f"{published} (verified, cached)" in kubelet_row
    # what the node roles receive: JSON-able, every download with its verified local copy
    data = json.loads(json.dumps(plan.to_dict()))
    kubelet = next(a for a in data["artifacts"] if a["name"] == "kubelet")
    assert kubelet["sha256"] == published and kubelet["dest"] == "/usr/bin/kubelet" and kubelet["hosts"] == ["cp1"]
    assert Path(kubelet["path"]).read_bytes() == (served.root / "release/v1.31.4/bin/linux/amd64/kubelet").read_bytes()
    cni = next(a for a in data["artifacts"] if a["name"] == "cni-plugins")
    assert {m["dest"] for m in cni["members"]} == {f"/opt/cni/bin/{p}" for p in ("bridge", "host-local", "loopback", "portmap")}


def test_silent_server_times_out_naming_the_url(tmp_path):
    """A server that accepts the connection and never answers: the read timeout ends it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/kubelet"
    said: list[str] = []
    try:
        with pytest.raises(ArtifactError, match=rf"^cannot download {url}\.sha256: timed out \(gave up after 2 attempts\)$"):
            Downloader(Cache(tmp_path / "cache"), timeout=0.5, backoff=Backoff(attempts=2, first=0.01),
                       on_retry=said.append).fetch(url, f"{url}.sha256")
    finally:
        listener.close()
    assert said == [f"retry 1/1 in 10ms: {url}.sha256: timed out"]
