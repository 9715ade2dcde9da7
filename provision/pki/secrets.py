"""The key that encrypts Secrets at rest (the API server's EncryptionConfiguration, aescbc).

It lives in the cluster directory as `secrets/encryption-key`: 32 random bytes (AES-256), mode
0600 in a 0700 directory. It is made once and never replaced: every Secret written since it
exists is encrypted with it, so a new key would make them unreadable. Rotating it is a separate,
deliberate procedure (add a second key first, rewrite all Secrets, then drop the old one).
Nothing here prints the key; callers must not either.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from provision.errors import PKIError
from provision.fsutil import PRIVATE_FILE_MODE, atomic_write, ensure_private_dir
from provision.pki.outcome import Outcome

if TYPE_CHECKING:
    from provision.config.models import Cluster

KEY_SIZE = 32  # AES-256, what aescbc expects (16 and 24 work too; 32 is the strongest)
LABEL = "encryption-key"


def encryption_key_path(cluster_dir: Path) -> Path:
    return Path(cluster_dir) / "secrets" / "encryption-key"


def ensure_encryption_key(cluster: Cluster, cluster_dir: Path) -> list[Outcome]:
    """Create the key if the cluster encrypts Secrets and none exists; keep (and check) one that does."""
    path = encryption_key_path(cluster_dir)
    if path.exists():
        _check(path, path.read_bytes())
        return [Outcome(LABEL, path, "kept")]
    if not cluster.control_plane.encrypt_secrets:
        return []
    ensure_private_dir(path.parent)
    atomic_write(path, os.urandom(KEY_SIZE), PRIVATE_FILE_MODE)
    return [Outcome(LABEL, path, "created")]


def read_encryption_key(cluster_dir: Path, *, required: bool) -> bytes | None:
    """The key's bytes, or None when absent and not required. Raises PKIError when it is needed
    but missing, or when the file is not a key (wrong size)."""
    path = encryption_key_path(cluster_dir)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if required:
            raise PKIError(f"{path} is missing; run `kubeprov certs generate`") from None
        return None
    _check(path, data)
    return data


def _check(path: Path, data: bytes) -> None:
    if len(data) != KEY_SIZE:
        # Never regenerate: a wrong-sized file may be a damaged copy of the key Secrets depend on.
        raise PKIError(f"{path} holds {len(data)} bytes, not a {KEY_SIZE}-byte key; restore it from a backup")
    if path.stat().st_mode & 0o077:
        raise PKIError(f"{path} is readable by others (mode {path.stat().st_mode & 0o777:o}); chmod 600 it")
