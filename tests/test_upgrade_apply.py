"""`upgrade apply`'s refusals (pure): the cluster file must say the target version, upgrade plan's
rules must allow it, and the artifacts must have it; the first reason is the one said."""

from __future__ import annotations

from provision.upgrade.apply import refusals


def test_nothing_refused_when_the_file_says_the_target_and_nothing_else_says_no():
    assert refusals("v1.28.7", "v1.28.7", [], []) == []
    assert refusals("v1.28.7", "1.28.7", [], []) == []  # the leading v is optional on the command line


def test_a_file_that_says_another_version_is_refused_first_naming_both():
    found = refusals("v1.28.4", "v1.28.7", ["v1.30.0 skips a minor"], ["images/: no tarball holds x"])
    assert found[0].startswith("kubernetesVersion in the cluster file is v1.28.4, not v1.28.7: set it")
    assert len(found) == 3


def test_plan_problems_and_missing_artifacts_are_refusals():
    assert refusals("v1.30.0", "v1.30.0", ["v1.30.0 skips a minor (the control plane runs v1.28.4)"], []) == [
        "not allowed: v1.30.0 skips a minor (the control plane runs v1.28.4)"]
    assert refusals("v1.28.7", "v1.28.7", [], ["images/: no tarball holds registry.k8s.io/kube-apiserver:v1.28.7"]) == [
        "the artifacts lack v1.28.7: images/: no tarball holds registry.k8s.io/kube-apiserver:v1.28.7"]
