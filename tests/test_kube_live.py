"""provision/kube/live.py: which objects an apply would leave unchanged.

The live objects here are built the way the API server returns what `kubectl apply` wrote: the
applied document, the last-applied annotation kubectl records (the document with an empty
annotations map), and fields the server adds. Against a real API server the same decision is
proven by tests/e2e (a second `up` applies nothing and reports nothing changed; an object edited
by hand is put back).
"""

from __future__ import annotations

import base64
import copy
import json

from provision.bootstrap.rbac import rbac_objects
from provision.bootstrap.token import BootstrapToken
from provision.kube.live import LAST_APPLIED, covers, is_current
from provision.config import load_cluster
from testkit import write_cluster


def as_served(doc: dict) -> dict:
    """`doc` after `kubectl apply`, as `kubectl get -o json` shows it."""
    live = copy.deepcopy(doc)
    recorded = json.loads(json.dumps(doc))
    recorded.setdefault("metadata", {})["annotations"] = {**recorded["metadata"].get("annotations", {})}
    meta = live.setdefault("metadata", {})
    meta.setdefault("annotations", {})[LAST_APPLIED] = json.dumps(recorded, sort_keys=True)
    meta.update(uid="0d9c3c5e", resourceVersion="4211", creationTimestamp="2026-12-03T09:00:00Z")
    if live.get("kind") == "Secret" and "stringData" in live:
        data = live.pop("stringData")
        live["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return live


def daemonset() -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "kube-proxy", "namespace": "kube-system", "labels": {"k8s-app": "kube-proxy"}},
        "spec": {"selector": {"matchLabels": {"k8s-app": "kube-proxy"}},
                 "template": {"metadata": {"labels": {"k8s-app": "kube-proxy"}},
                              "spec": {"containers": [{"name": "kube-proxy", "image": "registry.k8s.io/kube-proxy:v1.28.4",
                                                       "command": ["/usr/local/bin/kube-proxy"]}]}}},
    }


def test_an_object_as_applied_is_current_despite_the_fields_the_server_adds():
    doc = daemonset()
    live = as_served(doc)
    live["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"  # server defaults
    live["spec"]["revisionHistoryLimit"] = 10
    live["status"] = {"numberReady": 3}
    assert is_current(doc, live)


def test_a_missing_object_or_one_never_applied_is_stale():
    doc = daemonset()
    assert not is_current(doc, None)
    created = as_served(doc)
    del created["metadata"]["annotations"][LAST_APPLIED]  # made by `kubectl create`, not apply
    assert not is_current(doc, created)


def test_a_changed_document_is_stale():
    doc = daemonset()
    live = as_served(doc)
    newer = copy.deepcopy(doc)
    newer["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.k8s.io/kube-proxy:v1.28.7"
    assert not is_current(newer, live)
    fewer = copy.deepcopy(doc)
    del fewer["metadata"]["labels"]  # apply would remove the label: not a no-op either
    assert not is_current(fewer, live)


def test_a_field_edited_by_hand_since_the_apply_is_stale():
    doc = daemonset()
    live = as_served(doc)
    live["spec"]["template"]["spec"]["containers"][0]["command"] = ["/usr/local/bin/kube-proxy", "--v=4"]
    assert not is_current(doc, live)
    live = as_served(doc)
    live["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "busybox"})
    assert not is_current(doc, live)


def test_secrets_compare_by_their_stored_data(tmp_path):
    token = BootstrapToken.parse("abcdef.0123456789abcdef")
    secret = token.secret_object()
    assert is_current(secret, as_served(secret))
    with_string_data = {**{k: v for k, v in secret.items() if k != "data"},
                        "stringData": {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}}
    assert is_current(with_string_data, as_served(with_string_data))
    edited = as_served(secret)
    edited["data"]["usage-bootstrap-signing"] = base64.b64encode(b"false").decode()
    assert not is_current(secret, edited)


def test_every_rbac_object_kubeprov_applies_round_trips(tmp_path):
    for doc in rbac_objects(load_cluster(write_cluster(tmp_path / "cluster.yaml"))):
        assert is_current(doc, as_served(doc)), doc["metadata"]["name"]


def test_covers_compares_lists_element_by_element():
    assert covers({"a": [{"x": 1}]}, {"a": [{"x": 1, "y": 2}], "b": 3})
    assert not covers({"a": [{"x": 1}]}, {"a": [{"x": 1}, {"x": 2}]})
    assert not covers({"a": 1}, {"a": "1"})


def test_a_prefetched_read_is_the_one_read_whoever_asks_while_it_runs():
    """up starts the read while /readyz is asked: the object phases must wait for that read, not
    start a second one. SlowKubectl is a test double for kubectl on a control plane (it returns
    what `kubectl get -f - -o json` prints, after a delay) and counts its calls."""
    import threading
    import time
    from types import SimpleNamespace

    from provision.kube.live import LiveObjects

    applied = as_served(daemonset())

    class SlowKubectl:
        def __init__(self):
            self.calls = 0
            self.lock = threading.Lock()

        def run(self, *args, stdin=None, check=True):
            with self.lock:
                self.calls += 1
            time.sleep(0.3)
            return SimpleNamespace(ok=True, stdout=json.dumps({"kind": "List", "items": [applied]}))

    kubectl = SlowKubectl()
    live = LiveObjects(kubectl, [daemonset()])
    live.prefetch()
    time.sleep(0.05)  # the read is under way
    assert live.stale([daemonset()]) == [] and kubectl.calls == 1
    assert live.stale([daemonset()]) == [] and kubectl.calls == 1
