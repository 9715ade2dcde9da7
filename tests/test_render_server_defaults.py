"""Cluster objects carry no field the API server drops because it holds the default value.

`kubectl apply` compares what we render with what the server stored; a field the server dropped
(e.g. a volumeMount's `readOnly: false`, an omitempty bool) shows up as a difference on every run,
so the object is "configured" again each time instead of "unchanged".
"""

from __future__ import annotations

import pytest
import yaml
from testkit import hosts

from provision.config.models import CNI, Cluster, KubeProxyMode
from provision.pki.store import PKIStore, read_material
from provision.render import render_cluster


def make(cni: CNI, mode: KubeProxyMode) -> Cluster:
    return Cluster.model_validate({
        "apiVersion": "kubeprov.io/v1alpha1",
        "kind": "Cluster",
        "name": "defaults",
        "kubernetesVersion": "v1.31.4",
        "hosts": hosts(3, 2),
        "controlPlaneEndpoint": "10.0.0.100:6443",
        "cni": cni.value,
        "kubeProxy": {"mode": mode.value},
    })


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    store = PKIStore(make(CNI.FLANNEL, KubeProxyMode.IPTABLES), tmp_path_factory.mktemp("pki"))
    store.generate()
    return read_material(store)


def volume_mounts(value, path: str):
    """(path, mount) for every entry of every volumeMounts list anywhere below `value`."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "volumeMounts":
                yield from ((f"{path}.{key}[{i}]", mount) for i, mount in enumerate(item))
            else:
                yield from volume_mounts(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from volume_mounts(item, f"{path}[{i}]")


@pytest.mark.parametrize("mode", list(KubeProxyMode), ids=lambda m: m.value)
@pytest.mark.parametrize("cni", list(CNI), ids=lambda c: c.value)
def test_no_volume_mount_says_read_only_false(cni, mode, material):
    files = render_cluster(make(cni, mode), material)
    mounts = [
        (f"{name}: {doc['kind']}/{doc['metadata']['name']} {path.lstrip('.')}", mount)
        for name, data in files.items()
        for doc in yaml.safe_load_all(data)
        if doc is not None
        for path, mount in volume_mounts(doc, "")
    ]
    assert len(mounts) >= 4  # kube-proxy's and CoreDNS's at least: the walk does reach them
    offending = [where for where, mount in mounts if mount.get("readOnly") is False]
    assert not offending, "readOnly: false is the default the API server drops (kubectl apply would re-apply):\n" + "\n".join(offending)
