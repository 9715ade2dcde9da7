"""sha256: computing it, and reading it out of the checksum files releases publish.

Upstreams publish checksums in three shapes, all handled by `expected_sha256`:
  a bare digest                      dl.k8s.io's kubelet.sha256, crictl's .sha256
  `<digest>  <file>` for one file    CNI plugins' .sha256, containerd's .sha256sum
  `<digest>  <file>` for many files  etcd's SHA256SUMS, runc's runc.sha256sum, our bundles
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")  # sha256sum: two spaces (text) or ' *' (binary mode)
CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class DigestCache:
    """sha256 of files already hashed, remembered across runs in a small JSON file, keyed by what
    any change to a file moves: size, mtime, ctime (which no one can set back) and inode. A no-op
    `up` then re-reads 400 MB of bundle no more; a changed file is hashed again."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.entries: dict[str, list] = json.loads(path.read_text())
        except (OSError, ValueError):
            self.entries = {}
        self.changed = False

    def sha256(self, file: Path) -> str:
        st = file.stat()
        key = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        entry = self.entries.get(str(file))
        if entry and entry[:4] == key:
            return entry[4]
        digest = sha256_file(file)
        self.entries[str(file)] = [*key, digest]
        self.changed = True
        return digest

    def save(self) -> None:
        if self.changed:
            from provision.fsutil import atomic_write, ensure_private_dir

            ensure_private_dir(self.path.parent)
            atomic_write(self.path, json.dumps(self.entries).encode(), 0o600, replace=True)
            self.changed = False


def is_sha256(value: str) -> bool:
    return bool(_HEX64.match(value))


def parse_sums(text: str, source: str) -> dict[str, str]:
    """A sha256sum-format file → {file name: digest}. Raises ValueError naming the bad line."""
    sums: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = _LINE.match(line.rstrip("\r"))
        if not match:
            raise ValueError(f"{source} line {number}: not `<sha256>  <file>`: {line[:80]!r}")
        digest, name = match.group(1).lower(), match.group(2)
        if name in sums and sums[name] != digest:
            raise ValueError(f"{source} line {number}: {name} is listed twice with different sums")
        sums[name] = digest
    return sums


def expected_sha256(text: str, file_name: str, source: str) -> str:
    """The digest a published checksum file gives for `file_name` (its base name)."""
    stripped = text.strip()
    if is_sha256(stripped.lower()):
        return stripped.lower()
    sums = parse_sums(text, source)
    for name, digest in sums.items():
        if name.rsplit("/", 1)[-1] == file_name:
            return digest
    raise ValueError(f"{source} has no sha256 for {file_name}")
