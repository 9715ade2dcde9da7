"""Bootstrap tokens, the signed cluster-info, the discovery CA hash and kubeadm's RBAC.

Expectations come from kubeadm's documented rules and published test vectors, never from the code
under test: the JWS vectors are cluster-bootstrap's own (token/jws/jws_test.go); signatures are
re-verified here with `cryptography`'s HMAC; the CA hash with the openssl pipeline kubeadm's docs
give; objects are validated against every supported minor's OpenAPI schema (kubernetes_validate).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import subprocess

import kubernetes_validate
import pytest
import yaml
from cryptography.hazmat.primitives import hashes, hmac

from provision.bootstrap import discovery, jws, rbac
from provision.bootstrap.join import join_command
from provision.bootstrap.token import BootstrapToken, parse_ttl
from provision.config import load_cluster
from provision.config.models import SUPPORTED_MINORS
from provision.errors import ConfigError
from provision.pki import PKIStore
from provision.pki.store import read_material

TOKEN_RE = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}$")  # kubeadm's BootstrapTokenPattern


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _verify_detached(detached: str, content: str, token_id: str, secret: str) -> bool:
    """RFC 7515 appendix F by hand: put the payload back, HMAC-SHA256 with the zero-padded secret."""
    header_b64, empty, signature_b64 = detached.split(".")
    assert empty == ""
    assert json.loads(_b64url_decode(header_b64)) == {"alg": "HS256", "kid": token_id}
    payload_b64 = base64.urlsafe_b64encode(content.encode()).rstrip(b"=").decode()
    mac = hmac.HMAC(secret.encode().ljust(32, b"\0"), hashes.SHA256())
    mac.update(f"{header_b64}.{payload_b64}".encode())
    try:
        mac.verify(_b64url_decode(signature_b64))
    except Exception:
        return False
    return True


# --- tokens ---------------------------------------------------------------------------------


def test_generated_tokens_have_kubeadms_format_and_differ():
    tokens = [BootstrapToken.generate() for _ in range(200)]
    assert all(TOKEN_RE.match(t.token) for t in tokens)
    assert len({t.id for t in tokens}) > 190  # 36^6 ids: collisions are rare


def test_token_secret_has_kubeadms_fields():
    now = dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.timezone.utc)
    token = BootstrapToken.generate(now=now, description="for w9")
    secret = token.secret_object()
    assert secret["metadata"] == {"name": f"bootstrap-token-{token.id}", "namespace": "kube-system"}
    assert secret["type"] == "bootstrap.kubernetes.io/token"
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data == {
        "token-id": token.id,
        "token-secret": token.secret,
        "description": "for w9",
        "expiration": "2026-01-03T03:04:05Z",  # now + kubeadm's default 24h TTL, RFC 3339 in UTC
        "usage-bootstrap-authentication": "true",
        "usage-bootstrap-signing": "true",
        "auth-extra-groups": "system:bootstrappers:kubeadm:default-node-token",
    }
    for minor in SUPPORTED_MINORS:
        kubernetes_validate.validate(secret, f"1.{minor}", strict=True)
    assert BootstrapToken.from_secret(secret) == token


def test_token_without_ttl_never_expires_and_has_no_expiration_field():
    token = BootstrapToken.generate(ttl=None)
    assert "expiration" not in token.secret_data() and not token.expired()
    assert parse_ttl("0") is None and parse_ttl("1h30m") == dt.timedelta(minutes=90)


@pytest.mark.parametrize("bad", ["abcdef.0123456789abcde", "ABCDEF.0123456789abcdef", "abcde.0123456789abcdefg", "abcdef0123456789abcdef", "abcdef.0123456789abcdeF"])
def test_malformed_tokens_are_refused(bad):
    with pytest.raises(ConfigError, match=r"\[a-z0-9\]\{6\}"):
        BootstrapToken.parse(bad)


def test_bad_ttl_and_group_are_refused():
    with pytest.raises(ConfigError, match="--ttl"):
        parse_ttl("1 day")
    with pytest.raises(ConfigError, match="system:bootstrappers"):
        BootstrapToken.generate(groups=("system:masters",))


# --- JWS ------------------------------------------------------------------------------------

VECTOR_CONTENT = "Hello from the other side. I must have called a thousand times."


@pytest.mark.parametrize(
    "content, secret, expected",
    [
        (VECTOR_CONTENT, "my voice is my passcode", "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..VShe2taLd-YTrmWuRkcL_8QTNDHYxQIEBsAYYiIj1_8"),
        ("", "my voice is my passcode", "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..7Ui1ALizW4jXphVUB7xUqC9vLYLL9RZeOFfVLoB7Tgk"),
        (VECTOR_CONTENT, "", "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..UfkqvDGiIFxrMnFseDj9LYJOLNrvjW8aHhF71mvvAs8"),
    ],
)
def test_detached_signature_matches_cluster_bootstrap_vectors(content, secret, expected):
    assert jws.detached_signature(content, "joshua", secret) == expected
    assert _verify_detached(expected, content, "joshua", secret)
    assert jws.signature_valid(expected, content, "joshua", secret)
    assert not jws.signature_valid(expected + "foo", content, "joshua", secret)


@pytest.fixture
def pki(make_cluster):
    cluster = load_cluster(make_cluster(controlPlaneEndpoint="10.0.0.100:6443"), None)
    store = PKIStore(cluster)
    store.generate()
    return cluster, store, read_material(store)


def test_cluster_info_is_signed_per_token_as_kubeadm_verifies_it(pki):
    cluster, store, material = pki
    signer, other, auth_only = BootstrapToken.generate(), BootstrapToken.generate(), BootstrapToken.generate(usages=("authentication",))
    cm = discovery.signed_cluster_info(cluster, material, [signer, other, auth_only])
    assert (cm["kind"], cm["metadata"]) == ("ConfigMap", {"name": "cluster-info", "namespace": "kube-public"})
    kubeconfig = cm["data"]["kubeconfig"]
    # Only tokens with usage `signing` sign (the bootstrap signer's rule).
    assert set(cm["data"]) == {"kubeconfig", f"jws-kubeconfig-{signer.id}", f"jws-kubeconfig-{other.id}"}
    for token in (signer, other):
        assert _verify_detached(cm["data"][f"jws-kubeconfig-{token.id}"], kubeconfig, token.id, token.secret)
    assert not _verify_detached(cm["data"][f"jws-kubeconfig-{signer.id}"], kubeconfig, signer.id, other.secret)
    # What a joining node then trusts: our CA and the endpoint.
    doc = yaml.safe_load(kubeconfig)
    (entry,) = doc["clusters"]
    assert base64.b64decode(entry["cluster"]["certificate-authority-data"]) == (store.pki_dir / "ca.crt").read_bytes()
    assert entry["cluster"]["server"] == "https://10.0.0.100:6443"
    for minor in SUPPORTED_MINORS:
        kubernetes_validate.validate(cm, f"1.{minor}", strict=True)


def test_ca_cert_hash_is_the_sha256_of_the_public_key_info_as_openssl_computes_it(pki):
    _, store, material = pki
    ca = store.pki_dir / "ca.crt"
    pubkey = subprocess.run(["openssl", "x509", "-pubkey", "-noout", "-in", str(ca)], capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pubkey, capture_output=True, check=True).stdout
    digest = subprocess.run(["sha256sum"], input=der, capture_output=True, check=True).stdout.split()[0].decode()
    assert discovery.ca_cert_hash(material.cas["ca"][0]) == f"sha256:{digest}"


def test_join_command_names_endpoint_token_and_hash(pki):
    cluster, _, material = pki
    token = BootstrapToken.parse("abcdef.0123456789abcdef")
    command = join_command(cluster, token, material.cas["ca"][0])
    assert command.split() == [
        "kubeadm", "join", "10.0.0.100:6443", "--token", "abcdef.0123456789abcdef",
        "--discovery-token-ca-cert-hash", discovery.ca_cert_hash(material.cas["ca"][0]),
    ]


# --- RBAC -----------------------------------------------------------------------------------

# kubeadm's bindings (cmd/kubeadm/app/phases/bootstraptoken/node, phases/kubeconfig): name →
# (role kind, role, subject group).
KUBEADM_BINDINGS = {
    "kubeadm:get-nodes": ("ClusterRole", "kubeadm:get-nodes", "system:bootstrappers:kubeadm:default-node-token"),
    "kubeadm:kubelet-bootstrap": ("ClusterRole", "system:node-bootstrapper", "system:bootstrappers:kubeadm:default-node-token"),
    "kubeadm:node-autoapprove-bootstrap": (
        "ClusterRole", "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
        "system:bootstrappers:kubeadm:default-node-token"),
    "kubeadm:node-autoapprove-certificate-rotation": (
        "ClusterRole", "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", "system:nodes"),
}


@pytest.mark.parametrize("minor", SUPPORTED_MINORS)
def test_rbac_objects_are_kubeadms_and_valid(make_cluster, minor):
    cluster = load_cluster(make_cluster(kubernetesVersion=f"v1.{minor}.0"), None)
    objects = rbac.rbac_objects(cluster)
    for obj in objects:
        kubernetes_validate.validate(obj, f"1.{minor}", strict=True)
    bindings = {
        o["metadata"]["name"]: (o["roleRef"]["kind"], o["roleRef"]["name"], *[s["name"] for s in o["subjects"]])
        for o in objects if o["kind"] == "ClusterRoleBinding"
    }
    expected = dict(KUBEADM_BINDINGS)
    if minor >= 29:  # kubeadm 1.29 moved admin.conf out of system:masters into a bindable group
        expected["kubeadm:cluster-admins"] = ("ClusterRole", "cluster-admin", "kubeadm:cluster-admins")
    assert bindings == expected
    (role,) = [o for o in objects if o["kind"] == "ClusterRole"]
    assert role["metadata"]["name"] == "kubeadm:get-nodes"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]
