"""`kubeprov etcd backup` and `kubeprov etcd restore`: a snapshot of the cluster's etcd with the CA
material that makes it usable, and getting a cluster back from one.

The archive (a .tar.gz, mode 0600: it holds CA keys) is

    manifest.json        cluster, Kubernetes and etcd version, topology, members, revision, time
    snapshot.db          etcd's snapshot, as the Maintenance/Snapshot RPC streams it (sha256 trailer included)
    pki/ca.{crt,key} pki/front-proxy-ca.* pki/etcd/ca.* pki/sa.{key,pub}
    secrets/encryption-key   (when the cluster encrypts Secrets at rest: without it they are unreadable)
    SHA256SUMS           sha256 of every other file, `sha256sum -c` format

and FILE.sha256 beside it holds the archive's own sha256. Restore checks both before anything
else: a mismatch is one error line and nothing has changed.

Backup: the snapshot is streamed from the first healthy member (its own /health) through etcd's
JSON gateway on the member's loopback client URL with the healthcheck client certificate, by a few
lines of python3 on the host (stacked or external alike: no etcdctl or crictl needed on the host,
as in provision/kube/etcd_members.py), into a 0600 temporary file there that is read back and
removed.

Restore makes each member's new data directory on the controller, with `etcdutl snapshot restore`
(etcd ≥ 3.5) or `etcdctl snapshot restore` (3.4), whichever is on PATH: it is an offline operation on
a file, so the hosts need no etcd tooling, and every data directory is made (and the snapshot's own
hash trailer checked) before any host changes. Then, by what the hosts hold:

- same hosts (every member has a data directory): every control plane's API server, controller
  manager and scheduler and (stacked) etcd's static pod manifests are moved out of
  /etc/kubernetes/manifests (to /var/lib/kubeprov/etcd-restore/manifests) and their containers
  waited for, or (external) `systemctl stop etcd`; each member's data directory's contents are
  moved aside to DATA_DIR.before-restore-<UTC time> (never deleted) and the new ones unpacked in
  their place; etcd starts again on every member, each member's /health is waited for, then the
  control-plane components, /readyz of every API server, and a kubelet restart on every node (their
  watches start from the restored revision).
- fresh hosts (no member has a data directory: the old machines are gone, a new set with the same
  names): the CA material goes into the cluster directory (refusing one that holds a different
  CA), the data directory is seeded before etcd ever starts — stacked: the first control plane's,
  as a one-member cluster (the others join it as `up` always grows stacked etcd, one learner at a
  time); external: every member's, all of them in the initial cluster — and then `up`'s phases run,
  as `kubeprov up` would. One command, and the control plane comes back with the snapshot's objects.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import os
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

from provision.config.models import Cluster, EtcdTopology, Host, Role
from provision.errors import KubeprovError
from provision.fsutil import PRIVATE_FILE_MODE, PUBLIC_FILE_MODE, atomic_write, ensure_private_dir

FORMAT = 1
KIND = "kubeprov-etcd-backup"
SNAPSHOT, SUMS, MANIFEST = "snapshot.db", "SHA256SUMS", "manifest.json"
# The cluster directory's files a restore needs: the CAs (with their keys when kubeprov holds them),
# the service-account key pair (every ServiceAccount token in the snapshot is signed with it) and
# the key Secrets are encrypted with at rest.
CA_FILES = (
    "pki/ca.crt", "pki/ca.key", "pki/front-proxy-ca.crt", "pki/front-proxy-ca.key", "pki/etcd/ca.crt", "pki/etcd/ca.key",
    "pki/sa.key", "pki/sa.pub", "secrets/encryption-key",
)
REQUIRED_CA_FILES = ("pki/ca.crt", "pki/front-proxy-ca.crt", "pki/etcd/ca.crt", "pki/sa.key", "pki/sa.pub")
PUBLIC_FILES = {"pki/ca.crt", "pki/front-proxy-ca.crt", "pki/etcd/ca.crt", "pki/sa.pub"}

ETCD_PKI = "/etc/kubernetes/pki/etcd"
MANIFESTS = PurePosixPath("/etc/kubernetes/manifests")
STASH = PurePosixPath("/var/lib/kubeprov/etcd-restore/manifests")
CONTROL_PLANE_PODS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
SNAPSHOT_TMP = "/var/lib/kubeprov/etcd-snapshot.tmp"
NUDGE_AFTER = 45.0  # seconds a static pod put back may take before its kubelet is restarted

Say = Callable[[str, str], None]  # (host or "local", text)


def _utc(now: dt.datetime | None = None) -> dt.datetime:
    return (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- the archive ------------------------------------------------------------------------------


@dataclass
class Backup:
    snapshot: bytes
    files: dict[str, bytes]  # CA material, by archive path (pki/…, secrets/…)
    manifest: dict = field(default_factory=dict)


def build_archive(backup: Backup) -> bytes:
    """The .tar.gz bytes: manifest.json, snapshot.db, the CA files, SHA256SUMS over all of them.
    Deterministic for the same input (fixed mtimes and owners)."""
    manifest = dict(backup.manifest, kind=KIND, format=FORMAT, snapshotSha256=sha256(backup.snapshot),
                    snapshotSize=len(backup.snapshot))
    members = {MANIFEST: json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n", SNAPSHOT: backup.snapshot}
    members.update(sorted(backup.files.items()))
    sums = "".join(f"{sha256(data)}  {name}\n" for name, data in members.items()).encode()
    members[SUMS] = sums
    raw = io.BytesIO()
    mtime = int(_parse_time(manifest.get("created")).timestamp()) if manifest.get("created") else 0
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=mtime) as gz, tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.uid, info.gid, info.uname, info.gname = len(data), mtime, 0, 0, "root", "root"
            info.mode = 0o644 if name in PUBLIC_FILES or name in (MANIFEST, SUMS) else 0o600
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def _parse_time(value: str) -> dt.datetime:
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def read_archive(path: Path) -> Backup:
    """The backup in `path`, every sha256 checked (the archive's own, from FILE.sha256 when it is
    there, then SHA256SUMS's). Any mismatch or damage is one KubeprovError line; nothing is written."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KubeprovError(f"{path}: cannot read the backup: {exc.strerror or exc}") from None
    side = sidecar_path(path)
    if side.exists():
        want = (side.read_text().split() or [""])[0].lower()
        got = sha256(data)
        if want != got:
            raise KubeprovError(f"{path}: sha256 mismatch: the file is {got}, {side.name} says {want}: the backup is "
                                "damaged or not the one recorded; nothing was changed")
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for info in tar:
                name = info.name
                if not info.isfile() or name.startswith("/") or ".." in PurePosixPath(name).parts:
                    raise KubeprovError(f"{path}: unexpected entry {name!r} in the backup; nothing was changed")
                handle = tar.extractfile(info)
                members[name] = handle.read() if handle else b""
    except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile) as exc:
        raise KubeprovError(f"{path}: not a readable kubeprov etcd backup (.tar.gz): {exc}; nothing was changed") from None
    for needed in (SUMS, MANIFEST, SNAPSHOT):
        if needed not in members:
            raise KubeprovError(f"{path}: not a kubeprov etcd backup: it has no {needed}; nothing was changed")
    listed: dict[str, str] = {}
    for line in members[SUMS].decode(errors="replace").splitlines():
        digest, _, name = line.partition("  ")
        if name:
            listed[name.strip()] = digest.strip().lower()
    for name in members:
        if name == SUMS:
            continue
        if name not in listed:
            raise KubeprovError(f"{path}: {name} is not in its SHA256SUMS; nothing was changed")
        got = sha256(members[name])
        if got != listed[name]:
            raise KubeprovError(f"{path}: sha256 mismatch for {name}: it is {got}, SHA256SUMS says {listed[name]}: "
                                "the backup is damaged; nothing was changed")
    missing = sorted(set(listed) - set(members))
    if missing:
        raise KubeprovError(f"{path}: SHA256SUMS lists {missing[0]}, which the backup lacks; nothing was changed")
    try:
        manifest = json.loads(members[MANIFEST])
    except ValueError:
        raise KubeprovError(f"{path}: {MANIFEST} is not JSON; nothing was changed") from None
    if manifest.get("kind") != KIND or manifest.get("format") != FORMAT:
        raise KubeprovError(f"{path}: not a kubeprov etcd backup of format {FORMAT} (kind {manifest.get('kind')!r}, "
                            f"format {manifest.get('format')!r}); nothing was changed")
    files = {n: d for n, d in members.items() if n not in (SUMS, MANIFEST, SNAPSHOT)}
    return Backup(members[SNAPSHOT], files, manifest)


def write_new(path: Path, data: bytes) -> Path:
    """Write the archive at `path` (0600, atomically) and FILE.sha256 beside it; never over an existing file."""
    path = Path(path)
    side = sidecar_path(path)
    for p in (path, side):
        if p.exists() or p.is_symlink():
            raise KubeprovError(f"{p} exists: refusing to overwrite it; name another file with -o")
    if not path.parent.exists():
        ensure_private_dir(path.parent)
    try:
        atomic_write(path, data, PRIVATE_FILE_MODE)
        atomic_write(side, f"{sha256(data)}  {path.name}\n".encode(), PUBLIC_FILE_MODE)
    except FileExistsError as exc:  # created between the check and the rename
        raise KubeprovError(f"{exc}; name another file with -o") from None
    except OSError as exc:
        raise KubeprovError(f"{path}: cannot write the backup: {exc.strerror or exc}") from None
    return path


def default_path(cluster_dir: Path, now: dt.datetime | None = None) -> Path:
    return Path(cluster_dir) / "etcd-backups" / f"etcd-{_utc(now):%Y%m%dT%H%M%SZ}.tar.gz"


def collect_ca(cluster_dir: Path) -> dict[str, bytes]:
    """The CA material of the cluster directory, by archive path; refuses when a part that a
    restore cannot do without is missing."""
    root = Path(cluster_dir)
    missing = [name for name in REQUIRED_CA_FILES if not (root / name).is_file()]
    if missing:
        raise KubeprovError(f"{root / missing[0]} does not exist: a backup needs the cluster's CAs and service-account "
                            "keys (`kubeprov certs generate` or `up` makes them)")
    return {name: (root / name).read_bytes() for name in CA_FILES if (root / name).is_file()}


def ca_conflicts(cluster_dir: Path, files: dict[str, bytes]) -> list[str]:
    """The backup's CA files that the cluster directory holds with other contents."""
    root = Path(cluster_dir)
    return [name for name, data in sorted(files.items()) if (root / name).is_file() and (root / name).read_bytes() != data]


def install_ca(cluster_dir: Path, files: dict[str, bytes]) -> list[str]:
    """Put the backup's CA material into the cluster directory where it is missing; the paths
    written. A different file already there is refused before anything is written."""
    root = Path(cluster_dir)
    conflicts = ca_conflicts(root, files)
    if conflicts:
        raise KubeprovError(f"{root / conflicts[0]} differs from the backup's: this cluster directory belongs to another "
                            "cluster; restore into a new --cluster-dir (nothing was changed)")
    written = []
    for name, data in sorted(files.items()):
        target = root / name
        if target.exists():
            continue
        ensure_private_dir(target.parent)
        atomic_write(target, data, PUBLIC_FILE_MODE if name in PUBLIC_FILES else PRIVATE_FILE_MODE)
        written.append(name)
    return written


# --- on the hosts -----------------------------------------------------------------------------

# Runs on the member's host: stream a snapshot through etcd's JSON gateway into a 0600 file; print
# its sha256, size, etcd's version and revision as JSON. One error line on stderr, exit 3, otherwise.
_SNAPSHOT_SCRIPT = r"""
import base64, hashlib, json, os, ssl, sys, urllib.request
url, pki, out = sys.argv[1:4]
try:
    tls = ssl.create_default_context(cafile=pki + "/ca.crt")
    tls.load_cert_chain(pki + "/healthcheck-client.crt", pki + "/healthcheck-client.key")
    def post(path):
        request = urllib.request.Request(url + path, data=b"{}", method="POST", headers={"Content-Type": "application/json"})
        return urllib.request.urlopen(request, context=tls, timeout=300)
    with post("/v3/maintenance/status") as answer:
        status = json.load(answer)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    digest, size = hashlib.sha256(), 0
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle, post("/v3/maintenance/snapshot") as answer:
        for line in answer:
            if not line.strip():
                continue
            message = json.loads(line)
            if "error" in message:
                error = message["error"]
                raise RuntimeError("etcd: " + str(error.get("message") if isinstance(error, dict) else error))
            blob = base64.b64decode(message.get("result", {}).get("blob", ""))
            handle.write(blob)
            digest.update(blob)
            size += len(blob)
        handle.flush()
        os.fsync(handle.fileno())
    print(json.dumps({"sha256": digest.hexdigest(), "size": size, "version": status.get("version", ""),
                      "revision": int(status.get("header", {}).get("revision", 0))}))
except Exception as error:
    sys.stderr.write("%s: %s\n" % (type(error).__name__, error))
    sys.exit(3)
"""

# Stop: move the named static pod manifests into the stash, stop the named units, wait until no
# process of the named ones runs (pgrep: crictl is not on every host, and the host's PID namespace
# holds its containers' processes). Args: manifests stash units processes names...
_STOP = r"""
manifests=$1 stash=$2 units=$3 processes=$4
shift 4
mkdir -p "$stash" || exit 1
for m in "$@"; do
  if [ -f "$manifests/$m" ]; then mv -f -- "$manifests/$m" "$stash/$m" || exit 1; echo "moved $manifests/$m to $stash"; fi
done
for u in $units; do systemctl stop "$u" || exit 1; echo "stopped $u"; done
[ -n "$processes" ] || exit 0
i=0
while :; do
  running=""
  for p in $processes; do pgrep -x "$p" >/dev/null && running="$running $p"; done
  [ -z "$running" ] && { echo "none of $processes runs"; exit 0; }
  i=$((i + 1))
  [ "$i" -lt 240 ] || { echo "still running after 120 s:$running" >&2; exit 1; }
  sleep 0.5
done
"""

# Swap: move the data directory's contents aside (kept), unpack the new ones from stdin (tar.gz);
# on a failed unpack put the old contents back. Args: data_dir aside
_SWAP = r"""
data=$1 aside=$2
mkdir -p "$data" && chmod 700 "$data" || exit 1
if [ -n "$(ls -A "$data")" ]; then
  mkdir -p "$aside" && chmod 700 "$aside" || exit 1
  find "$data" -mindepth 1 -maxdepth 1 -exec mv -t "$aside" -- {} + || { echo "cannot move $data's contents to $aside" >&2; exit 1; }
  echo "moved $data's contents to $aside"
fi
if ! tar -xzf - -C "$data" --numeric-owner --no-same-permissions 2>/tmp/kubeprov-restore-tar.err; then
  echo "unpacking the restored data into $data failed: $(head -c 300 /tmp/kubeprov-restore-tar.err)" >&2
  find "$data" -mindepth 1 -maxdepth 1 -exec rm -rf -- {} +
  [ -d "$aside" ] && find "$aside" -mindepth 1 -maxdepth 1 -exec mv -t "$data" -- {} +
  exit 1
fi
chmod -R go-rwx "$data"
echo "restored data in $data"
"""

# Seed (fresh hosts): unpack into an empty data directory only. Args: data_dir
_SEED = r"""
data=$1
mkdir -p "$data" && chmod 700 "$data" || exit 1
if [ -n "$(ls -A "$data")" ]; then echo "$data is not empty: refusing to seed it" >&2; exit 1; fi
tar -xzf - -C "$data" --numeric-owner --no-same-permissions || exit 1
chmod -R go-rwx "$data"
echo "seeded $data"
"""

# Start: move the named stashed manifests back (every stashed one when none is named), start units.
# Args: manifests stash units names...
_START = r"""
manifests=$1 stash=$2 units=$3
shift 3
[ $# -gt 0 ] || set -- $(ls -A "$stash" 2>/dev/null)
for m in "$@"; do
  if [ -f "$stash/$m" ]; then mv -f -- "$stash/$m" "$manifests/$m" || exit 1; echo "moved $m back into $manifests"; fi
done
for u in $units; do systemctl start --no-block "$u" || exit 1; echo "started $u"; done
"""


def _script(body: str, *args: str) -> str:
    return shlex.join(["sh", "-c", body, "sh", *args])


def _loopback_url(host: Host) -> str:
    from provision.render import staticpod
    from provision.render.etcd import CLIENT_PORT

    return "https://" + staticpod.join_host_port(staticpod.loopback_for(host.advertise_address), CLIENT_PORT)


def _peer_url(host: Host) -> str:
    from provision.render.etcd import peer_url

    return peer_url(host.advertise_address)


def _check(transport, host: Host, command: str, what: str, *, stdin: bytes | None = None, timeout: float = 300):
    result = transport.run(host, command, stdin=stdin, timeout=timeout)
    if not result.ok:
        raise KubeprovError(f"{host.name}: {what} failed (exit {result.exit_code}): {result.summary() or 'no output'}")
    return result


def stacked(cluster: Cluster) -> bool:
    return cluster.etcd.topology is EtcdTopology.STACKED


# --- backup -----------------------------------------------------------------------------------


@dataclass
class BackupResult:
    path: Path
    host: str
    sha256: str
    size: int
    revision: int
    version: str


def plan_backup(cluster: Cluster, path: Path) -> list[tuple[str, str]]:
    lines = [(m.name, "ask the member's /health; the first healthy member (in this order) gives the snapshot")
             for m in cluster.etcd_members]
    lines.append(("local", f"stream the snapshot over etcd's gateway into {SNAPSHOT_TMP} on that host, read it here, "
                           "remove it there; check its sha256"))
    lines.append(("local", f"write {path} (0600) with snapshot.db, the CAs and service-account keys, manifest.json, "
                           f"SHA256SUMS; and {sidecar_path(path).name}"))
    return lines


def healthy_member(transport, cluster: Cluster, say: Say) -> Host:
    from provision.kube import etcd_members

    said = []
    for member in cluster.etcd_members:
        try:
            ok, text = etcd_members.healthy(transport, member)
        except KubeprovError as exc:
            ok, text = False, str(exc).removeprefix(f"{member.name}: ")
        if ok:
            say(member.name, "etcd member healthy")
            return member
        say(member.name, f"etcd member not healthy: {text}")
        said.append(f"{member.name}: {text}")
    raise KubeprovError("no healthy etcd member to take a snapshot from (" + "; ".join(said) + ")")


def backup(cluster: Cluster, transport, path: Path, say: Say, now: dt.datetime | None = None) -> BackupResult:
    """Take a snapshot from a healthy member and write the archive at `path` (which must not exist)."""
    from provision.kube import etcd_members
    from provision.pki import PKIStore

    path = Path(path)
    if path.exists() or sidecar_path(path).exists():
        existing = path if path.exists() else sidecar_path(path)
        raise KubeprovError(f"{existing} exists: refusing to overwrite it; name another file with -o")
    cluster_dir = PKIStore(cluster).root
    ca = collect_ca(cluster_dir)
    member = healthy_member(transport, cluster, say)
    members = [{"name": m.name, "peerURLs": list(m.peer_urls), "clientURLs": list(m.client_urls)}
               for m in etcd_members.members(transport, member)]
    started = time.monotonic()
    result = transport.run(member, shlex.join(["python3", "-", _loopback_url(member), ETCD_PKI, SNAPSHOT_TMP]),
                           stdin=_SNAPSHOT_SCRIPT.encode(), timeout=600)
    try:
        if not result.ok:
            raise KubeprovError(f"{member.name}: taking the snapshot failed (exit {result.exit_code}): "
                                f"{result.summary() or 'no output'}")
        info = result.json("the snapshot stream")
        snapshot = transport.read_file(member, SNAPSHOT_TMP)
    finally:
        transport.run(member, shlex.join(["rm", "-f", "--", SNAPSHOT_TMP]), timeout=60)
    if snapshot is None or sha256(snapshot) != info["sha256"] or len(snapshot) != info["size"]:
        raise KubeprovError(f"{member.name}: the snapshot read back does not match what etcd streamed "
                            f"(sha256 {sha256(snapshot or b'')} vs {info['sha256']}); nothing was written")
    say(member.name, f"snapshot at revision {info['revision']}: {len(snapshot)} bytes in {time.monotonic() - started:.1f}s, "
                     f"sha256 {info['sha256'][:16]}…")
    manifest = {
        "cluster": cluster.name, "kubernetesVersion": cluster.kubernetes_version, "etcdVersion": info.get("version", ""),
        "etcdTopology": cluster.etcd.topology.value, "revision": info["revision"], "members": members,
        "takenFrom": member.name, "created": f"{_utc(now):%Y-%m-%dT%H:%M:%SZ}", "dataDir": cluster.etcd.data_dir,
    }
    write_new(path, build_archive(Backup(snapshot, ca, manifest)))
    return BackupResult(path, member.name, info["sha256"], len(snapshot), info["revision"], info.get("version", ""))


# --- restore ----------------------------------------------------------------------------------


def restore_tool() -> list[str]:
    """The local command that restores a snapshot into a data directory: etcdutl (etcd ≥ 3.5),
    else etcdctl (3.4; `ETCDCTL_API=3`)."""
    for name in ("etcdutl", "etcdctl"):
        found = shutil.which(name)
        if found:
            return [found]
    raise KubeprovError("neither etcdutl nor etcdctl is on PATH here: restore makes the members' data directories on "
                        "this machine (install etcd-client, or etcd's release tarball, of the cluster's etcd version or newer)")


def tool_version(tool: list[str]) -> tuple[int, ...] | None:
    """(major, minor) of the local etcdutl/etcdctl, or None when it does not say."""
    import re

    try:
        proc = subprocess.run([*tool, "version"], capture_output=True, text=True, timeout=30, env={**os.environ, "ETCDCTL_API": "3"})
    except OSError:
        return None
    match = re.search(r"version:\s*(\d+)\.(\d+)", proc.stdout)
    return (int(match.group(1)), int(match.group(2))) if match else None


def version_warning(tool: list[str], etcd_version: str) -> str | None:
    """A warning when the local restore tool is older than the etcd the snapshot came from."""
    import re

    have = tool_version(tool)
    match = re.match(r"(\d+)\.(\d+)", etcd_version or "")
    if have is None or match is None:
        return None
    want = (int(match.group(1)), int(match.group(2)))
    if have < want:
        return (f"warning: the local {Path(tool[0]).name} is {have[0]}.{have[1]}, the snapshot is from etcd {etcd_version}: "
                "a restore tool of that version or newer is safer")
    return None


def restored_data_dir(snapshot: Path, work: Path, name: str, initial_cluster: str, peer_url: str, token: str,
                      tool: list[str] | None = None) -> bytes:
    """`snapshot restore` for one member, into a new directory under `work`; its contents as tar.gz bytes."""
    tool = tool or restore_tool()
    target = work / f"data-{name}"
    command = [*tool, "snapshot", "restore", str(snapshot), f"--name={name}", f"--initial-cluster={initial_cluster}",
               f"--initial-advertise-peer-urls={peer_url}", f"--initial-cluster-token={token}", f"--data-dir={target}"]
    proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"}, timeout=600)
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        raise KubeprovError(f"local: `{Path(tool[0]).name} snapshot restore` for {name} failed: "
                            f"{lines[-1].strip() if lines else f'exit {proc.returncode}'}; nothing was changed on the hosts")
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for entry in sorted(target.iterdir()):
            tar.add(entry, arcname=entry.name)
    return raw.getvalue()


@dataclass
class Layout:
    """Which hosts hold etcd data now, and what a restore does about it."""
    mode: str  # "same-hosts" or "fresh"
    with_data: list[str]
    without_data: list[str]


def inspect_hosts(transport, cluster: Cluster, parallel: int) -> Layout:
    from provision.transport import fan_out

    data = cluster.etcd.data_dir
    command = _script('if [ -d "$1/member" ]; then echo data; else echo empty; fi', data)
    outcomes = fan_out(cluster.etcd_members, lambda h: _check(transport, h, command, "looking at the etcd data dir").stdout.strip(),
                       parallel=parallel)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise KubeprovError(f"{failed[0].host}: {failed[0].error_text}")
    have = [o.host for o in outcomes if o.value == "data"]
    lack = [o.host for o in outcomes if o.value != "data"]
    if have and lack:
        raise KubeprovError(f"some etcd members have a data dir ({', '.join(have)}) and some have none ({', '.join(lack)}): "
                            "restore works on the same hosts (all have one) or on fresh hosts (none has); "
                            "`kubeprov reset` the others first")
    return Layout("same-hosts" if have else "fresh", have, lack)


@dataclass
class RestorePlan:
    backup: Backup
    layout: Layout
    seeds: dict[str, tuple[str, str]]  # member → (initial cluster, peer URL) of its new data dir
    token: str
    aside: str


def make_plan(cluster: Cluster, backup_: Backup, layout: Layout, now: dt.datetime | None = None) -> RestorePlan:
    stamp = f"{_utc(now):%Y%m%dT%H%M%SZ}"
    members = cluster.etcd_members
    if layout.mode == "fresh" and stacked(cluster):
        members = members[:1]  # the others join it as learners, as `up` grows stacked etcd
    initial = ",".join(f"{m.name}={_peer_url(m)}" for m in members)
    return RestorePlan(backup_, layout, {m.name: (initial, _peer_url(m)) for m in members},
                       f"kubeprov-restore-{stamp}", f"{cluster.etcd.data_dir.rstrip('/')}.before-restore-{stamp}")


def plan_lines(cluster: Cluster, plan: RestorePlan) -> list[tuple[str, str]]:
    lines = [("local", f"snapshot of {plan.backup.manifest.get('cluster')} at revision {plan.backup.manifest.get('revision')} "
                       f"({plan.backup.manifest.get('created')}): sha256 checked; make each member's data dir with "
                       f"`snapshot restore` (initial cluster token {plan.token})")]
    data = cluster.etcd.data_dir
    if plan.layout.mode == "fresh":
        lines.append(("local", "put the backup's CAs, service-account keys and encryption key into the cluster directory "
                               "where missing (refusing different ones)"))
        for name, (initial, _) in plan.seeds.items():
            lines.append((name, f"seed the empty {data} (member {name}, initial cluster {initial})"))
        lines.append(("local", "then run `up`'s phases: the control plane starts on the restored data"))
        return lines
    is_stacked = stacked(cluster)
    for host in _stop_hosts(cluster):
        stops = [f"{p}.yaml" for p in CONTROL_PLANE_PODS if host.has(Role.CONTROL_PLANE)]
        if is_stacked and host.name in plan.seeds:
            stops.insert(0, "etcd.yaml")
        what = []
        if stops:
            what.append(f"move {', '.join(stops)} out of {MANIFESTS} to {STASH} and wait for their containers to stop")
        if not is_stacked and host.name in plan.seeds:
            what.append("systemctl stop etcd")
        lines.append((host.name, "; ".join(what)))
    for name, (initial, _) in plan.seeds.items():
        lines.append((name, f"move {data}'s contents to {plan.aside}; unpack the restored data (member {name}, {initial})"))
    for name in plan.seeds:
        lines.append((name, ("move etcd.yaml back" if is_stacked else "systemctl start etcd") + "; wait for its /health"))
    for host in cluster.control_planes:
        lines.append((host.name, "move the control-plane manifests back; wait for the API server's /readyz"))
    for host in cluster.nodes:
        lines.append((host.name, "restart the kubelet (its watches start again from the restored revision)"))
    return lines


def _stop_hosts(cluster: Cluster) -> list[Host]:
    names = {h.name for h in cluster.control_planes} | {h.name for h in cluster.etcd_members}
    return [h for h in cluster.hosts if h.name in names]


def prepare_data(plan: RestorePlan, work: Path, tool: list[str] | None = None) -> dict[str, bytes]:
    """Every member's restored data dir as tar.gz bytes, made here before any host changes."""
    ensure_private_dir(work)
    snapshot = work / SNAPSHOT
    atomic_write(snapshot, plan.backup.snapshot, PRIVATE_FILE_MODE, replace=True)
    return {name: restored_data_dir(snapshot, work, name, initial, peer, plan.token, tool)
            for name, (initial, peer) in plan.seeds.items()}


def _fan(transport, hosts: list[Host], work, parallel: int, what: str) -> None:
    from provision.transport import fan_out

    failed = [o for o in fan_out(hosts, work, parallel=parallel) if not o.ok]
    if failed:
        raise KubeprovError(f"{what}: " + "; ".join(f"{o.host}: {o.error_text}" for o in failed))


def wait_members_healthy(transport, hosts: list[Host], timeout: float, parallel: int, say: Say) -> None:
    from provision.kube import etcd_members

    unhealthy = etcd_members.wait_healthy(transport, hosts, timeout=timeout, parallel=parallel,
                                          on_healthy=lambda name, seconds: say(name, f"etcd member healthy after {seconds:.1f}s"))
    if unhealthy:
        name, said = unhealthy
        raise KubeprovError(f"{name}: etcd is not healthy {timeout:g} s after the restore (/health: {said or 'no answer'}); "
                            f"the old data is in the data dir's .before-restore-* sibling")


def restore_same_hosts(cluster: Cluster, transport, plan: RestorePlan, data: dict[str, bytes], say: Say, *,
                       parallel: int, timeout: float) -> None:
    from provision.kube.kubectl import ADMIN_CONF, Kubectl
    from provision.pki.kubeconfigs import local_url

    is_stacked = stacked(cluster)
    by_name = {h.name: h for h in cluster.hosts}
    members = [by_name[name] for name in plan.seeds]
    # Process names as the kernel keeps them (15 characters): kube-controller-manager is "kube-controller".
    processes = " ".join([p[:15] for p in CONTROL_PLANE_PODS] + (["etcd"] if is_stacked else []))

    def stop(host: Host) -> None:
        manifests = [f"{p}.yaml" for p in CONTROL_PLANE_PODS] if host.has(Role.CONTROL_PLANE) else []
        member = host.name in plan.seeds
        if is_stacked and member:
            manifests.insert(0, "etcd.yaml")
        units = "etcd" if member and not is_stacked else ""
        waits = processes if host.has(Role.CONTROL_PLANE) else ""
        _check(transport, host, _script(_STOP, str(MANIFESTS), str(STASH), units, waits, *manifests),
               "stopping the control plane and etcd", timeout=180)
        say(host.name, "stopped: " + ", ".join([m.removesuffix(".yaml") for m in manifests] + ([units] if units else [])))

    def swap(host: Host) -> None:
        result = _check(transport, host, _script(_SWAP, cluster.etcd.data_dir, plan.aside), "replacing the etcd data dir",
                        stdin=data[host.name])
        say(host.name, "; ".join(line for line in result.stdout.splitlines() if line.strip()))

    def start_etcd(host: Host) -> None:
        if is_stacked:
            _check(transport, host, _script(_START, str(MANIFESTS), str(STASH), "", "etcd.yaml"), "starting etcd")
        else:
            # "-" names no manifest: the control-plane ones stay stashed until etcd is healthy.
            _check(transport, host, _script(_START, str(MANIFESTS), str(STASH), "etcd", "-"), "starting etcd")
        say(host.name, "etcd started")

    def start_control_plane(host: Host) -> None:
        _check(transport, host, _script(_START, str(MANIFESTS), str(STASH), ""), "moving the control-plane manifests back")
        kubectl = Kubectl(transport, host, kubeconfig=ADMIN_CONF, server=local_url(cluster, host))
        try:
            seconds = kubectl.wait_ready(min(NUDGE_AFTER, timeout))
        except KubeprovError:
            nudge(host)
            seconds = NUDGE_AFTER + kubectl.wait_ready(timeout)
        say(host.name, f"API server ready (/readyz ok after {seconds:.1f}s)")

    def nudge(host: Host) -> None:
        # A static pod whose manifest left and came back has the same UID; should the kubelet not
        # have started it again by now, a kubelet restart does (it starts every manifest it finds).
        _check(transport, host, "systemctl restart kubelet", "restarting the kubelet")
        say(host.name, f"static pods not back after {NUDGE_AFTER:g}s: kubelet restarted")

    def restart_kubelet(host: Host) -> None:
        _check(transport, host, "systemctl restart kubelet", "restarting the kubelet")
        say(host.name, "kubelet restarted")

    try:
        _fan(transport, _stop_hosts(cluster), stop, parallel, "stopping etcd and the control plane failed")
        _fan(transport, members, swap, parallel, "replacing etcd's data failed")
        _fan(transport, members, start_etcd, parallel, "starting etcd failed")
        try:
            wait_members_healthy(transport, members, min(NUDGE_AFTER, timeout), parallel, say)
        except KubeprovError:
            if is_stacked:
                _fan(transport, members, nudge, parallel, "restarting kubelets failed")
            wait_members_healthy(transport, members, timeout, parallel, say)
    except KubeprovError:
        say("local", f"stopped manifests stay in {STASH} on the control planes: move them back to {MANIFESTS} "
                     "once etcd is healthy, or run the restore again")
        raise
    _fan(transport, cluster.control_planes, start_control_plane, parallel, "the API servers did not come back")
    _fan(transport, cluster.nodes, restart_kubelet, parallel, "restarting kubelets failed")


def seed_fresh(cluster: Cluster, transport, plan: RestorePlan, data: dict[str, bytes], say: Say, *, parallel: int) -> None:
    by_name = {h.name: h for h in cluster.hosts}

    def seed(host: Host) -> None:
        _check(transport, host, _script(_SEED, cluster.etcd.data_dir), "seeding the etcd data dir", stdin=data[host.name])
        say(host.name, f"seeded {cluster.etcd.data_dir} with the snapshot (member {host.name})")

    _fan(transport, [by_name[name] for name in plan.seeds], seed, parallel, "seeding etcd's data failed")


def check_cluster(cluster: Cluster, backup_: Backup, say: Say) -> None:
    """What the backup says about its cluster against the one restored into: warnings, or an error
    when the topology differs (the data dirs are made per topology)."""
    manifest = backup_.manifest
    if manifest.get("etcdTopology") and manifest["etcdTopology"] != cluster.etcd.topology.value:
        raise KubeprovError(f"the backup is of a cluster with {manifest['etcdTopology']} etcd; this one's is "
                            f"{cluster.etcd.topology.value}; nothing was changed")
    if manifest.get("cluster") and manifest["cluster"] != cluster.name:
        say("local", f"warning: the backup is of cluster {manifest['cluster']}, restoring it into {cluster.name}")
    if manifest.get("kubernetesVersion") and manifest["kubernetesVersion"] != cluster.kubernetes_version:
        say("local", f"warning: the backup was taken under Kubernetes {manifest['kubernetesVersion']}, "
                     f"this cluster file says {cluster.kubernetes_version}")


def load_backup(path: Path) -> Backup:
    return read_archive(path)


def restore_workdir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="kubeprov-etcd-restore-")


def restore(cluster: Cluster, path: Path, transport, say: Say, *, dry_run: bool = False, parallel: int = 20,
            timeout: float = 300.0, confirm: Callable[[RestorePlan], None] | None = None,
            now: dt.datetime | None = None) -> tuple[RestorePlan, list[tuple[str, str]]]:
    """Check the backup, look at the hosts, and (unless `dry_run`) restore: same hosts in full;
    fresh hosts up to the seeded data dirs (the caller then runs `up`). Returns the plan and its lines."""
    from provision.pki import PKIStore

    backup_ = read_archive(path)
    say("local", f"{path}: sha256 ok; snapshot of cluster {backup_.manifest.get('cluster')} at revision "
                 f"{backup_.manifest.get('revision')}, taken {backup_.manifest.get('created')} from {backup_.manifest.get('takenFrom')}")
    check_cluster(cluster, backup_, say)
    cluster_dir = PKIStore(cluster).root
    conflicts = ca_conflicts(cluster_dir, backup_.files)
    if conflicts:
        raise KubeprovError(f"{cluster_dir / conflicts[0]} differs from the backup's: the backup is of another cluster "
                            "(or this cluster directory is); restore fresh hosts into a new --cluster-dir. Nothing was changed")
    tool = restore_tool()
    warning = version_warning(tool, backup_.manifest.get("etcdVersion", ""))
    if warning:
        say("local", warning)
    layout = inspect_hosts(transport, cluster, parallel)
    plan = make_plan(cluster, backup_, layout, now)
    lines = plan_lines(cluster, plan)
    if dry_run:
        return plan, lines
    if confirm is not None:
        confirm(plan)
    started = time.monotonic()
    with restore_workdir() as work:
        data = prepare_data(plan, Path(work), tool)
    say("local", f"{len(data)} data dir(s) made with `{Path(tool[0]).name} snapshot restore` in {time.monotonic() - started:.1f}s "
                 "(the snapshot's own hash checked)")
    written = install_ca(cluster_dir, backup_.files)
    if written:
        say("local", f"put {', '.join(written)} into {cluster_dir}")
    if layout.mode == "fresh":
        seed_fresh(cluster, transport, plan, data, say, parallel=parallel)
    else:
        restore_same_hosts(cluster, transport, plan, data, say, parallel=parallel, timeout=timeout)
    return plan, lines
