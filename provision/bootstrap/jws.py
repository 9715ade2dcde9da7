"""The detached JWS that signs cluster-info, as k8s.io/cluster-bootstrap/token/jws computes it.

A JWS in compact form is `b64url(header).b64url(payload).b64url(signature)`; "detached"
(RFC 7515 appendix F) leaves the payload out: `header..signature`. kube-controller-manager's
bootstrap signer writes one per token into cluster-info as `jws-kubeconfig-<token id>`; a
joining node holding the token recomputes it over the `kubeconfig` value and so learns it can
trust the CA inside. Signing: HS256 (HMAC-SHA256), key = the token secret zero-padded to 32
bytes (JOSE libraries refuse shorter HS256 keys; HMAC zero-pads any key shorter than its 64-byte
block anyway, so the signature is the same as with the bare 16-byte secret, on every Kubernetes
version), protected header {"alg":"HS256","kid":<token id>}.
The header is serialised as go-jose does: compact JSON, keys sorted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

SIGNATURE_KEY_PREFIX = "jws-kubeconfig-"
MIN_KEY_LENGTH = 32


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _key(token_secret: str) -> bytes:
    key = token_secret.encode()
    return key if len(key) >= MIN_KEY_LENGTH else key.ljust(MIN_KEY_LENGTH, b"\0")


def protected_header(token_id: str) -> bytes:
    return json.dumps({"alg": "HS256", "kid": token_id}, separators=(",", ":"), sort_keys=True).encode()


def detached_signature(content: str | bytes, token_id: str, token_secret: str) -> str:
    payload = content.encode() if isinstance(content, str) else content
    header = b64url(protected_header(token_id))
    signing_input = f"{header}.{b64url(payload)}".encode()
    signature = hmac.new(_key(token_secret), signing_input, hashlib.sha256).digest()
    return f"{header}..{b64url(signature)}"


def signature_valid(detached: str, content: str | bytes, token_id: str, token_secret: str) -> bool:
    """True when `detached` is this token's signature of `content` (compared in constant time)."""
    return hmac.compare_digest(detached, detached_signature(content, token_id, token_secret))
