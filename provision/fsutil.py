"""Writing files the way a PKI needs: atomically, with the mode set before any byte lands."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
PUBLIC_FILE_MODE = 0o644


def ensure_private_dir(path: Path) -> Path:
    """Create `path` and any missing parents as 0700 directories; tighten `path` if it is looser.

    `Path.mkdir(parents=True)` would give the parents the umask's mode, leaving e.g. a cluster
    directory world-readable around a private pki/.
    """
    missing = []
    probe = Path(path)
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        directory.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
        directory.chmod(PRIVATE_DIR_MODE)
    if path.stat().st_mode & 0o077:
        path.chmod(PRIVATE_DIR_MODE)
    return path


def atomic_write(path: Path, data: bytes, mode: int, *, replace: bool = False) -> None:
    """Write `data` to `path` via a temporary file in the same directory and a rename.

    The temporary file is created with `mode` already applied, so a key is never readable by
    others, not even for a moment. Without `replace`, an existing file is an error: callers that
    replace a key or certificate must say so (and back it up first).
    """
    path = Path(path)
    if path.exists() and not replace:
        raise FileExistsError(f"refusing to overwrite {path}")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # the umask may have narrowed the mode given to open()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def backup_file(path: Path, backup_dir: Path) -> Path:
    """Copy `path` into `backup_dir` keeping its mode; returns the copy's path."""
    ensure_private_dir(backup_dir)
    target = backup_dir / path.name
    shutil.copy2(path, target)
    return target
