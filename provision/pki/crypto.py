"""Keys and X.509 certificates with `cryptography`, shaped like kubeadm's pkiutil makes them.

CAs: self-signed, CA:TRUE, keyCertSign, a DNS SAN equal to the CN. Leaves: CA:FALSE,
digitalSignature (+ keyEncipherment for RSA keys), the extended usages from the cert table,
authority key id of the signer. NotBefore is backdated five minutes for clock skew, and a leaf
never outlives its CA. Keys are PEM in the traditional formats kubeadm writes (PKCS#1 for RSA,
SEC1 for EC).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from provision.config.models import KeyAlgorithm
from provision.pki.certlist import SANs

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

BACKDATE = dt.timedelta(minutes=5)


def new_key(algorithm: KeyAlgorithm) -> PrivateKey:
    if algorithm is KeyAlgorithm.ECDSA_P256:
        return ec.generate_private_key(ec.SECP256R1())
    bits = int(algorithm.value.split("-")[1])
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def new_keys(algorithm: KeyAlgorithm, count: int) -> list[PrivateKey]:
    """`count` fresh keys, made on every core: RSA generation is nearly all of a fresh PKI's time.

    Threads suffice: `cryptography` releases the GIL while OpenSSL searches for primes (measured
    2.1x faster on 2 cores for RSA-2048). ECDSA keys take microseconds; a pool would only add cost.
    """
    if count < 2 or algorithm is KeyAlgorithm.ECDSA_P256:
        return [new_key(algorithm) for _ in range(count)]
    with ThreadPoolExecutor(max_workers=min(count, os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda _: new_key(algorithm), range(count)))


def key_algorithm_of(key) -> KeyAlgorithm | None:
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return {2048: KeyAlgorithm.RSA_2048, 3072: KeyAlgorithm.RSA_3072, 4096: KeyAlgorithm.RSA_4096}.get(key.key_size)
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1":
        return KeyAlgorithm.ECDSA_P256
    return None


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


def public_key_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_key(data: bytes, *, validate: bool = True) -> PrivateKey:
    """A PEM private key. `validate=False` skips OpenSSL's RSA consistency check (~35 ms per
    RSA-2048 key, most of a no-op `generate`); use it only for keys read back to compare with
    their certificate, never for a key that signs."""
    key = serialization.load_pem_private_key(data, password=None, unsafe_skip_rsa_key_validation=not validate)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"unsupported key type {type(key).__name__}")
    return key


def load_cert(data: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(data)


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _key_usage(key, *, ca: bool) -> x509.KeyUsage:
    # keyEncipherment only means something for RSA key transport; kubeadm drops it for ECDSA.
    return x509.KeyUsage(
        digital_signature=True,
        key_encipherment=isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey),
        content_commitment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _sign_algorithm(key):
    return hashes.SHA256()


def issue_ca(key: PrivateKey, common_name: str, validity: dt.timedelta, now: dt.datetime) -> x509.Certificate:
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(public, ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
    )
    return builder.sign(key, _sign_algorithm(key))


@dataclass(frozen=True)
class LeafRequest:
    common_name: str
    organizations: tuple[str, ...]
    usages: tuple
    sans: SANs


def issue_leaf(
    request: LeafRequest,
    public_key,
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    validity: dt.timedelta,
    now: dt.datetime,
) -> x509.Certificate:
    not_after = min(now + validity, ca_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(request.common_name, request.organizations))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(public_key, ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(request.usages)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False
        )
    )
    names = sans_to_general_names(request.sans)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, _sign_algorithm(ca_key))


def sans_to_general_names(sans: SANs) -> list[x509.GeneralName]:
    return [x509.DNSName(name) for name in sans.dns] + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in sans.ips]


def sans_of(cert: x509.Certificate) -> SANs:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return SANs()
    return SANs(
        tuple(ext.get_values_for_type(x509.DNSName)),
        tuple(str(ip) for ip in ext.get_values_for_type(x509.IPAddress)),
    )


def same_sans(a: SANs, b: SANs) -> bool:
    norm = lambda s: ({d.lower() for d in s.dns}, {str(ipaddress.ip_address(i)) for i in s.ips})  # noqa: E731
    return norm(a) == norm(b)


def signed_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, Exception):  # InvalidSignature has no common base here
        return False
    return True


def keys_match(cert: x509.Certificate, key: PrivateKey) -> bool:
    return public_key_pem(key) == cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
