"""Release downloads: streamed, size-capped, checked against the published sha256, cached by sha256.

The cache holds only verified files, at <cache>/sha256/<digest>, and an index URL → digest of
what it verified. A release URL names one version, so its published checksum never changes:
with the URL in the index and the cached file still matching, a fetch makes no request at all.
A download lands in a temporary file beside the cache and is renamed in only once its digest
matches; on any failure the temporary file is removed, so nothing half-checked is ever used.

Transient failures — connection refused or reset, a timeout, HTTP 5xx or 429, a body shorter than
its Content-Length — are tried again with exponential backoff (`Downloader.backoff`), each retry
said as one line ("retry 2/4 in 1.0s: <url>: <reason>") to `Downloader.on_retry`. A 404 or 403, a
complete file whose sha256 differs from the published one, or a file over the size limit fails at
once: asking again would get the same answer.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import socket
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable
from urllib.parse import urlsplit

from provision import retries
from provision.artifacts.checksums import CHUNK, expected_sha256, is_sha256, sha256_file
from provision.artifacts.errors import ArtifactError
from provision.fsutil import atomic_write
from provision.retries import Backoff

DEFAULT_MAX_BYTES = 512 << 20  # the largest binary we fetch (kubelet, ~80 MiB) with room to spare
CHECKSUM_MAX_BYTES = 1 << 20  # SHA256SUMS of a whole release is a few KiB
DEFAULT_TIMEOUT = 30.0  # seconds for connecting and for each read
DEFAULT_BACKOFF = Backoff(attempts=5, first=0.5, maximum=8.0)  # retries after 0.5, 1, 2, 4 s

# HTTP answers that may differ when asked again: the server's own trouble, or "slow down".
_TRANSIENT_STATUS = {408, 429}
# Socket errors of a network on its way up or a server restarting (refused and reset are ConnectionErrors).
_TRANSIENT_ERRNO = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ETIMEDOUT, errno.ENETDOWN}


class DownloadError(ArtifactError):
    """A request or a transfer that failed: "cannot download <url>: <reason>". `transient`: asking
    again may succeed (the network, a server's 5xx or 429, a body cut short)."""

    def __init__(self, url: str, reason: str, transient: bool):
        self.url, self.reason, self.transient = url, reason, transient
        super().__init__(f"cannot download {url}: {reason}")


def _transient(error: BaseException) -> bool:
    """Whether a socket-level or HTTP-framing error may pass when asked again."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return False
    if isinstance(error, (ConnectionError, TimeoutError, ssl.SSLEOFError, http.client.IncompleteRead)):
        return True  # refused, reset, aborted, dropped before the status line, timed out, cut short
    if isinstance(error, socket.gaierror):
        return error.errno == socket.EAI_AGAIN  # a resolver that failed to answer; a name that does not exist stays so
    return isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNO


def _reason(error: BaseException) -> str:
    if isinstance(error, http.client.IncompleteRead):
        return f"the body ended after {len(error.partial)} bytes"
    if isinstance(error, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(error, (TimeoutError, socket.timeout)):
        return "timed out"
    return str(error) or type(error).__name__


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
    backoff: Backoff = DEFAULT_BACKOFF
    # gets each "retry N/R in Ds: <url>: <reason>" line; None: the process's sink (provision/retries.py)
    on_retry: Callable[[str], None] | None = None

    def fetch(self, url: str, sha256_url: str) -> Path:
        """The verified local copy of `url`; its digest must equal the one published at `sha256_url`."""
        digest = self.cache.known(url)
        if digest and (cached := self.cache.lookup(digest)):
            return cached
        expected = self._expected(url, sha256_url)
        cached = self.cache.lookup(expected)
        if cached is None:
            cached = self._retrying(lambda: self._download(url, expected))
        self.cache.remember(url, expected)
        return cached

    def _retrying(self, fn):
        return retries.call(
            fn, self.backoff,
            transient=lambda error: isinstance(error, DownloadError) and error.transient,
            reason=lambda error: f"{error.url}: {error.reason}",
            tell=self.on_retry or (lambda line: retries.say(None, line)),
            gave_up=lambda error, attempts: DownloadError(error.url, f"{error.reason} (gave up after {attempts} attempts)", False),
        )

    def _expected(self, url: str, sha256_url: str) -> str:
        text = self._retrying(lambda: self._get_small(sha256_url))
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
            exc.close()
            transient = exc.code >= 500 or exc.code in _TRANSIENT_STATUS
            raise DownloadError(url, f"HTTP {exc.code} {exc.reason}", transient) from None
        except urllib.error.URLError as exc:
            error = exc.reason if isinstance(exc.reason, BaseException) else exc
            raise DownloadError(url, _reason(error), _transient(error)) from None
        except (OSError, http.client.HTTPException) as exc:
            raise DownloadError(url, _reason(exc), _transient(exc)) from None

    @staticmethod
    def _check_length(url: str, response, size: int) -> None:
        """A body shorter than the Content-Length the server announced was cut short in transit
        (http.client returns what arrived and no error); telling it from a wrong file keeps it transient."""
        length = response.headers.get("Content-Length")
        if length and length.isdigit() and size < int(length):
            raise DownloadError(url, f"the body ended after {size} of {int(length)} bytes", True)

    def _get_small(self, url: str) -> str:
        with self._open(url) as response:
            try:
                data = response.read(CHECKSUM_MAX_BYTES + 1)
            except (OSError, http.client.HTTPException) as exc:
                raise DownloadError(url, _reason(exc), _transient(exc)) from None
            if len(data) > CHECKSUM_MAX_BYTES:
                raise ArtifactError(f"{url}: a checksum file larger than {CHECKSUM_MAX_BYTES} bytes is not a checksum file")
            self._check_length(url, response, len(data))
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
                self._check_length(url, response, size)
                actual = digest.hexdigest()
                if actual != expected:
                    raise ArtifactError(f"{url}: sha256 mismatch: expected {expected}, got {actual}; file discarded")
                os.chmod(fd_path, 0o644)
                target = self.cache.path(expected)
                os.replace(fd_path, target)
                return target
            except (OSError, http.client.HTTPException) as exc:
                raise DownloadError(url, _reason(exc), _transient(exc)) from None
            finally:
                fd_path.unlink(missing_ok=True)
