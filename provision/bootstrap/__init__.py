"""Bootstrap tokens and what kubeadm builds from them: the token Secret, the signed cluster-info,
the CA-certificate hash for discovery, the RBAC that lets token holders join, and join commands."""
