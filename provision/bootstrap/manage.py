"""`kubeprov token create|list|delete` and `join-command`: bootstrap tokens in a running cluster,
through kubectl on the first control plane."""

from __future__ import annotations

import datetime as dt
import json

from provision.bootstrap.jws import SIGNATURE_KEY_PREFIX, detached_signature
from provision.bootstrap.token import SECRET_PREFIX, SECRET_TYPE, BootstrapToken
from provision.errors import ConfigError, KubeprovError
from provision.kube.kubectl import Kubectl


def create(kubectl: Kubectl, token: BootstrapToken) -> None:
    """Store the token, then sign the live cluster-info with it (the controller-manager's bootstrap
    signer would do the same within seconds; doing it here makes the token usable at once)."""
    kubectl.apply([token.secret_object()])
    if "signing" in token.usages:
        info = kubectl.get_json("configmap", "cluster-info", "-n", "kube-public")
        content = (info.get("data") or {}).get("kubeconfig")
        if not content:
            raise KubeprovError("kube-public/cluster-info has no kubeconfig; run `kubeprov up` first")
        patch = {"data": {SIGNATURE_KEY_PREFIX + token.id: detached_signature(content, token.id, token.secret)}}
        kubectl.run("patch", "configmap", "cluster-info", "-n", "kube-public", "--type=merge", "-p", json.dumps(patch))


def list_tokens(kubectl: Kubectl) -> list[BootstrapToken]:
    secrets = kubectl.get_json("secrets", "-n", "kube-system", f"--field-selector=type={SECRET_TYPE}")["items"]
    found = []
    for secret in secrets:
        try:
            found.append(BootstrapToken.from_secret(secret))
        except (ConfigError, KeyError, ValueError):
            continue  # not one of kubeadm's shape; kubeadm's list skips those too
    return sorted(found, key=lambda t: t.expires or dt.datetime.max.replace(tzinfo=dt.timezone.utc))


def delete(kubectl: Kubectl, token_or_id: str) -> str:
    token_id = token_or_id.split(".", 1)[0]
    if len(token_id) != 6 or not token_id.isalnum() or token_id != token_id.lower():
        raise ConfigError(f"{token_or_id!r} is neither a token id ([a-z0-9]{{6}}) nor a token")
    result = kubectl.run("delete", "secret", "-n", "kube-system", SECRET_PREFIX + token_id, check=False)
    if not result.ok:
        raise KubeprovError(f"no bootstrap token {token_id}: {result.summary()}")
    return token_id
