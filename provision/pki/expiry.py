"""Which certificates of the local cluster directory expire soon, and the one line that says so.

Every command that loads a cluster calls `warning()`; it must cost next to nothing: each
certificate file and each kubeconfig's embedded client certificate is parsed once, per run,
nothing is cached between runs, and keys, signatures and SANs are not looked at
(`certs check-expiration` does that). Only the local directory is read: asking a control plane
would add an SSH round trip (or a connect timeout) to commands that otherwise need no host.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from provision.config.models import Cluster
from provision.pki import crypto, kubeconfigs
from provision.pki.certlist import CAS
from provision.pki.store import Credential, PKIStore

WARN_WITHIN = dt.timedelta(days=30)


@dataclass(frozen=True)
class Expiring:
    name: str  # as `certs renew` takes it (a CA's name for a CA)
    host: str | None  # None: cluster-wide (CAs, admin.conf, …)
    not_after: dt.datetime
    is_ca: bool = False

    @property
    def label(self) -> str:
        what = f"{self.name} CA" if self.is_ca else self.name
        return f"{what} ({self.host})" if self.host else what


# A kubeconfig's one embedded client certificate, as kubeconfigs.build writes it: found without
# parsing the YAML (libyaml takes ~1 ms per kubeconfig, most of this check on a large cluster).
_CLIENT_CERT = re.compile(rb"^\s*client-certificate-data:\s*([A-Za-z0-9+/=]+)\s*$", re.MULTILINE)


def _client_cert_pem(data: bytes) -> bytes:
    found = _CLIENT_CERT.findall(data)
    if len(found) == 1:
        return base64.b64decode(found[0])
    return kubeconfigs.parse(data).cert_pem  # another shape: read it as the YAML it is


def _not_after(path: Path, kubeconfig: bool) -> dt.datetime | None:
    """The certificate's end of validity, or None when the file is absent or unreadable
    (`certs check-expiration` and `certs generate` report those)."""
    try:
        data = path.read_bytes()
        return crypto.load_cert(_client_cert_pem(data) if kubeconfig else data).not_valid_after_utc
    except (OSError, ValueError):
        return None


def expiring(cluster: Cluster, *, now: dt.datetime | None = None, within: dt.timedelta = WARN_WITHIN
             ) -> tuple[list[Expiring], list[Credential]]:
    """(what expires before now + within — expired ones included — soonest first,
    every leaf credential of the cluster). Nothing when the cluster directory does not exist."""
    store = PKIStore(cluster)
    if not store.root.is_dir():
        return [], []
    limit = (now or dt.datetime.now(dt.timezone.utc)) + within
    found = []
    for ca in CAS:
        not_after = _not_after(store.ca_paths(ca)[0], kubeconfig=False)
        if not_after is not None and not_after <= limit:
            found.append(Expiring(ca.name, None, not_after, is_ca=True))
    credentials = store.credentials()
    for cred in credentials:
        not_after = _not_after(cred.path, kubeconfig=cred.is_kubeconfig)
        if not_after is not None and not_after <= limit:
            found.append(Expiring(cred.name, cred.host.name if cred.host else None, not_after))
    found.sort(key=lambda e: e.not_after)
    return found, credentials


def renew_command(leaves: Sequence[Expiring], credentials: Sequence[Credential], extra: Sequence[str] = ()) -> str:
    """The `kubeprov certs renew …` line for `leaves`, read as `PKIStore.select` reads it: their
    names (`all` when that is every credential), with --host only where the names alone would
    re-issue more than `leaves`; when no line selects exactly them, the names on every host."""

    def key(cred: Credential) -> tuple[str, str | None]:
        return cred.name, cred.host.name if cred.host else None

    order: dict[str, int] = {}
    for cred in credentials:
        order.setdefault(cred.name, len(order))
    names = sorted({e.name for e in leaves}, key=lambda n: order.get(n, len(order)))
    wanted = {(e.name, e.host) for e in leaves}
    by_name = {key(c) for c in credentials if c.name in names}
    hosts = sorted({e.host for e in leaves if e.host})
    args = ["all"] if by_name == {key(c) for c in credentials} else list(names)
    if by_name != wanted and all(e.host for e in leaves) and {k for k in by_name if k[1] in hosts} == wanted:
        args = [*(["all"] if len(names) == len(order) else names), *(arg for host in hosts for arg in ("--host", host))]
    return shlex.join(["kubeprov", "certs", "renew", *args, *extra])


def _when(moment: dt.datetime, now: dt.datetime) -> str:
    stamp = f"{moment:%Y-%m-%d %H:%M}Z"
    if moment <= now:
        return f"expired {stamp}"
    left = moment - now
    if left < dt.timedelta(days=1):
        hours = int(left.total_seconds() // 3600)
        return f"expires {stamp} (in {hours} hour{'s' if hours != 1 else ''})" if hours else f"expires {stamp} (within the hour)"
    days = round(left / dt.timedelta(days=1))
    return f"expires {stamp} (in {days} day{'s' if days != 1 else ''})"


def warning(cluster: Cluster, *, renew_args: Sequence[str] = (), now: dt.datetime | None = None,
            within: dt.timedelta = WARN_WITHIN) -> str | None:
    """One line naming what expires within `within` (the first few, soonest first, with their
    dates) and the command that renews it; None when nothing does. `renew_args` are appended to
    that command (the -c/-i/--cluster-dir the operator used)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    found, credentials = expiring(cluster, now=now, within=within)
    if not found:
        return None
    shown = ", ".join(f"{e.label} {_when(e.not_after, now)}" for e in found[:3])
    more = f" and {len(found) - 3} more (`kubeprov certs check-expiration` lists them)" if len(found) > 3 else ""
    days = within.days
    head = (f"certificate {shown}" if len(found) == 1
            else f"{len(found)} certificates expire within {days} days: {shown}{more}")
    leaves = [e for e in found if not e.is_ca]
    parts = [head]
    if leaves:
        parts.append(f"renew {'it' if len(found) == 1 else 'them'} with `{renew_command(leaves, credentials, renew_args)}`")
    cas = [e for e in found if e.is_ca]
    if cas:
        # One CA per rotation: each is a roll of the whole cluster (certs rotate-ca --help).
        parts.append("replace " + ("the CA" if len(cas) == 1 else "each CA") + " with " + ", then ".join(
            f"`{shlex.join(['kubeprov', 'certs', 'rotate-ca', e.name, *renew_args])}`" for e in cas))
    return "; ".join(parts)
