"""SSH identities: one lab key for root on every host, one host key per host, a known_hosts.

Host keys are made when a host is created, so every host's key is distinct and the known_hosts
lets clients check strictly. Keys are never overwritten: an existing one is reused.
"""

from __future__ import annotations

from pathlib import Path

from provision.fsutil import PRIVATE_FILE_MODE, PUBLIC_FILE_MODE, atomic_write, ensure_private_dir
from provision.lab.system import run


def _keygen(path: Path, comment: str) -> None:
    if not path.exists():
        ensure_private_dir(path.parent) if path.parent.name == ".ssh" else path.parent.mkdir(parents=True, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    path.chmod(PRIVATE_FILE_MODE)


def lab_key(state_dir: Path, lab: str) -> Path:
    """The private key root's authorized_keys trusts on every host of the lab (0600)."""
    path = state_dir / "id_ed25519"
    _keygen(path, f"kubeprov-lab-{lab}")
    return path


def host_key(etc_ssh: Path, host: str) -> str:
    """Make the host's ed25519 key in its overlay's /etc/ssh if missing; return the public key."""
    etc_ssh.mkdir(parents=True, exist_ok=True)
    path = etc_ssh / "ssh_host_ed25519_key"
    _keygen(path, f"root@{host}")
    return public_key(path)


def public_key(private_key: Path) -> str:
    """`type base64` of the key's .pub file (without the comment)."""
    kind, blob, *_ = Path(f"{private_key}.pub").read_text().split()
    return f"{kind} {blob}"


def write_known_hosts(path: Path, entries: list[tuple[str, str, str]]) -> None:
    """entries: (host name, address, public key). Both names map to the key."""
    lines = "".join(f"{name},{address} {key}\n" for name, address, key in entries)
    atomic_write(path, lines.encode(), PUBLIC_FILE_MODE, replace=True)


def write_authorized_keys(root_home: Path, public: str) -> None:
    ssh_dir = ensure_private_dir(root_home / ".ssh")
    atomic_write(ssh_dir / "authorized_keys", f"{public}\n".encode(), PRIVATE_FILE_MODE, replace=True)
