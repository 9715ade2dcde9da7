"""`kubeprov prepare`: make every host ready to run Kubernetes, through the roles in playbooks/.

In order, stopping at the first refusal:
1. the bundle (if any) is verified against its SHA256SUMS, or (source release) kubelet, kubectl and
   crictl are downloaded and checked against their published sha256 — before anything is copied;
2. the renderers write each host's node files under <cluster dir>/prepare/rendered/<host>/;
3. the inventory is generated (<cluster dir>/prepare/inventory.yml), with each host's
   applied-state record;
4. one SSH command per host compares that record with /var/lib/kubeprov/applied.json: when
   every host already has it, Ansible is not started (a no-op re-run takes about a second);
5. otherwise ansible-runner runs playbooks/preflight.yml on them (one failure stops everything
   before any host is changed; `up`, whose preflight phase ran already, skips it), the SSH
   transport places the rendered files the roles act on (the one writer of rendered files), and
   ansible-runner runs the roles, playbooks/prepare.yml.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from provision.ansible import applied
from provision.ansible.bundle import Bundle, verify
from provision.artifacts.checksums import DigestCache
from provision.ansible.inventory import HostPlan, applied_record, images_for, inventory, roles_for, write_inventory
from provision.ansible.nodefiles import external_etcd, render_for_prepare
from provision.ansible.runner import HostProgress, RunResult, run_playbook
from provision.ansible.sources import resolve
from provision.config.models import ArtifactSource, Cluster
from provision.errors import KubeprovError
from provision.render.tree import write_trees
from provision.transport.ssh import DEFAULT_KNOWN_HOSTS

PREFLIGHT = "preflight.yml"
PREPARE_ONLY = "prepare.yml"  # the roles; site.yml (for running them by hand) is both


@dataclass(frozen=True)
class Options:
    bundle: Path | None = None
    known_hosts: Path = DEFAULT_KNOWN_HOSTS
    lab: bool = False  # hosts are kubeprov lab containers: verify kernel settings, don't set them
    swapoff: bool = False  # let the os role turn swap off instead of refusing the host
    force: bool = False  # run Ansible even when every host's applied state matches
    forks: int = 20
    preflight: bool = True  # False: the caller ran preflight on these hosts already
    files_placed: bool = False  # True: the caller pushed every rendered file already (up's sync)


@dataclass
class Report:
    skipped: bool  # True: every host was current, Ansible did not run
    states: list[applied.HostState]
    result: RunResult | None
    seconds: float
    inventory: Path


def cluster_dir(cluster: Cluster) -> Path:
    return cluster.directory


def plan(cluster: Cluster, options: Options) -> tuple[dict[str, HostPlan], Bundle | None, Path]:
    """Verify, render and write the inventory; nothing touches a host yet."""
    # --bundle wins; else the cluster file's artifacts.source (a bundle there is verified the same way).
    bundle_dir = options.bundle or (cluster.artifacts.bundle_dir if cluster.artifacts.source is ArtifactSource.BUNDLE else None)
    work = cluster_dir(cluster) / "prepare"
    bundle = verify(bundle_dir, DigestCache(work / "bundle-digests.json")) if bundle_dir else None
    # Release downloads are fetched and checked here: a wrong checksum stops before any host is touched.
    sources = resolve(cluster, bundle, work / "artifacts")
    material = None
    if external_etcd(cluster):
        from provision.pki import PKIStore
        from provision.pki.store import read_material

        store = PKIStore(cluster)
        # A member with a certificate for old addresses would be refused by its peers ("bad
        # certificate") and hang its start: refuse before touching anything.
        for row in store.check()[0]:
            if row.name.startswith("etcd-") and row.problems:
                raise KubeprovError(
                    f"certificate {row.name} of {row.host} no longer matches the cluster ({row.problems[0]}); "
                    f"`kubeprov certs renew {row.name} --host {row.host}` replaces it"
                )
        material = read_material(store)  # etcd members get their certificates
    trees = {host.name: render_for_prepare(cluster, host, material) for host in cluster.hosts}
    render_dir = work / "rendered"
    write_trees(render_dir, trees)
    plans = {}
    images = images_for(cluster, bundle)
    for host in cluster.hosts:
        roles = roles_for(cluster, host)
        plans[host.name] = HostPlan(host, roles, trees[host.name],
                                    applied_record(cluster, host, roles, trees[host.name], bundle, options.lab, sources,
                                                   images[host.name]))
    data = inventory(cluster, plans, render_dir=render_dir, bundle=bundle, known_hosts=options.known_hosts, lab=options.lab,
                     sources=sources)
    data["all"]["vars"]["kubeprov_swapoff"] = options.swapoff
    inventory_path = work / "inventory.yml"
    write_inventory(inventory_path, data)
    return plans, bundle, inventory_path


def place_files(transport, cluster: Cluster, plans: dict[str, HostPlan], targets: list[str], *, parallel: int,
                on_update: Callable[[HostProgress, str], None] = lambda progress, what: None) -> None:
    """The rendered files the roles act on, through the SSH transport: the one writer of rendered
    files (docs/architecture.md); `up`'s sync has placed them already (Options.files_placed).
    A host where files changed is reported as a changed step, like a role's task."""
    from provision.transport import fan_out

    hosts = [h for h in cluster.hosts if h.name in targets]
    outcomes = fan_out(hosts, lambda h: transport.push(h, {str(p): (f.content, f.mode) for p, f in plans[h.name].tree.items()}),
                       parallel=parallel)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise KubeprovError("placing the rendered files failed: " + "; ".join(f"{o.host}: {o.error_text}" for o in failed))
    for outcome in outcomes:
        if outcome.value:
            paths = [change.path for change in outcome.value]
            more = f" and {len(paths) - 4} more" if len(paths) > 4 else ""
            on_update(HostProgress(outcome.host, task="placed " + ", ".join(paths[:4]) + more), "changed")


def prepare(
    cluster: Cluster,
    options: Options,
    on_update: Callable[[HostProgress, str], None] = lambda progress, what: None,
    on_skip_check: Callable[[list[applied.HostState]], None] = lambda states: None,
    transport=None,
    planned: tuple | None = None,
    checked: list[applied.HostState] | None = None,
) -> Report:
    """`transport`: an open one to reuse (up's), else one is opened for the check; `planned`:
    plan()'s result when the caller made it already; `checked`: each host's applied state when
    the caller read it already (up's facts)."""
    from contextlib import nullcontext

    from provision.transport import Options as TransportOptions
    from provision.transport import Transport

    started = time.monotonic()
    plans, _, inventory_path = planned or plan(cluster, options)
    states: list[applied.HostState] = []
    targets = [h.name for h in cluster.hosts]
    with nullcontext(transport) if transport else Transport(TransportOptions(known_hosts=options.known_hosts)) as open_transport:
        if not options.force:
            states = checked if checked is not None else applied.check(open_transport, plans, parallel=options.forks)
            on_skip_check(states)
            if all(state.current for state in states):
                return Report(True, states, None, time.monotonic() - started, inventory_path)
            # Only the hosts that lack this state run the roles; the others were checked just now.
            targets = [state.host for state in states if not state.current]
        limit = ",".join(targets) if len(targets) < len(cluster.hosts) else None
        checked = None
        if options.preflight:  # before anything on any host changes
            checked = run_playbook(PREFLIGHT, inventory_path, targets, on_update=on_update, forks=options.forks,
                                   limit=limit, work_dir=inventory_path.parent)
            if not checked.ok:
                return Report(False, states, checked, time.monotonic() - started, inventory_path)
        if not options.files_placed:
            place_files(open_transport, cluster, plans, targets, parallel=options.forks, on_update=on_update)
        result = run_playbook(PREPARE_ONLY, inventory_path, targets, on_update=on_update, forks=options.forks,
                              limit=limit, work_dir=inventory_path.parent)
    if checked is not None:
        result = checked.then(result)
    return Report(False, states, result, time.monotonic() - started, inventory_path)
