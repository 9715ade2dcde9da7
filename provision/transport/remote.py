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
# host without systemd: its units read as not running, and the phase that needs one says so);
# then the file states as file_states() prints them.
_PROBE = r"""
n=$1; shift
while [ "$n" -gt 0 ]; do if [ -e "$1" ]; then echo y; else echo n; fi; shift; n=$((n - 1)); done
echo =
n=$1; shift
while [ "$n" -gt 0 ]; do if [ -r "$1" ]; then base64 -w0 < "$1" || exit 1; echo; else echo -; fi; shift; n=$((n - 1)); done
echo =
if [ $# -gt 0 ]; then systemctl show -p Id -p ActiveState -p UnitFileState -- "$@" 2>/dev/null; fi
echo =
""" + _STATES


def probe(exists: list[str], read: list[str], units: list[str]) -> str:
    return script(_PROBE, str(len(exists)), *exists, str(len(read)), *read, *units)


@dataclass(frozen=True)
class UnitState:
    active: str  # systemd's ActiveState: "active", "inactive", "failed", ...
    enabled: str  # UnitFileState: "enabled", "disabled", "" for a unit that does not exist

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
        unit_states[unit] = UnitState(d.get("ActiveState", "inactive"), d.get("UnitFileState", ""))
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
