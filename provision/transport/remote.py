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


# One line per path read from stdin, in order: "<sha256> <mode> <user> <group>", or "-" when the
# path is not a regular file. One round trip for a whole tree.
_STATES = r"""
while IFS= read -r p; do
  if [ -f "$p" ]; then
    s=$(sha256sum < "$p") || exit 1
    printf '%s %s\n' "${s%% *}" "$(stat -L -c '%a %U %G' -- "$p")" || exit 1
  else
    echo -
  fi
done
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
    lines = output.splitlines()
    if len(lines) != len(paths):
        raise ValueError(f"expected {len(paths)} lines from the file listing, got {len(lines)}")
    states: dict[str, FileState | None] = {}
    for path, line in zip(paths, lines):
        if line == "-":
            states[path] = None
            continue
        sha, mode, owner, group = line.split(" ")
        states[path] = FileState(sha, int(mode, 8), owner, group)
    return states


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
