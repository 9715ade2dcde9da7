"""kubeprov: turn an inventory of machines into a Kubernetes cluster, the kubeadm way, over SSH."""

# The one place the version is written (pyproject.toml reads it: [tool.setuptools.dynamic]), so no
# command pays importlib.metadata's scan of sys.path (~60 ms) to learn it.
__version__ = "0.1.0"
