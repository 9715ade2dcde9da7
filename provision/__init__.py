"""kubeprov: turn an inventory of machines into a Kubernetes cluster, the kubeadm way, over SSH."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kubeprov")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
