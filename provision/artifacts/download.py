"""Release downloads: streamed, size-capped, checked against the published sha256, cached by sha256.

The cache holds only verified files, at <cache>/sha256/<digest>, and an index URL → digest of
what it verified. A release URL names one version, so its published checksum never changes:
with the URL in the index and the cached file still matching, a fetch makes no request at all.
A download lands in a temporary file beside the cache and is renamed in only once its digest
matches; on any failure the temporary file is removed, so nothing half-checked is ever used.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from provision.artifacts.checksums import CHUNK, expected_sha256, is_sha256, sha256_file
from provision.artifacts.errors import ArtifactError
from provision.fsutil import atomic_write

DEFAULT_MAX_BYTES = 512 << 20  # the largest binary we fetch (kubelet, ~80 MiB) with room to spare
CHECKSUM_MAX_BYTES = 1 << 20  # SHA256SUMS of a whole release is a few KiB
DEFAULT_TIMEOUT = 30.0  # seconds for connecting and for each read


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kubeprov" / "artifacts"


class Cache:
    """Verified files by sha256, and which URL each came from."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else default_cache_dir()

    @property
    def _index_path(self) -> Path:
        return self.root / "index.json"

    def path(self, digest: str) -> Path:
        return self.root / "sha256" / digest

    def index(self) -> dict[str, str]:
        try:
            data = json.loads(self._index_path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return {url: d for url, d in data.items() if isinstance(d, str) and is_sha256(d)} if isinstance(data, dict) else {}

    def known(self, url: str) -> str | None:
        """The digest this URL was verified to have, if a download of it is in the cache."""
        digest = self.index().get(url)
        return digest if digest and self.path(digest).is_file() else None

    def lookup(self, digest: str) -> Path | None:
        """The cached file with this digest, re-hashed: a file damaged since is dropped."""
        path = self.path(digest)
        if not path.is_file():
            return None
        if sha256_file(path) != digest:
            path.unlink()
            return None
        return path

    def remember(self, url: str, digest: str) -> None:
        index = self.index()
        if index.get(url) != digest:
            index[url] = digest
            atomic_write(self._index_path, json.dumps(index, indent=1, sort_keys=True).encode(), 0o644, replace=True)

    def tmp_dir(self) -> Path:
        tmp = self.root / "tmp"
        (self.root / "sha256").mkdir(parents=True, exist_ok=True)
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp


@dataclass
class Downloader:
    cache: Cache
    max_bytes: int = DEFAULT_MAX_BYTES
    timeout: float = DEFAULT_TIMEOUT

    def fetch(self, url: str, sha256_url: str) -> Path:
        """The verified local copy of `url`; its digest must equal the one published at `sha256_url`."""
        digest = self.cache.known(url)
        if digest and (cached := self.cache.lookup(digest)):
            return cached
        expected = self._expected(url, sha256_url)
        cached = self.cache.lookup(expected)
        if cached is None:
            cached = self._download(url, expected)
        self.cache.remember(url, expected)
        return cached

    def _expected(self, url: str, sha256_url: str) -> str:
        text = self._get_small(sha256_url)
        try:
            return expected_sha256(text, PurePosixPath(urlsplit(url).path).name, sha256_url)
        except ValueError as exc:
            raise ArtifactError(f"cannot use the checksum for {url}: {exc}") from None

    def _open(self, url: str):
        if urlsplit(url).scheme not in ("http", "https"):
            raise ArtifactError(f"{url}: only http and https downloads are allowed")
        request = urllib.request.Request(url, headers={"User-Agent": "kubeprov"})
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            raise ArtifactError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ArtifactError(f"cannot download {url}: {reason}") from None

    def _get_small(self, url: str) -> str:
        with self._open(url) as response:
            try:
                data = response.read(CHECKSUM_MAX_BYTES + 1)
            except (OSError, socket.timeout) as exc:
                raise ArtifactError(f"cannot download {url}: {exc}") from None
        if len(data) > CHECKSUM_MAX_BYTES:
            raise ArtifactError(f"{url}: a checksum file larger than {CHECKSUM_MAX_BYTES} bytes is not a checksum file")
        return data.decode("utf-8", "replace")

    def _download(self, url: str, expected: str) -> Path:
        with self._open(url) as response:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > self.max_bytes:
                raise ArtifactError(f"{url}: {int(length)} bytes is more than the {self.max_bytes}-byte limit")
            fd_path = self.cache.tmp_dir() / f"{expected}.{os.getpid()}.part"
            digest, size = hashlib.sha256(), 0
            try:
                with open(fd_path, "wb") as handle:
                    while chunk := response.read(CHUNK):
                        size += len(chunk)
                        if size > self.max_bytes:
                            raise ArtifactError(f"{url}: more than the {self.max_bytes}-byte limit; download stopped")
                        digest.update(chunk)
                        handle.write(chunk)
                actual = digest.hexdigest()
                if actual != expected:
                    raise ArtifactError(f"{url}: sha256 mismatch: expected {expected}, got {actual}; file discarded")
                os.chmod(fd_path, 0o644)
                target = self.cache.path(expected)
                os.replace(fd_path, target)
                return target
            except (OSError, socket.timeout) as exc:
                raise ArtifactError(f"cannot download {url}: {exc}") from None
            finally:
                fd_path.unlink(missing_ok=True)
