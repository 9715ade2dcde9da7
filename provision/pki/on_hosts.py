"""The certificates and kubeconfigs on the hosts, compared with the cluster directory's.

Each host's rendered tree says which certificate and kubeconfig files it should hold and their
bytes (the cluster directory's, placed by sync); one probe per host reads their sha256, all hosts
at once. A file that differs is read and its own expiry shown: a host renewed by hand, or left
behind by a renew that was never pushed, is what an operator must see.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from provision.config.models import Cluster
from provision.pki import crypto, kubeconfigs

PKI_ROOT = "/etc/kubernetes/"


@dataclass(frozen=True)
class OnHost:
    host: str
    path: str
    state: str  # "same" (as in the cluster directory), "differs", "missing", or "unreadable: …"
    not_after: dt.datetime | None  # the host's copy's expiry (None when missing or unreadable)


def credential_files(tree: dict) -> dict[str, bytes]:
    """The certificates and kubeconfigs of a host's rendered tree (keys and other files left out)."""
    return {str(path): f.content for path, f in tree.items()
            if str(path).startswith(PKI_ROOT) and (str(path).endswith(".crt") or str(path).endswith(".conf"))}


def expiry(path: str, data: bytes) -> dt.datetime:
    if path.endswith(".conf"):
        data = kubeconfigs.parse(data).cert_pem
    return crypto.load_cert(data).not_valid_after_utc


def compare(transport, cluster: Cluster, material, *, parallel: int = 20) -> list[OnHost]:
    from provision.render import render_hosts
    from provision.transport import fan_out

    wanted = {name: credential_files(tree) for name, tree in render_hosts(cluster, material).items()}

    def one(host) -> list[OnHost]:
        files = wanted[host.name]
        states = transport.probe(host, paths=sorted(files)).files
        rows = []
        for path, content in sorted(files.items()):
            state = states[path]
            if state is None:
                rows.append(OnHost(host.name, path, "missing", None))
            elif state.sha256 == hashlib.sha256(content).hexdigest():
                rows.append(OnHost(host.name, path, "same", expiry(path, content)))
            else:
                there = transport.read_file(host, path) or b""
                try:
                    rows.append(OnHost(host.name, path, "differs", expiry(path, there)))
                except ValueError as exc:
                    rows.append(OnHost(host.name, path, f"unreadable: {exc}", None))
        return rows

    found = []
    for outcome in fan_out(cluster.hosts, one, parallel=parallel):
        found += outcome.value if outcome.ok else [OnHost(outcome.host, "-", f"unreadable: {outcome.error_text}", None)]
    return found
