"""The cluster PKI: kubeadm's certificate tree and kubeconfigs, issued with `cryptography`."""

from provision.pki.store import Credential, Outcome, PKIStore, Status

__all__ = ["Credential", "Outcome", "PKIStore", "Status"]
