"""What the phases of `up` share: the options of the run, and a context made once per run.

The context holds the cluster, the open transport and the reporter, and makes on first use what
several phases need (the PKI store and its material, the rendered trees, prepare's plan, each
host's facts, kubectl on a control plane). A resumed run skips the phases that ran, so nothing
here may assume an earlier phase made it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from provision.config.models import Cluster, Host
from provision.errors import KubeprovError
from provision.kube.kubectl import ADMIN_CONF, SUPER_ADMIN_CONF, Kubectl
from provision.kube.live import LiveObjects
from provision.phases.facts import JOINED_MARKER, Facts
from provision.phases.phase import Step
from provision.phases.runner import Reporter
from provision.render.stages import every_stage
from provision.transport import DEFAULT_KNOWN_HOSTS, Transport


@dataclass(frozen=True)
class UpOptions:
    bundle: Path | None = None
    known_hosts: Path = DEFAULT_KNOWN_HOSTS
    lab: bool = False
    swapoff: bool = False
    parallel: int = 20
    api_timeout: float = 300.0
    node_timeout: float = 300.0


@dataclass
class UpContext:
    cluster: Cluster
    options: UpOptions
    transport: Transport
    reporter: Reporter = field(default_factory=Reporter)
    step: Step | None = None
    _material: object = None
    _rendered: tuple | None = None
    marked_joined: set[str] = field(default_factory=set)  # hosts this run marked joined (phases/files.py: mark_joined)
    newly_joined: set[str] = field(default_factory=set)  # hosts whose kubelet this run started
    _prepare_plan: tuple | None = None
    live: LiveObjects | None = None  # the object phases' objects as the API has them (phases/objects.py)
    fresh_api: bool = False  # the first control plane started in this run: no object exists yet

    # --- shared things, made on first use (a resumed run skips the phases that made them) ------

    @cached_property
    def store(self):
        from provision.pki import PKIStore

        return PKIStore(self.cluster)

    @property
    def cluster_dir(self) -> Path:
        return self.store.root

    def pki_exists(self) -> bool:
        return (self.store.pki_dir / "ca.crt").exists()

    def reread_pki(self) -> None:
        """The PKI on disk changed (certs issued some): material and renders are made again when next asked."""
        self._material = None
        self._rendered = None

    @property
    def material(self):
        if self._material is None:
            from provision.pki.store import read_material

            self._material = read_material(self.store)
        return self._material

    def rendered(self) -> tuple[dict, dict[str, bytes]]:
        """(host → tree, cluster object file → YAML), rendered once per run from the PKI."""
        if self._rendered is None:
            from provision.render import render_cluster, render_hosts

            self._rendered = (render_hosts(self.cluster, self.material), render_cluster(self.cluster, self.material))
        return self._rendered

    def prepare_plan(self):
        """prepare's plan (bundle verified, node files rendered, inventory written): once per run."""
        from provision import prepare

        if self._prepare_plan is None:
            self._prepare_plan = prepare.plan(self.cluster, self.prepare_options())
        return self._prepare_plan

    def prepare_options(self):
        from provision.prepare import Options

        o = self.options
        # The preflight phase checked every fresh host already, and sync placed every rendered file.
        return Options(bundle=o.bundle, known_hosts=o.known_hosts, lab=o.lab, swapoff=o.swapoff, forks=o.parallel,
                       preflight=False, files_placed=True)

    def say(self, host: str, text: str, status: str = "ok") -> None:
        self.reporter.host_line(self.step, host, status, text)

    def kubectl(self, host: Host | None = None, *, bootstrap: bool = False, local: bool = True) -> Kubectl:
        """kubectl on `host` (default: the first control plane), against its own API server.

        bootstrap: use super-admin.conf (system:masters) where admin.conf has no rights yet
        (≥ 1.29, until the kubeadm:cluster-admins binding exists)."""
        from provision.pki.kubeconfigs import local_url

        host = host or self.cluster.first_control_plane
        config = SUPER_ADMIN_CONF if bootstrap and self.cluster.minor >= 29 else ADMIN_CONF
        return Kubectl(self.transport, host, kubeconfig=config, server=local_url(self.cluster, host) if local else None)

    @cached_property
    def facts(self) -> Facts:
        """Each host's facts (provision/phases/facts.py), read on first ask with the states of
        every file sync may place there."""
        def paths(host: Host) -> list[str]:
            if not self.pki_exists():  # nothing is rendered before certs: the files are read when pushed
                return [JOINED_MARKER]
            trees, _ = self.rendered()
            return sorted(str(p) for p in every_stage(self.cluster, host, trees[host.name])) + [JOINED_MARKER]

        return Facts(self.transport, self.cluster.hosts, paths, parallel=self.options.parallel)

    def joined(self, host: Host) -> bool:
        if not self.pki_exists():  # no CA yet, so no host can have joined (and none is asked: a dry run contacts no host)
            return False
        return host.name in self.marked_joined or self.facts(host).joined


def fingerprint(cluster: Cluster) -> str:
    """What the journal ties a run to: the loaded cluster spec."""
    return hashlib.sha256(cluster.model_dump_json(by_alias=True).encode()).hexdigest()[:16]


def check_run(ctx: UpContext, host: Host, command: str, what: str, timeout: float | None = None):
    result = ctx.transport.run(host, command, timeout=timeout)
    if not result.ok:
        raise KubeprovError(f"{host.name}: {what} failed (exit {result.exit_code}): {result.summary()}")
    return result
