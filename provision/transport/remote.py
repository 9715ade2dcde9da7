"""The shell that runs on hosts: small POSIX sh scripts (coreutils only, no python on the host).

Each function returns a command line; paths and values travel as positional arguments or on
stdin, never pasted into the script, so no quoting bug can turn a path into a command.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath

# Replaced files are copied here, under a directory per run, at their full path:
# /var/backups/kubeprov/20260101T120000Z/etc/kubernetes/manifests/kube-apiserver.yaml.
# Not beside the file: kubelet reads every non-hidden file in /etc/kubernetes/manifests as a pod,
# so a `kube-apiserver.yaml.bak` there would start a second API server.
BACKUP_ROOT = PurePosixPath("/var/backups/kubeprov")

MISSING_EXIT = 44  # read_file: the file does not exist (cat never exits with 44)


def script(body: str, *args: str) -> str:
    """`sh -c BODY sh ARGS...`: the body sees the arguments as $1, $2, ..."""
    return shlex.join(["sh", "-c", body, "sh", *args])


def read_file(path: str) -> str:
    return script(f'[ -e "$1" ] || exit {MISSING_EXIT}; exec cat -- "$1"', path)


# The paths come on stdin, one per line. Printed: a line per path, "+" for a regular file and "-"
# for anything else; then, after a "=" line, the sha256 of each "+" file in order (one sha256sum
# for them all); then, after another "=", its "<mode> <user> <group>" (one stat). Three processes
# for a whole tree however many files it has, not two per file.
_STATES = r"""
set --
while IFS= read -r p; do
  if [ -f "$p" ]; then echo +; set -- "$@" "$p"; else echo -; fi
done
echo =
[ $# -gt 0 ] || { echo =; exit 0; }
sha256sum -- "$@" || exit 1
echo =
exec stat -L -c '%a %U %G' -- "$@"
"""


def file_states() -> str:
    return script(_STATES)


@dataclass(frozen=True)
class FileState:
    sha256: str
    mode: int
    owner: str
    group: str


def parse_states(output: str, paths: list[str]) -> dict[str, FileState | None]:
    marks, _, rest = output.partition("=\n")
    sums, _, stats = rest.partition("=\n")
    marks, sums, stats = marks.splitlines(), sums.splitlines(), stats.splitlines()
    if len(marks) != len(paths) or len(sums) != marks.count("+") or len(stats) != len(sums):
        raise ValueError(f"expected {len(paths)} paths in the file listing, got {len(marks)} "
                         f"({len(sums)} checksums, {len(stats)} modes)")
    found = iter(zip(sums, stats))
    states: dict[str, FileState | None] = {}
    for path, mark in zip(paths, marks):
        if mark != "+":
            states[path] = None
            continue
        line, stat = next(found)
        mode, owner, group = stat.split(" ")
        # sha256sum starts a line with "\" when it had to escape the name: the hash follows it.
        states[path] = FileState(line.removeprefix("\\")[:64], int(mode, 8), owner, group)
    return states


# A GET on a plain-HTTP listener of the host itself (etcd's metrics port: /health), through bash's
# /dev/tcp: no curl or python3 to start, so a health check costs a few milliseconds on the host.
_HTTP_GET = 'exec 3<>"/dev/tcp/$1/$2" && printf "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" "$3" "$1" >&3 && exec cat <&3'


# New TCP connections to a host's API server refused with a reset ("out"), or let in again ("in"):
# while that API server restarts or stops, the load balancers (haproxy on every control plane, or
# a worker's local one, the host's own included) get a reset at once and send the request to
# another server (option redispatch), where otherwise they would hand it to an API server that
# answers /readyz with 500 while it shuts down, until their checks drop it. iptables, legacy and
# nft alike; the rule carries a comment of its own, so "in" removes exactly it.
_API_CONNECTIONS = r"""
rule="INPUT -p tcp -d $1 --dport $2 --syn -m comment --comment kubeprov-api-out -j REJECT --reject-with tcp-reset"
for t in iptables iptables-legacy iptables-nft; do command -v $t >/dev/null || continue
  while $t -D $rule 2>/dev/null; do :; done
  [ "$3" = out ] && $t -I $rule
done; true
"""


def api_connections(address: str, port: int, state: str) -> str:
    """The script that takes the API server at address:port out of the load balancers ("out")
    or back in ("in")."""
    return script(_API_CONNECTIONS, address, str(port), state)


def http_get(address: str, port: int, path: str, timeout: int = 5) -> str:
    return shlex.join(["timeout", str(timeout), "bash", "-c", _HTTP_GET, "bash", address, str(port), path])


def http_answer(output: str) -> tuple[int, str]:
    """(status code, body) of what http_get printed; status 0 when it is not an HTTP answer."""
    head, _, body = output.partition("\r\n\r\n")
    fields = head.split("\r\n", 1)[0].split(" ")
    if len(fields) < 2 or not fields[0].startswith("HTTP/") or not fields[1].isdigit():
        return 0, output
    return int(fields[1]), body


# One round trip for what a run wants to know of a host before it acts (provision/facts.py).
# Arguments: a count and that many paths to test for existence, a count and that many files to
# read, then the systemd units to describe; the paths whose states are wanted come on stdin.
# Printed, each part ended by a "=" line: "y"/"n" per tested path; per read file its bytes in
# base64 on one line, or "-" when it cannot be read; `systemctl show` of the units (nothing on a
# host without systemd: its units read as not running, and the phase that needs one says so),
# each unit whose unit file is newer than its last start marked "Stale=yes" (a oneshot's
# commands changed since they ran: sync replaced its file); then the file states as
# file_states() prints them.
_PROBE = r"""
n=$1; shift
while [ "$n" -gt 0 ]; do if [ -e "$1" ]; then echo y; else echo n; fi; shift; n=$((n - 1)); done
echo =
n=$1; shift
while [ "$n" -gt 0 ]; do if [ -r "$1" ]; then base64 -w0 < "$1" || exit 1; echo; else echo -; fi; shift; n=$((n - 1)); done
echo =
stale() {
  if [ -n "$f" ] && [ -n "$t" ] && [ -e "$f" ]; then s=$(date -d "$t" +%s 2>/dev/null) && [ "$(stat -c %Y -- "$f")" -gt "$s" ] && echo Stale=yes; fi
  f= t=
}
if [ $# -gt 0 ]; then
  systemctl show -p Id -p ActiveState -p UnitFileState -p FragmentPath -p ActiveEnterTimestamp -- "$@" 2>/dev/null | {
    f= t=
    while IFS= read -r l; do
      case $l in FragmentPath=*) f=${l#*=} ;; ActiveEnterTimestamp=*) t=${l#*=} ;; "") stale ;; esac
      echo "$l"
    done
    stale
  }
fi
echo =
""" + _STATES


def probe(exists: list[str], read: list[str], units: list[str]) -> str:
    return script(_PROBE, str(len(exists)), *exists, str(len(read)), *read, *units)


@dataclass(frozen=True)
class UnitState:
    active: str  # systemd's ActiveState: "active", "inactive", "failed", ...
    enabled: str  # UnitFileState: "enabled", "disabled", "" for a unit that does not exist
    stale: bool = False  # its unit file is newer than its last start: changed since the unit started

    @property
    def running(self) -> bool:
        return self.active == "active" and self.enabled == "enabled"


@dataclass(frozen=True)
class Probed:
    exists: dict[str, bool]
    contents: dict[str, bytes | None]
    units: dict[str, UnitState]
    files: dict[str, FileState | None]


def parse_probe(output: str, exists: list[str], read: list[str], units: list[str], paths: list[str]) -> Probed:
    import base64

    lines = output.split("\n")

    def part() -> list[str]:
        if "=" not in lines:
            raise ValueError("the probe's output ended early")
        end = lines.index("=")
        taken = lines[:end]
        del lines[: end + 1]
        return taken

    tested, contents, shown = part(), part(), part()
    if len(tested) != len(exists) or len(contents) != len(read):
        raise ValueError(f"expected {len(exists)} tests and {len(read)} files, got {len(tested)} and {len(contents)}")
    described: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in shown + [""]:
        if not line:
            if current.get("Id"):
                described[current["Id"]] = current
            current = {}
            continue
        key, _, value = line.partition("=")
        current[key] = value
    unit_states = {}
    for unit in units:
        d = described.get(unit) or described.get(f"{unit}.service", {})
        unit_states[unit] = UnitState(d.get("ActiveState", "inactive"), d.get("UnitFileState", ""), d.get("Stale") == "yes")
    return Probed(
        exists={path: line == "y" for path, line in zip(exists, tested)},
        contents={path: None if line == "-" else base64.b64decode(line) for path, line in zip(read, contents)},
        units=unit_states,
        files=parse_states("\n".join(lines), paths),
    )


# Write stdin to $1 atomically: a hidden temp file in the same directory (so the rename is atomic
# and kubelet ignores it), owner and mode set before the rename, the old file copied to $5$1.
_WRITE = r"""
set -eu
p=$1 d=$(dirname -- "$1") n=$(basename -- "$1")
mkdir -p -- "$d"
tmp=$(mktemp -- "$d/.$n.kubeprov-XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
cat > "$tmp"
chown -- "$3:$4" "$tmp"
chmod -- "$2" "$tmp"
sync -- "$tmp" 2>/dev/null || true
if [ -e "$p" ]; then
  b=$5$p
  (umask 077; mkdir -p -- "$(dirname -- "$b")")
  cp -p -- "$p" "$b"
fi
mv -f -- "$tmp" "$p"
trap - EXIT
"""


def write_file(path: str, mode: int, owner: str, group: str, backup_dir: PurePosixPath) -> str:
    return script(_WRITE, path, f"{mode:o}", owner, group, str(backup_dir))


def set_attributes(path: str, mode: int, owner: str, group: str) -> str:
    """Same content, other owner or mode: fix them in place (chown first: it clears setuid bits)."""
    return script('chown -- "$2:$3" "$1" && chmod -- "$4" "$1"', path, owner, group, f"{mode:o}")


# kubeadm-reset-like teardown of a host (provision/day2/reset.py). Arguments: the mode ("plan":
# say what would be done, change nothing; "apply": do it), the static pod manifests directory, the
# kubelet's directory (every mount below it is unmounted), a count and that many systemd units to
# stop and disable, then the paths to remove (a path that is a mount point keeps the mount and
# loses its contents; so does a directory given with a trailing "/", one a daemon watches: containerd
# never sees files in a CNI directory made again after its watch began). Printed: one line per thing done (or to do), on stdout; a step that fails is
# an "error: …" line on stderr, the others still run, and the exit code is 1. Packages, binaries,
# images and containerd itself are kept.
_RESET = r"""
mode=$1 manifests=$2 kubelet_dir=$3 n=$4
shift 4
failed=0
fail() { echo "error: $*" >&2; failed=1; }
apply() { [ "$mode" = apply ]; }
while [ "$n" -gt 0 ]; do
  u=$1; shift; n=$((n - 1))
  a=$(systemctl is-active "$u" 2>/dev/null); e=$(systemctl is-enabled "$u" 2>/dev/null)
  case "$a $e" in
    active*|activating*|reloading*|deactivating*|*" enabled")
      echo "stop and disable $u ($a, $e)"
      if apply; then
        systemctl stop "$u" || fail "systemctl stop $u failed"
        if [ "$e" = enabled ]; then systemctl disable --quiet "$u" || fail "systemctl disable $u failed"; fi
      fi ;;
  esac
done
if apply && pids=$(pgrep -x kubelet); then
  fail "a kubelet still runs outside systemd (pid $(echo $pids)): stop it and reset again"
fi
if [ -d "$manifests" ] && [ -n "$(ls -A "$manifests")" ]; then
  echo "remove static pod manifests: $(ls -A "$manifests" | tr '\n' ' ' | sed 's/ $//')"
  if apply; then find "$manifests" -mindepth 1 -maxdepth 1 -exec rm -rf -- {} + || fail "removing $manifests/* failed"; fi
fi
if command -v crictl >/dev/null 2>&1; then
  if pods=$(crictl pods -q 2>/dev/null) && ctrs=$(crictl ps -a -q 2>/dev/null); then
    np=$(printf '%s' "$pods" | grep -c .); nc=$(printf '%s' "$ctrs" | grep -c .)
    if [ "$np" -gt 0 ] || [ "$nc" -gt 0 ]; then
      echo "stop and remove $np pod sandboxes and $nc containers (crictl rmp -af, rm -af)"
      if apply; then
        crictl rmp -a -f >/dev/null 2>&1
        crictl rm -a -f >/dev/null 2>&1
        left=$(crictl ps -a -q 2>/dev/null | grep -c .)
        [ "$left" -eq 0 ] || fail "$left containers are still there after crictl rmp/rm (see crictl ps -a)"
      fi
    fi
  else
    fail "crictl cannot list containers (is containerd running?): $(crictl ps -a -q 2>&1 | grep . | tail -n 1 | cut -c1-200)"
  fi
elif command -v ctr >/dev/null 2>&1; then
  # No crictl (a bundle without it): containerd's own client removes the CRI's containers (the
  # k8s.io namespace), the pods' network namespaces go by hand, and containerd restarts so that
  # its CRI plugin, which caches its pods, reads them again: none.
  if ctrs=$(ctr -n k8s.io containers ls -q 2>/dev/null) && tasks=$(ctr -n k8s.io tasks ls -q 2>/dev/null); then
    nc=$(printf '%s' "$ctrs" | grep -c .); nt=$(printf '%s' "$tasks" | grep -c .)
    if [ "$nc" -gt 0 ] || [ "$nt" -gt 0 ]; then
      echo "stop and remove $nc containers, $nt running, of containerd's k8s.io namespace (no crictl here: ctr), then restart containerd"
      if apply; then
        for t in $tasks; do ctr -n k8s.io tasks rm -f "$t" >/dev/null 2>&1; done
        for c in $ctrs; do ctr -n k8s.io containers rm "$c" >/dev/null 2>&1; done
        for ns in /run/netns/cni-*; do
          [ -e "$ns" ] || continue
          umount "$ns" 2>/dev/null; rm -f -- "$ns"
        done
        awk 'index($5, "/run/containerd/io.containerd.grpc.v1.cri/sandboxes/") == 1 { print $5 }' /proc/self/mountinfo \
          | sort -r | while IFS= read -r m; do umount -- "$m" 2>/dev/null || umount -l -- "$m"; done
        systemctl restart containerd || fail "restarting containerd failed"
        left=$(ctr -n k8s.io containers ls -q 2>/dev/null | grep -c .)
        [ "$left" -eq 0 ] || fail "$left containers are still there after ctr tasks rm / containers rm (see ctr -n k8s.io containers ls)"
      fi
    fi
  else
    fail "ctr cannot list containers (is containerd running?): $(ctr -n k8s.io containers ls -q 2>&1 | grep . | tail -n 1 | cut -c1-200)"
  fi
else
  echo "no crictl or ctr on this host: no containers to remove"
fi
list_mounts() { awk -v d="$kubelet_dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r; }
count=$(list_mounts | grep -c .)
if [ "$count" -gt 0 ]; then
  echo "unmount $count mounts under $kubelet_dir"
  if apply; then
    list_mounts | while IFS= read -r m; do
      m=$(printf '%b' "$m")
      umount -- "$m" 2>/dev/null || umount -l -- "$m" || echo "error: cannot unmount $m" >&2
    done
    left=$(list_mounts | grep -c .)
    [ "$left" -eq 0 ] || fail "$left mounts are still under $kubelet_dir: $(list_mounts | head -n 3 | tr '\n' ' ')"
  fi
fi
had_manifests=; [ -d "$manifests" ] && had_manifests=1
for p in "$@"; do
  why=
  case "$p" in */) p=${p%/}; why="the directory stays: a daemon watches it";; esac
  [ -e "$p" ] || [ -L "$p" ] || continue
  if [ -d "$p" ] && [ -z "$why" ] && mountpoint -q -- "$p"; then why="a mount point: the mount stays"; fi
  if [ -d "$p" ] && [ -n "$why" ]; then
    [ -n "$(ls -A "$p")" ] || continue
    echo "empty $p ($why)"
    if apply; then find "$p" -mindepth 1 -maxdepth 1 -exec rm -rf --one-file-system -- {} + || fail "emptying $p failed"; fi
  else
    echo "remove $p"
    if apply; then rm -rf --one-file-system -- "$p" || fail "removing $p failed"; fi
  fi
done
# The static pod directory stays, empty, as kubeadm reset leaves it (the kubelet reads it; prepare made it).
if apply && [ -n "$had_manifests" ]; then mkdir -p -- "$manifests" || fail "cannot make $manifests again"; fi
names() { awk -F': ' '{ sub(/@.*/, "", $2); print $2 }'; }
for l in $(ip -o link show master cni0 2>/dev/null | names); do
  echo "delete interface $l (a pod's veth on cni0)"
  if apply; then ip link delete "$l" 2>/dev/null || ! ip link show dev "$l" >/dev/null 2>&1 || fail "cannot delete interface $l"; fi
done
for l in $(ip -o link show 2>/dev/null | names); do
  case "$l" in
    tunl0)
      if ip -o link show tunl0 | grep -q '[<,]UP[,>]'; then
        echo "set tunl0 down and flush its addresses"
        if apply; then { ip addr flush dev tunl0 && ip link set tunl0 down; } || fail "cannot set tunl0 down"; fi
      fi ;;
    cni0|flannel.1|flannel-v6.1|vxlan.calico|vxlan-v6.calico|kube-ipvs0|cali*)
      echo "delete interface $l"
      if apply; then ip link delete "$l" || fail "cannot delete interface $l"; fi ;;
  esac
done
routes_proto=77  # the bridge CNI's routes to the other nodes' pod CIDRs (provision/render/cni/bridge.py: ROUTES_PROTO)
for fam in 4 6; do
  [ -n "$(ip -$fam route show proto $routes_proto 2>/dev/null)" ] || continue
  echo "delete the routes to other nodes' pod CIDRs (IPv$fam, proto $routes_proto: the bridge CNI's)"
  if apply; then ip -$fam route flush proto $routes_proto || fail "cannot delete the routes of proto $routes_proto"; fi
done
for fam in iptables ip6tables; do
  for backend in legacy nft; do
    command -v "$fam-$backend-save" >/dev/null 2>&1 || continue
    dump=$("$fam-$backend-save" 2>/dev/null) || continue
    chains=$(printf '%s\n' "$dump" | grep -c '^:KUBE-')
    rules=$(printf '%s\n' "$dump" | grep -c -e '^-A KUBE-' -e ' -[jg] KUBE-')
    [ "$chains" -gt 0 ] || [ "$rules" -gt 0 ] || continue
    echo "flush and delete $chains KUBE-* chains and the $rules rules in or into them ($fam, $backend)"
    if apply; then
      printf '%s\n' "$dump" | awk '!/^:KUBE-/ && !/^-A KUBE-/ && !/ -[jg] KUBE-/' | "$fam-$backend-restore" \
        || fail "$fam-$backend-restore failed: the KUBE-* chains stay"
    fi
  done
done
if command -v nft >/dev/null 2>&1; then
  for fam in ip ip6; do
    nft list table "$fam" kube-proxy >/dev/null 2>&1 || continue
    echo "delete nftables table $fam kube-proxy"
    if apply; then nft delete table "$fam" kube-proxy || fail "cannot delete nftables table $fam kube-proxy"; fi
  done
fi
if command -v ipvsadm >/dev/null 2>&1 && [ -n "$(ipvsadm -Sn 2>/dev/null)" ]; then
  echo "clear the IPVS tables (ipvsadm --clear)"
  if apply; then ipvsadm --clear || fail "ipvsadm --clear failed"; fi
fi
exit $failed
"""


def reset_host(apply: bool, *, manifests: str, kubelet_dir: str, units: list[str], paths: list[str]) -> str:
    """The teardown of `up` on a host (kubeadm reset's, and the CNI's and kube-proxy's leftovers):
    with apply=False the same script says what it would do and changes nothing."""
    return script(_RESET, "apply" if apply else "plan", manifests, kubelet_dir, str(len(units)), *units, *paths)


# Start systemd units that need a binary: exit NO_BINARY without it, UNITS_RUNNING when every unit is
# active and enabled already (nothing restarted), else reload systemd and enable --now them all.
# Each unit is asked on its own: `systemctl is-active a b` succeeds when any one of them is active.
NO_BINARY = 44
UNITS_RUNNING = 45
_START_UNITS = r"""
b=$1; shift
[ -x "$b" ] || exit 44
for u; do systemctl is-active --quiet "$u" && systemctl is-enabled --quiet "$u" || { running=no; break; }; done
[ "${running:-yes}" = yes ] && exit 45
systemctl daemon-reload && systemctl enable --now "$@"
"""


def start_units(binary: str, units: list[str]) -> str:
    return script(_START_UNITS, binary, *units)
