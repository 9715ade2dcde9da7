"""What `up` knows of its hosts: read once per run, every host at once, one SSH command each.

A fact is what a phase would otherwise ask a host on its own, one round trip at a time: whether
the host is in the cluster already (its joined marker), the applied-state record prepare left
there, which of kubeprov's units run, whether a kubelet binary exists, and the state of every
file the renderers place on it. Plans and runs read the same facts, so `up --dry-run` and `up`
see the same hosts. A phase that changes a host forgets that host's facts; the next ask reads
it again.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

from provision.ansible.applied import read_record
from provision.ansible.inventory import APPLIED_PATH
from provision.config.models import Host
from provision.render.cni.bridge import ROUTES_UNIT
from provision.transport.remote import FileState, UnitState

JOINED_MARKER = "/var/lib/kubeprov/joined"  # the host is in the cluster: its kubelet (or external etcd) runs
KUBELET_BINARY = "/usr/bin/kubelet"
UNITS = ("kubelet", "containerd", "etcd", ROUTES_UNIT.name)  # every unit a phase asks about


@dataclass(frozen=True)
class HostFacts:
    joined: bool
    kubelet_binary: bool
    units: dict[str, UnitState]
    applied_text: bytes | None  # the applied-state record, None when the host has none
    files: dict[str, FileState | None] = field(repr=False)

    def applied(self) -> dict | None:
        """The record prepare wrote, {} when absent, None when it is not JSON."""
        return read_record(self.applied_text)

    def services(self) -> dict[str, str]:
        """systemd's ActiveState of each unit."""
        return {name: unit.active for name, unit in self.units.items()}


class Facts:
    """Per-run cache of HostFacts. The first ask reads every host not known yet, in parallel."""

    def __init__(self, transport, hosts: list[Host], paths: Callable[[Host], list[str]], *, parallel: int):
        self._transport = transport
        self._hosts = list(hosts)
        self._paths = paths  # the files whose states are read with each host's facts
        self._parallel = parallel
        self._known: dict[str, HostFacts] = {}
        self._lock = threading.Lock()

    def __call__(self, host: Host) -> HostFacts:
        with self._lock:
            if host.name not in self._known:
                self._gather(host)
            return self._known[host.name]

    def _gather(self, asked: Host) -> None:
        from provision.transport import fan_out

        unknown = [h for h in self._hosts if h.name not in self._known] or [asked]
        paths = {h.name: self._paths(h) for h in unknown}  # here, not in the threads: rendering is not thread-safe
        outcomes = fan_out(unknown, lambda h: self._read(h, paths[h.name]), parallel=self._parallel)
        for o in outcomes:
            if o.ok:
                self._known[o.host] = o.value
        if asked.name not in self._known:  # its own failure, raised where it is asked
            self._known[asked.name] = self._read(asked, paths.get(asked.name) or self._paths(asked))

    def _read(self, host: Host, paths: list[str]) -> HostFacts:
        probed = self._transport.probe(host, exists=[JOINED_MARKER, KUBELET_BINARY], read=[APPLIED_PATH], units=list(UNITS),
                                       paths=paths)
        return HostFacts(joined=probed.exists[JOINED_MARKER], kubelet_binary=probed.exists[KUBELET_BINARY],
                         units=probed.units, applied_text=probed.contents[APPLIED_PATH], files=probed.files)

    def forget(self, host: Host | str) -> None:
        """The run changed `host`: its facts are read again when next asked."""
        with self._lock:
            self._known.pop(host if isinstance(host, str) else host.name, None)
