"""Which of kubeprov's API objects `kubectl apply` would leave unchanged, from ONE read of them all.

`up` applies objects in four phases (upload-config, bootstrap-token, rbac, addons); on a run with
nothing to do each apply still costs a kubectl start, a schema fetch and a patch computation per
object on the control plane. Instead, every object those phases will apply is read once
(`kubectl get -f - -o json`), and an object counts as current when both hold:

- its last-applied-configuration annotation is exactly the document we would apply: apply's
  three-way merge then has nothing to remove or change relative to its last run;
- every field the document sets has that value in the live object (`covers`): nobody edited it
  since. Fields the server added (defaults, status, metadata) are not ours to compare.

Anything else — a missing object, a server that normalised a value we wrote differently, a kind
the server does not know yet — is applied as before: the check only ever skips a no-op.
"""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

from provision import yamltext


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

Identity = tuple[str, str, str]  # kind, namespace ("" for cluster-scoped), name


def identity(doc: dict) -> Identity:
    meta = doc.get("metadata") or {}
    return doc.get("kind", ""), meta.get("namespace", ""), meta.get("name", "")


def documents(data: bytes | list[dict]) -> list[dict]:
    if isinstance(data, bytes):
        return [d for d in yamltext.load_all(data) if d]
    return list(data)


def covers(desired: Any, live: Any) -> bool:
    """Every field `desired` sets is in `live` with the same value (lists element by element)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(k in live and covers(v, live[k]) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(desired) == len(live) and all(covers(d, v) for d, v in zip(desired, live))
    return desired == live


def _as_stored(doc: dict) -> dict:
    """A Secret's stringData as the server stores it (base64 data), for `covers`."""
    if doc.get("kind") != "Secret" or not doc.get("stringData"):
        return doc
    stored = {k: v for k, v in doc.items() if k != "stringData"}
    stored["data"] = {**(doc.get("data") or {}),
                      **{k: base64.b64encode(str(v).encode()).decode() for k, v in doc["stringData"].items()}}
    return stored


def _as_recorded(doc: dict) -> dict:
    """`doc` as apply records it: JSON values, and an empty annotations map where it had none
    (apply adds its annotation to the object, then records the object without it)."""
    recorded = json.loads(json.dumps(doc))
    recorded.setdefault("metadata", {}).setdefault("annotations", {})
    return recorded


def is_current(desired: dict, live: dict | None) -> bool:
    if live is None:
        return False
    recorded = ((live.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    try:
        if recorded is None or json.loads(recorded) != _as_recorded(desired):
            return False
    except ValueError:
        return False
    return covers(_as_stored(desired), live)


class LiveObjects:
    """The live versions of a set of objects, read once through `kubectl` (a provision.kube.kubectl
    Kubectl); `stale(docs)` keeps the documents an apply would change."""

    def __init__(self, kubectl, docs: list[dict], *, read: bool = True):
        """read=False: known to be absent (an API that has just been created): nothing to read,
        everything is applied."""
        self._live: dict[Identity, dict] | None = None if read else {}
        self._kubectl = kubectl
        self._wanted = docs
        self._reading = threading.Lock()  # one read, however many ask (prefetch's thread and the phases)

    def prefetch(self) -> None:
        """Start the read now, in the background, while the caller waits on something else."""
        threading.Thread(target=self._read, daemon=True, name="live-objects").start()

    def _read(self) -> dict[Identity, dict]:
        with self._reading:
            return self._read_once()

    def _read_once(self) -> dict[Identity, dict]:
        if self._live is None:
            self._live = {}
            # A stream of JSON objects (kubectl reads one as such when it starts with one; no
            # "---" between them): PyYAML's pure-Python dump would cost more than the read.
            stream = b"\n".join(json.dumps(d).encode() for d in self._wanted)
            result = self._kubectl.run("get", "--ignore-not-found", "-f", "-", "-o", "json", stdin=stream, check=False)
            if result.ok and result.stdout.strip():
                try:
                    listed = json.loads(result.stdout)
                except ValueError:
                    listed = {}
                items = listed["items"] if "items" in listed else [listed]  # one object comes bare
                self._live = {identity(item): item for item in items if isinstance(item, dict)}
            # A failed read (a kind the server does not serve yet…) leaves nothing known: all applied.
        return self._live

    def stale(self, docs: list[dict]) -> list[dict]:
        live = self._read()
        return [d for d in docs if not is_current(d, live.get(identity(d)))]
