"""The cluster model and its loaders (cluster file, Ansible inventories)."""

from provision.config.loader import load_cluster
from provision.config.models import Cluster, EtcdTopology, Host, KeyAlgorithm, Role, warnings_for

__all__ = ["Cluster", "EtcdTopology", "Host", "KeyAlgorithm", "Role", "load_cluster", "warnings_for"]
