"""The version skew policy and kubeadm's upgrade rules (provision/upgrade/skew.py), over every
supported minor: the cross-minor paths kubeprov cannot run here are proven by these rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provision.upgrade.skew import Running, etcd_target, skew_problems, upgrade_problems, version
from provision.versions import DEFAULTS


def cluster(api="v1.28.4", kubelets=("v1.28.4",), **more) -> Running:
    return Running(apiservers={f"cp{i}": version(v) for i, v in enumerate([api] if isinstance(api, str) else api, 1)},
                   kubelets={f"n{i}": version(v) for i, v in enumerate(kubelets, 1)}, **more)


def test_a_patch_upgrade_and_the_next_minor_are_allowed():
    assert upgrade_problems(cluster(), version("v1.28.7")) == []
    assert upgrade_problems(cluster(), version("v1.29.0")) == []
    assert upgrade_problems(cluster(), version("v1.28.1")) == []  # a patch down within the minor: kubeadm allows it


def test_a_skipped_minor_and_a_minor_downgrade_are_refused_naming_why():
    assert upgrade_problems(cluster(), version("v1.30.0")) == [
        "v1.30.0 skips a minor: the control plane moves one minor at a time (from v1.28.4: v1.29 first)"]
    problems = upgrade_problems(cluster(api="v1.29.2", kubelets=["v1.29.2"]), version("v1.28.9"))
    assert problems == ["v1.28.9 is a minor below the API servers (v1.29.2): minors are never downgraded",
                        "the kubelet on n1 (v1.29.2) is newer than v1.28.9"]
    assert "is not a version kubeprov supports" in upgrade_problems(cluster(), version("v1.27.3"))[0]


def test_kubelets_must_stay_within_three_minors_of_the_new_control_plane():
    old = cluster(api="v1.31.0", kubelets=["v1.31.0", "v1.28.4"])
    assert upgrade_problems(old, version("v1.32.0")) == [
        "the kubelet on n2 (v1.28.4) would be more than three minors older than v1.32.0: upgrade it first"]
    assert upgrade_problems(cluster(api="v1.31.0", kubelets=["v1.29.1"]), version("v1.32.0")) == []


def test_skew_of_a_running_cluster():
    assert skew_problems(cluster(api=["v1.29.1", "v1.28.4"], kubelets=["v1.28.4", "v1.26.0"])) == []
    problems = skew_problems(cluster(api=["v1.30.0", "v1.28.4"], kubelets=["v1.29.0", "v1.24.1"],
                                     controller_managers={"cp1": version("v1.30.0")}), kubectl=version("v1.31.0"))
    assert problems == [
        "API servers v1.28.4 and v1.30.0 are more than one minor apart",
        "kube-controller-manager on cp1 is v1.30.0, newer than the oldest API server (v1.28.4)",
        "kubelet on n1 is v1.29.0, newer than the oldest API server (v1.28.4)",
        "kubelet on n2 is v1.24.1, more than 3 minors older than the API server (v1.28.4)",
        "kubectl v1.31.0 is more than one minor from the API servers",
    ]


def test_etcd_moves_to_the_target_minors_etcd_never_down():
    assert etcd_target("3.5.9-0", version("v1.29.0")) == DEFAULTS[29].etcd
    assert etcd_target("3.6.6-0", version("v1.33.0")) == "3.6.6-0"  # newer than 1.33's: kept


minors = st.sampled_from(sorted(DEFAULTS))


@given(minors, st.integers(0, 20), minors, st.integers(0, 20))
def test_an_upgrade_is_allowed_exactly_when_it_is_the_same_or_the_next_minor(current, patch, target, target_patch):
    running = cluster(api=f"v1.{current}.{patch}", kubelets=[f"v1.{current}.{patch}"])
    allowed = upgrade_problems(running, (1, target, target_patch)) == []
    assert allowed == (target in (current, current + 1))


@pytest.mark.parametrize("minor", sorted(DEFAULTS))
def test_every_supported_minor_has_an_etcd_at_least_as_new_as_the_one_before(minor):
    if minor - 1 in DEFAULTS:
        assert etcd_target(DEFAULTS[minor - 1].etcd, (1, minor, 0)) in (DEFAULTS[minor].etcd, DEFAULTS[minor - 1].etcd)


def test_the_running_versions_are_read_from_nodes_and_static_pods():
    from provision.upgrade.plan import read_running

    def pod(name, node, image):
        return {"kind": "Pod", "metadata": {"name": f"{name}-{node}"}, "spec": {"nodeName": node, "containers": [{"name": name, "image": image}]}}

    listing = {"items": [
        {"kind": "Node", "metadata": {"name": "cp1"}, "status": {"nodeInfo": {"kubeletVersion": "v1.28.4"}}},
        {"kind": "Node", "metadata": {"name": "w1"}, "status": {"nodeInfo": {"kubeletVersion": "v1.27.9"}}},
        pod("kube-apiserver", "cp1", "registry.k8s.io/kube-apiserver:v1.28.4"),
        pod("kube-controller-manager", "cp1", "registry.k8s.io/kube-controller-manager:v1.28.4"),
        pod("kube-scheduler", "cp1", "registry.k8s.io/kube-scheduler:v1.28.4"),
        pod("etcd", "cp1", "registry.k8s.io/etcd:3.5.15-0"),
        pod("kube-proxy", "w1", "mirror.example:5000/kube-proxy:v1.28.4"),  # a registry with a port: the tag is still read
        pod("coredns", "w1", "registry.k8s.io/coredns/coredns:v1.10.1"),
    ]}
    running = read_running(listing)
    assert running.apiservers == {"cp1": (1, 28, 4)} and running.schedulers == {"cp1": (1, 28, 4)}
    assert running.kubelets == {"cp1": (1, 28, 4), "w1": (1, 27, 9)}
    assert running.kube_proxies == {"w1": (1, 28, 4)} and running.etcd == "3.5.15-0"
