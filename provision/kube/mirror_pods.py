"""Mirror pods a kubelet has not created (or not replaced) yet, and how to make it do so now.

A kubelet creates a static pod's mirror pod when it syncs the pod, and only once its Node exists
(in its own view of the API) and the API server admits the pod (the system-node-critical
PriorityClass comes with the API server's start). After that, only when it syncs the pod again:
a container or probe result changes, the mirror pod changes in the API, or its resync comes, up
to a minute later. On a fresh control plane every startup probe may have passed before its Node
existed, and so may a static-pod keepalived's before the VIP answered.

A mirror pod in the API that is not of its static pod (another config hash) makes the kubelet
sync that static pod at once: it deletes that pod and creates its own (kubelet: HandlePodAdditions,
SyncPod; the reconciliation that also recreates a deleted mirror pod). So a missing mirror pod gets
a placeholder: a pod of that name, bound to the node, marked as a mirror pod with a hash no static
pod has. The kubelet keeps running (a restart would also sync every pod, but its new probe workers
may first post Ready before probing): the status it posts for the new mirror pod is its verdict.
"""

from __future__ import annotations

import json
import time

from provision.config.models import Cluster, Host
from provision.errors import KubeprovError
from provision.kube.kubectl import Kubectl

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"  # the kubelet's: the config hash of the static pod it mirrors
PLACEHOLDER_HASH = "kubeprov-placeholder"
RESYNC_ANNOTATION = "kubeprov.io/resync"


def placeholders(cluster: Cluster, host: Host, names) -> dict:
    """Placeholders for `host`'s static pods `names`, as one List. The kubelet never runs a mirror
    pod; the image is one every node has."""
    from provision.render.kubelet import pause_image

    return {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": name, "namespace": "kube-system", "annotations": {MIRROR_ANNOTATION: PLACEHOLDER_HASH}},
         "spec": {"nodeName": host.name, "containers": [{"name": "placeholder", "image": pause_image(cluster)}]}}
        for name in sorted(names)]}


def place(kubectl: Kubectl, cluster: Cluster, host: Host, names) -> None:
    """Create placeholders for the missing mirror pods `names` of `host`; one the kubelet has
    made meanwhile is fine (its own stays)."""
    created = kubectl.run("create", "-f", "-", stdin=json.dumps(placeholders(cluster, host, names)).encode(), check=False)
    errors = [line for line in created.stderr.splitlines() if line.strip()]
    if not created.ok and not (errors and all("AlreadyExists" in line for line in errors)):
        raise KubeprovError(f"{host.name}: creating placeholders for its missing mirror pods failed: {created.summary()}")


def ensure(kubectl: Kubectl, cluster: Cluster, host: Host, names) -> list[str]:
    """Placeholders for those of `host`'s static pods `names` that have no pod in the API; the
    names placed. Its Node must exist: a kubelet makes no mirror pod before."""
    listed = kubectl.run("get", "pods", "-n", "kube-system", f"--field-selector=spec.nodeName={host.name}",
                         "-o", "jsonpath={.items[*].metadata.name}")
    absent = sorted(set(names) - set(listed.stdout.split()))
    if absent:
        place(kubectl, cluster, host, absent)
    return absent


def resync(kubectl: Kubectl, host: Host, names) -> None:
    """Make `host`'s kubelet sync the static pods whose mirror pods `names` lag their manifests (the
    old pod's): to the kubelet any change of a mirror pod in the API is an update of its static pod,
    and that sync replaces a mirror pod of another config hash with its own. The change: an
    annotation of kubeprov's own."""
    annotated = kubectl.run("annotate", "--overwrite", "-n", "kube-system", "pod", *sorted(names),
                            f"{RESYNC_ANNOTATION}={time.time():.0f}", check=False)
    if not annotated.ok and "NotFound" not in annotated.stderr:  # gone meanwhile: its kubelet replaced it
        raise KubeprovError(f"{host.name}: asking its kubelet to sync {', '.join(sorted(names))} failed: {annotated.summary()}")


def placed_line(names) -> str:
    return f"placeholders for the mirror pods its kubelet has not made yet: {', '.join(sorted(names))}"
