"""The cluster's PKI on disk in the local cluster directory: load what exists, issue what is missing.

Layout (relative to the cluster directory, mode 0700 directories, 0600 keys):

    pki/ca.{crt,key} pki/front-proxy-ca.{crt,key} pki/etcd/ca.{crt,key} pki/sa.{key,pub}
    pki/nodes/<host>/<kubeadm base name>.{crt,key}      e.g. pki/nodes/cp1/etcd/server.crt
    kubeconfigs/admin.conf kubeconfigs/super-admin.conf
    kubeconfigs/nodes/<host>/{controller-manager,scheduler,kubelet}.conf
    backup/<UTC timestamp>/…                             what `renew` replaced

Nothing that exists is ever rewritten by `generate`: a certificate that no longer matches the
cluster (SANs, subject, signer, server URL) is reported as stale and replaced only by `renew`,
which backs up the old files first. A CA certificate without its key is an external CA: leaves
it signs must then already exist, signed by it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from provision.config.models import Cluster, Host
from provision.errors import PKIError
from provision.fsutil import PRIVATE_FILE_MODE, PUBLIC_FILE_MODE, atomic_write, backup_file, ensure_private_dir
from provision.pki import crypto, kubeconfigs, secrets
from provision.pki.certlist import CA_BY_NAME, CAS, CERTS, CLIENT_AUTH, SA_KEY, SA_PUB, CASpec, SANs, cert_names
from provision.pki.crypto import LeafRequest, PrivateKey
from provision.pki.outcome import Outcome


@dataclass(frozen=True)
class Credential:
    """One client or serving certificate the cluster needs, stored as a PEM pair or a kubeconfig."""

    name: str  # kubeadm's name: 'apiserver', 'etcd-peer', 'admin.conf', …
    host: Host | None  # None for the cluster-wide kubeconfigs
    ca: str
    request: LeafRequest
    path: Path  # the .crt, or the kubeconfig
    key_path: Path | None = None  # None for a kubeconfig (the key is embedded)
    server: str | None = None  # a kubeconfig's API URL

    @property
    def is_kubeconfig(self) -> bool:
        return self.key_path is None

    @property
    def label(self) -> str:
        return f"{self.name} ({self.host.name})" if self.host else self.name


@dataclass
class Status:
    """One row of `certs check-expiration`."""

    name: str
    host: str
    not_after: dt.datetime | None
    ca: str
    external: bool
    problems: list[str] = field(default_factory=list)

    def residual(self, now: dt.datetime) -> dt.timedelta | None:
        return None if self.not_after is None else self.not_after - now


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


class PKIStore:
    def __init__(self, cluster: Cluster, cluster_dir: Path | None = None):
        self.cluster = cluster
        self.root = Path(cluster_dir or cluster.directory)
        self.pki_dir = self.root / "pki"
        self.kubeconfig_dir = self.root / "kubeconfigs"
        self._cas: dict[str, tuple[x509.Certificate, PrivateKey | None]] = {}
        self._validated_cas: set[str] = set()
        self._fresh_keys: Iterator[PrivateKey] = iter(())  # made ahead, in parallel, by generate()

    # --- where things live --------------------------------------------------------------------

    def ca_paths(self, ca: CASpec) -> tuple[Path, Path]:
        return self.pki_dir / f"{ca.base_name}.crt", self.pki_dir / f"{ca.base_name}.key"

    def node_pki_dir(self, host: Host) -> Path:
        return self.pki_dir / "nodes" / host.name

    def kubeconfig_path(self, file: str, host: Host | None) -> Path:
        return self.kubeconfig_dir / file if host is None else self.kubeconfig_dir / "nodes" / host.name / file

    def credentials(self) -> list[Credential]:
        cluster = self.cluster
        found = []
        for spec in CERTS:
            for host in spec.hosts(cluster):
                base = self.node_pki_dir(host) / spec.base_name
                request = LeafRequest(
                    spec.common_name(cluster, host), spec.organizations(cluster), spec.usages, spec.sans(cluster, host)
                )
                found.append(Credential(spec.name, host, spec.ca, request, base.with_suffix(".crt"), base.with_suffix(".key")))
        for kc in kubeconfigs.KUBECONFIGS:
            if not kc.needed(cluster):
                continue
            for host in kc.hosts(cluster) if kc.hosts else [None]:
                request = LeafRequest(kc.user(cluster, host), kc.organizations(cluster), (CLIENT_AUTH,), SANs())
                found.append(
                    Credential(kc.file, host, "ca", request, self.kubeconfig_path(kc.file, host), server=kc.server(cluster, host))
                )
        return found

    # --- generate -----------------------------------------------------------------------------

    def generate(self, now: dt.datetime | None = None) -> list[Outcome]:
        """Make every missing CA, key, certificate and kubeconfig; keep and check what exists."""
        now = now or _now()
        credentials = self.credentials()
        self._refuse_unissuable(credentials)
        ensure_private_dir(self.root)  # it holds CA keys
        self._fresh_keys = iter(crypto.new_keys(self.cluster.certificates.key_algorithm, self._keys_needed(credentials)))
        outcomes = [self._ensure_ca(ca, now) for ca in CAS]
        outcomes += self._ensure_sa_keys()
        outcomes += secrets.ensure_encryption_key(self.cluster, self.root)
        for cred in credentials:
            outcomes.append(self._ensure(cred, now))
        return outcomes

    def _refuse_unissuable(self, credentials: list[Credential]) -> None:
        """External CA (its cert without its key): every leaf it signs must already exist.

        Checked before anything is written, so a refused run leaves the directory as it was.
        """
        external = {ca.name for ca in CAS if self.ca_paths(ca)[0].exists() and not self.ca_paths(ca)[1].exists()}
        missing = [cred for cred in credentials if cred.ca in external and not cred.path.exists()]
        if missing:
            first = missing[0]
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise PKIError(
                f"cannot issue {first.label}{more}: {self.ca_paths(CA_BY_NAME[first.ca])[1].name} is absent "
                f"(external CA mode); place {first.path} signed by the {first.ca} CA"
                + ("" if first.is_kubeconfig else f" and its key {first.key_path}")
            )

    def _keys_needed(self, credentials: list[Credential]) -> int:
        """How many new private keys this `generate` will make, so they can be made at once."""
        count = sum(1 for ca in CAS if not any(p.exists() for p in self.ca_paths(ca)))
        count += not (self.pki_dir / SA_KEY).exists()
        return count + sum(
            1 for cred in credentials
            if not cred.path.exists() and (cred.key_path is None or not cred.key_path.exists())
        )

    def _new_key(self) -> PrivateKey:
        """A key made ahead by `generate`'s batch, or a fresh one if the batch ran out."""
        key = next(self._fresh_keys, None)
        return key if key is not None else crypto.new_key(self.cluster.certificates.key_algorithm)

    def _ensure_ca(self, ca: CASpec, now: dt.datetime) -> Outcome:
        crt_path, key_path = self.ca_paths(ca)
        if crt_path.exists():
            cert, key = self.load_ca(ca.name)
            if key is None:
                return Outcome(ca.name, crt_path, "external", "CA key absent: externally managed CA")
            return Outcome(ca.name, crt_path, "kept")
        if key_path.exists():
            raise PKIError(f"{key_path} exists without {crt_path.name}; restore the certificate or move the key away")
        key = self._new_key()
        cert = crypto.issue_ca(key, ca.common_name, dt.timedelta(days=self.cluster.certificates.ca_validity_days), now)
        ensure_private_dir(crt_path.parent)
        atomic_write(key_path, crypto.key_pem(key), PRIVATE_FILE_MODE)
        atomic_write(crt_path, crypto.cert_pem(cert), PUBLIC_FILE_MODE)
        self._cas[ca.name] = (cert, key)
        self._validated_cas.add(ca.name)  # made here
        return Outcome(ca.name, crt_path, "created")

    def _ensure_sa_keys(self) -> list[Outcome]:
        key_path, pub_path = self.pki_dir / SA_KEY, self.pki_dir / SA_PUB
        if key_path.exists():
            key = self._read_key(key_path, validate=False)  # only compared with sa.pub here; it signs on the API server
            outcomes = [Outcome("sa", key_path, "kept")]
            if not pub_path.exists():
                atomic_write(pub_path, crypto.public_key_pem(key), PUBLIC_FILE_MODE)
                outcomes.append(Outcome("sa.pub", pub_path, "created"))
            elif pub_path.read_bytes() != crypto.public_key_pem(key):
                outcomes.append(Outcome("sa.pub", pub_path, "stale", "does not match sa.key"))
            return outcomes
        if pub_path.exists():
            raise PKIError(f"{pub_path} exists without sa.key; restore the key or move sa.pub away")
        key = self._new_key()
        ensure_private_dir(self.pki_dir)
        atomic_write(key_path, crypto.key_pem(key), PRIVATE_FILE_MODE)
        atomic_write(pub_path, crypto.public_key_pem(key), PUBLIC_FILE_MODE)
        return [Outcome("sa", key_path, "created")]

    def _ensure(self, cred: Credential, now: dt.datetime) -> Outcome:
        existing = self._read_credential(cred)
        ca_cert, ca_key = self.load_ca(cred.ca)
        if existing is not None:
            cert, _ = existing
            problems = self._problems(cred, cert, ca_cert, now)
            if problems:
                return Outcome(cred.label, cred.path, "stale", "; ".join(problems))
            return Outcome(cred.label, cred.path, "kept" if ca_key is not None else "external")
        if ca_key is None:
            raise PKIError(
                f"cannot issue {cred.label}: {self.ca_paths(CA_BY_NAME[cred.ca])[1].name} is absent "
                f"(external CA mode); place {cred.path} signed by the {cred.ca} CA"
                + ("" if cred.is_kubeconfig else f" and its key {cred.key_path}")
            )
        if cred.key_path is not None and cred.key_path.exists():
            # A key without its certificate: issue a certificate for that key rather than lose it.
            key = self._read_key(cred.key_path)
        else:
            key = self._new_key()
        self._write(cred, key, self._issue(cred, key, now), replace=False)
        return Outcome(cred.label, cred.path, "created")

    def _issue(self, cred, key, now) -> x509.Certificate:
        ca_cert, ca_key = self._signing_ca(cred.ca)
        validity = dt.timedelta(days=self.cluster.certificates.validity_days)
        return crypto.issue_leaf(cred.request, key.public_key(), ca_cert, ca_key, validity, now)

    def _signing_ca(self, name: str) -> tuple[x509.Certificate, PrivateKey]:
        """The CA about to sign: its key read again with OpenSSL's full check, once per store."""
        cert, key = self.load_ca(name)
        if name not in self._validated_cas:
            key = self._read_key(self.ca_paths(CA_BY_NAME[name])[1], validate=True)
            self._cas[name] = (cert, key)
            self._validated_cas.add(name)
        return cert, key

    def _write(
        self, cred: Credential, key: PrivateKey, cert: x509.Certificate, *, replace: bool, key_changed: bool = True
    ) -> None:
        """Write a cert (and its key file if new or `key_changed`), or the kubeconfig holding both."""
        ensure_private_dir(cred.path.parent)
        if cred.is_kubeconfig:
            data = kubeconfigs.build(
                self.cluster.name, cred.server, cred.request.common_name,
                self.trust_pem(cred.ca), crypto.cert_pem(cert), crypto.key_pem(key),
            )
            atomic_write(cred.path, data, PRIVATE_FILE_MODE, replace=replace)
            return
        if not cred.key_path.exists():
            atomic_write(cred.key_path, crypto.key_pem(key), PRIVATE_FILE_MODE)
        elif replace and key_changed:  # a kept key stays byte-for-byte as it was
            atomic_write(cred.key_path, crypto.key_pem(key), PRIVATE_FILE_MODE, replace=True)
        atomic_write(cred.path, crypto.cert_pem(cert), PUBLIC_FILE_MODE, replace=replace)

    # --- reading ------------------------------------------------------------------------------

    def load_ca(self, name: str) -> tuple[x509.Certificate, PrivateKey | None]:
        if name not in self._cas:
            crt_path, key_path = self.ca_paths(CA_BY_NAME[name])
            if not crt_path.exists():
                raise PKIError(f"{crt_path} is missing; run `kubeprov certs generate`")
            cert = self._read_cert(crt_path)
            basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value if _has_basic(cert) else None
            if basic is None or not basic.ca:
                raise PKIError(f"{crt_path} is not a CA certificate")
            # Compared with its certificate only: the costly RSA self-check waits until it signs (_signing_ca).
            key = self._read_key(key_path, validate=False) if key_path.exists() else None
            if key is not None and not crypto.keys_match(cert, key):
                raise PKIError(f"{key_path} does not belong to {crt_path.name}")
            self._cas[name] = (cert, key)
        return self._cas[name]

    def trust_pem(self, name: str) -> bytes:
        """What a client trusts for CA `name`: every certificate in its file. One, except while
        `certs rotate-ca` runs (pki/rotate_ca.py): then a bundle of the old and the new CA, the
        first being the one whose key signs (load_ca)."""
        crt_path = self.ca_paths(CA_BY_NAME[name])[0]
        self.load_ca(name)  # the same checks (exists, a CA, its key)
        try:
            return b"".join(crypto.cert_pem(c) for c in x509.load_pem_x509_certificates(crt_path.read_bytes()))
        except ValueError as exc:
            raise PKIError(f"{crt_path}: not a PEM certificate ({exc})") from None

    def _read_credential(self, cred: Credential, *, validate: bool = False) -> tuple[x509.Certificate, PrivateKey] | None:
        """The stored cert and key, or None if absent. The key is only compared with the cert
        here, so its costly RSA self-check is skipped unless `validate` (renew reuses the key)."""
        if cred.is_kubeconfig:
            if not cred.path.exists():
                return None
            try:
                parsed = kubeconfigs.parse(cred.path.read_bytes())
                return crypto.load_cert(parsed.cert_pem), crypto.load_key(parsed.key_pem, validate=validate)
            except ValueError as exc:
                raise PKIError(f"{cred.path}: {exc}") from None
        if not cred.path.exists():
            return None
        if not cred.key_path.exists():
            raise PKIError(
                f"{cred.path} has no key {cred.key_path.name}; restore it, or replace both with "
                f"`kubeprov certs renew {cred.name} --host {cred.host.name} --new-key`"
            )
        cert, key = self._read_cert(cred.path), self._read_key(cred.key_path, validate=validate)
        if not crypto.keys_match(cert, key):
            raise PKIError(f"{cred.key_path} does not belong to {cred.path.name}")
        return cert, key

    @staticmethod
    def _read_cert(path: Path) -> x509.Certificate:
        try:
            return crypto.load_cert(path.read_bytes())
        except ValueError as exc:
            raise PKIError(f"{path}: not a PEM certificate ({exc})") from None

    @staticmethod
    def _read_key(path: Path, *, validate: bool = True) -> PrivateKey:
        try:
            return crypto.load_key(path.read_bytes(), validate=validate)
        except (ValueError, TypeError) as exc:
            raise PKIError(f"{path}: not an unencrypted PEM private key ({exc})") from None

    def _problems(self, cred: Credential, cert: x509.Certificate, ca_cert: x509.Certificate, now: dt.datetime) -> list[str]:
        problems = []
        if not crypto.signed_by(cert, ca_cert):
            problems.append(f"not signed by the current {cred.ca} CA")
        expected_cn = cred.request.common_name
        cn = _attr(cert, NameOID.COMMON_NAME)
        orgs = tuple(a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
        if cn != [expected_cn] or sorted(orgs) != sorted(cred.request.organizations):
            problems.append(
                f"subject is CN={','.join(cn)} O={','.join(orgs) or '-'}, "
                f"expected CN={expected_cn} O={','.join(cred.request.organizations) or '-'}"
            )
        if not cred.is_kubeconfig:
            have = crypto.sans_of(cert)
            if not crypto.same_sans(have, cred.request.sans):
                want = set(cred.request.sans.dns) | set(cred.request.sans.ips)
                got = set(have.dns) | set(have.ips)
                parts = []
                if want - got:
                    parts.append("missing " + ", ".join(sorted(want - got)))
                if got - want:
                    parts.append("unexpected " + ", ".join(sorted(got - want)))
                problems.append("SANs differ: " + "; ".join(parts))
        else:
            parsed = kubeconfigs.parse(cred.path.read_bytes())
            if parsed.server != cred.server:
                problems.append(f"server is {parsed.server}, expected {cred.server}")
            if parsed.ca_pem != self.trust_pem(cred.ca):
                problems.append("embedded CA is not the current CA")
        if cert.not_valid_after_utc <= now:
            problems.append(f"expired {cert.not_valid_after_utc:%Y-%m-%d}")
        return problems

    # --- check-expiration ---------------------------------------------------------------------

    def check(self, now: dt.datetime | None = None) -> tuple[list[Status], list[Status]]:
        """(leaf rows, CA rows) for `certs check-expiration`; missing files show as problems."""
        now = now or _now()
        ca_rows = []
        for ca in CAS:
            crt_path, key_path = self.ca_paths(ca)
            if not crt_path.exists():
                ca_rows.append(Status(ca.name, "", None, "", False, ["missing"]))
                continue
            cert, key = self.load_ca(ca.name)
            ca_rows.append(Status(ca.name, "", cert.not_valid_after_utc, "", key is None))
        rows = []
        for cred in self.credentials():
            host = cred.host.name if cred.host else ""
            try:
                ca_cert, ca_key = self.load_ca(cred.ca)
                existing = self._read_credential(cred)
            except PKIError as exc:
                rows.append(Status(cred.name, host, None, cred.ca, False, [str(exc)]))
                continue
            if existing is None:
                rows.append(Status(cred.name, host, None, cred.ca, ca_key is None, ["missing"]))
                continue
            cert, _ = existing
            rows.append(
                Status(cred.name, host, cert.not_valid_after_utc, cred.ca, ca_key is None, self._problems(cred, cert, ca_cert, now))
            )
        return rows, ca_rows

    # --- renew --------------------------------------------------------------------------------

    def select(self, names: Iterable[str], hosts: Iterable[str] = ()) -> list[Credential]:
        names, hosts = list(names), set(hosts)
        known = cert_names() + [kc.file for kc in kubeconfigs.KUBECONFIGS]
        for name in names:
            if name != "all" and name not in known:
                raise PKIError(f"unknown certificate {name!r}; one of: all, {', '.join(known)}")
        unknown_hosts = hosts - {h.name for h in self.cluster.hosts}
        if unknown_hosts:
            raise PKIError(f"unknown host {sorted(unknown_hosts)[0]!r}")
        return [
            cred for cred in self.credentials()
            if ("all" in names or cred.name in names) and (not hosts or (cred.host and cred.host.name in hosts))
        ]

    def renew(self, creds: list[Credential], *, new_key: bool = False, now: dt.datetime | None = None) -> list[Outcome]:
        """Re-issue `creds` from their CA, keeping each key unless `new_key`; back up what is replaced."""
        now = now or _now()
        # All or nothing: an externally signed cert among them would otherwise stop the loop
        # after the ones before it were already replaced.
        external = [cred for cred in creds if self.load_ca(cred.ca)[1] is None]
        if external:
            first = external[0]
            more = f" (and {len(external) - 1} more)" if len(external) > 1 else ""
            raise PKIError(
                f"cannot renew {first.label}{more}: the {first.ca} CA is external "
                f"({self.ca_paths(CA_BY_NAME[first.ca])[1].name} is absent); nothing was renewed"
            )
        backup_dir = self._unused_backup_dir(now)
        fresh = [c for c in creds if new_key or not (c.path.exists() or (c.key_path and c.key_path.exists()))]
        self._fresh_keys = iter(crypto.new_keys(self.cluster.certificates.key_algorithm, len(fresh)))
        outcomes = []
        for cred in creds:
            existing = None
            try:
                existing = self._read_credential(cred, validate=True)
            except PKIError:
                if not new_key:
                    raise
            backed_up = False
            for path in (cred.path, cred.key_path):
                if path is not None and path.exists():
                    backup_file(path, backup_dir / path.parent.relative_to(self.root))
                    backed_up = True
            if new_key:
                key, key_changed = self._new_key(), True
            elif existing is not None:
                key, key_changed = existing[1], False
            elif cred.key_path is not None and cred.key_path.exists():  # a key whose cert is gone: keep it
                key, key_changed = self._read_key(cred.key_path), False
            else:
                key, key_changed = self._new_key(), True
            self._write(cred, key, self._issue(cred, key, now), replace=True, key_changed=key_changed)
            outcomes.append(Outcome(cred.label, cred.path, "renewed", f"backup in {backup_dir}" if backed_up else ""))
        return outcomes

    def _unused_backup_dir(self, now: dt.datetime) -> Path:
        """backup/<UTC second>, or <second>.1, .2 … if a renew in the same second already used it:
        a second renew must never overwrite the first one's backup of the original files."""
        base = self.root / "backup" / now.strftime("%Y%m%dT%H%M%SZ")
        candidate, n = base, 0
        while candidate.exists():
            n += 1
            candidate = base.with_name(f"{base.name}.{n}")
        return candidate


def _attr(cert: x509.Certificate, oid) -> list[str]:
    return [a.value for a in cert.subject.get_attributes_for_oid(oid)]


def _has_basic(cert: x509.Certificate) -> bool:
    try:
        cert.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return True


@dataclass(frozen=True)
class Material:
    """The PKI as bytes, read once from the store: what renderers get instead of a disk."""

    cas: dict[str, tuple[bytes, bytes | None]]  # CA name → (cert, key or None if external)
    sa: tuple[bytes, bytes]  # (sa.key, sa.pub)
    leaves: dict[tuple[str, str], tuple[bytes, bytes]]  # (cert name, host) → (cert, key)
    kubeconfigs: dict[tuple[str, str | None], bytes]  # (file, host or None) → kubeconfig
    encryption_key: bytes | None = None  # Secrets-at-rest key (secrets.py); None when not encrypting
    # CA name → its signing certificate alone, for a CA whose file is a bundle (`certs rotate-ca`):
    # kube-controller-manager's --cluster-signing-cert-file must hold exactly one certificate.
    signing: dict[str, bytes] = field(default_factory=dict)


def read_material(store: PKIStore) -> Material:
    """Everything `generate` made, as bytes. Raises PKIError naming the first missing file."""

    def read(path: Path) -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise PKIError(f"{path} is missing; run `kubeprov certs generate`") from None

    cas, signing = {}, {}
    for ca in CAS:
        crt_path, key_path = store.ca_paths(ca)
        cas[ca.name] = (read(crt_path), key_path.read_bytes() if key_path.exists() else None)
        if cas[ca.name][0].count(b"-----BEGIN CERTIFICATE-----") > 1:
            signing[ca.name] = crypto.cert_pem(crypto.load_cert(cas[ca.name][0]))
    sa = (read(store.pki_dir / SA_KEY), read(store.pki_dir / SA_PUB))
    leaves, kcs = {}, {}
    for cred in store.credentials():
        if cred.is_kubeconfig:
            kcs[(cred.name, cred.host.name if cred.host else None)] = read(cred.path)
        else:
            leaves[(cred.name, cred.host.name)] = (read(cred.path), read(cred.key_path))
    key = secrets.read_encryption_key(store.root, required=store.cluster.control_plane.encrypt_secrets)
    return Material(cas, sa, leaves, kcs, encryption_key=key, signing=signing)
