"""The API server's optional hardening, as files plus the flags and mounts that use them:
an audit policy with a rotated audit log, and an EncryptionConfiguration that encrypts Secrets
at rest with the cluster's aescbc key (provision/pki/secrets.py).

Both files sit in a directory of their own that is mounted into the pod, not mounted as single
files: kubeprov replaces files by rename, and a file bind-mounted into a running container would
keep showing the old inode.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import PurePosixPath


from provision import yamltext
from provision.config.models import Cluster
from provision.errors import PKIError
from provision.pki.store import Material
from provision.render.staticpod import Mount, same_path
from provision.render.tree import File

AUDIT_DIR = PurePosixPath("/etc/kubernetes/audit")
AUDIT_POLICY = AUDIT_DIR / "policy.yaml"
AUDIT_LOG_DIR = PurePosixPath("/var/log/kubernetes/audit")
AUDIT_LOG = AUDIT_LOG_DIR / "audit.log"

ENCRYPTION_DIR = PurePosixPath("/etc/kubernetes/encryption")
ENCRYPTION_CONFIG = ENCRYPTION_DIR / "config.yaml"
ENCRYPTION_KEY_NAME = "key1"


@dataclass
class Hardening:
    """What the options add to the kube-apiserver pod and to the host."""

    flags: dict[str, str] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    files: dict[PurePosixPath, File] = field(default_factory=dict)


def apiserver_hardening(cluster: Cluster, material: Material) -> Hardening:
    out = Hardening()
    audit = cluster.control_plane.audit
    if audit.enabled:
        out.files[AUDIT_POLICY] = File(audit_policy(), 0o600)
        out.flags.update(
            {
                "audit-policy-file": str(AUDIT_POLICY),
                "audit-log-path": str(AUDIT_LOG),
                "audit-log-maxage": str(audit.max_age_days),
                "audit-log-maxbackup": str(audit.max_backups),
                "audit-log-maxsize": str(audit.max_size_mb),
            }
        )
        out.mounts += [
            same_path("audit-policy", str(AUDIT_DIR), True, "DirectoryOrCreate"),
            same_path("audit-log", str(AUDIT_LOG_DIR), False, "DirectoryOrCreate"),
        ]
    if cluster.control_plane.encrypt_secrets:
        if material.encryption_key is None:
            # Not a rule on the cluster file (the model has none to check): whether the key was
            # generated is a fact of the cluster directory, known when the PKI is read.
            raise PKIError("control plane encrypts Secrets but there is no encryption key; run `kubeprov certs generate`")
        out.files[ENCRYPTION_CONFIG] = File(encryption_config(material.encryption_key), 0o600)
        out.flags["encryption-provider-config"] = str(ENCRYPTION_CONFIG)
        out.mounts.append(same_path("encryption-config", str(ENCRYPTION_DIR), True, "DirectoryOrCreate"))
    return out


def encryption_config(key: bytes) -> bytes:
    """Secrets encrypted with aescbc; `identity` last so Secrets written before encryption
    was turned on stay readable (until rewritten, e.g. `kubectl get secrets -A -o json |
    kubectl replace -f -`)."""
    doc = {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "EncryptionConfiguration",
        "resources": [
            {
                "resources": ["secrets"],
                "providers": [
                    {"aescbc": {"keys": [{"name": ENCRYPTION_KEY_NAME, "secret": base64.b64encode(key).decode()}]}},
                    {"identity": {}},
                ],
            }
        ],
    }
    return yamltext.dump(doc).encode()


def audit_policy() -> bytes:
    """Who did what, without logging what must stay secret or what floods the log.

    The first matching rule wins, so the order matters: credentials-bearing objects first
    (Metadata only: never their content), then the high-volume system noise, then writes with
    their request bodies, then everything else as Metadata.
    """
    core = ""
    rules = [
        {
            "level": "Metadata",
            "resources": [
                {"group": core, "resources": ["secrets", "configmaps", "serviceaccounts/token"]},
                {"group": "authentication.k8s.io", "resources": ["tokenreviews"]},
            ],
        },
        {"level": "None", "nonResourceURLs": ["/healthz*", "/livez*", "/readyz*", "/version", "/metrics"]},
        {"level": "None", "users": ["system:kube-proxy"], "verbs": ["watch"],
         "resources": [{"group": core, "resources": ["endpoints", "services", "services/status"]},
                       {"group": "discovery.k8s.io", "resources": ["endpointslices"]}]},
        {"level": "None", "userGroups": ["system:nodes"], "verbs": ["get"],
         "resources": [{"group": core, "resources": ["nodes", "nodes/status"]}]},
        {"level": "None", "verbs": ["get", "update"], "resources": [{"group": "coordination.k8s.io", "resources": ["leases"]}]},
        {"level": "None", "resources": [{"group": core, "resources": ["events"]}, {"group": "events.k8s.io", "resources": ["events"]}]},
        {"level": "Request", "verbs": ["create", "update", "patch", "delete", "deletecollection"]},
        {"level": "Metadata"},
    ]
    doc = {"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"], "rules": rules}
    return yamltext.dump(doc).encode()
