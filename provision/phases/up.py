"""The phases of `kubeprov up`, in order: this module only orders them (each lives in the module
of its concern: local_pki, nodes, files, etcd, kubelet, objects, verify; context.py is what they
share, facts.py what they know of the hosts).

    certs → kubeconfigs → preflight → render → sync → etcd (external: install, health) → prepare
    → control-plane → upload-config → bootstrap-token → rbac → mark-control-plane → addons
    → control-plane-join → workers → finalize → verify

Why this order (it differs from the issue's sketch in three places, each for a reason):
- certs and kubeconfigs come before preflight: prepare's inventory carries the external etcd
  members' certificates, so the PKI must exist before the first Ansible run; issuing it touches
  only the local cluster directory.
- sync pushes every rendered file (the transport is their one writer: docs/architecture.md)
  before prepare, whose roles act on some of them (containerd's config, the kubelet's unit);
  none of them needs a package to be placed.
- external etcd is installed (its own role) and checked healthy before the node roles run: the
  control plane needs it, and it needs no Kubernetes binary, so a missing kubelet stops `up`
  with a healthy etcd already in place for the resumed run.

Workers join with certificates from the local CA, not by TLS bootstrap with the token: the PKI
module already issues every node's kubelet.conf (system:node:<name>, signed by our CA) and sync
places it, so a worker needs no API round trip, no CSR approval race and no token in its files,
and control planes and workers start their kubelets the same way. The bootstrap token, signed
cluster-info and RBAC are still created exactly as kubeadm does, so `kubeadm join` (see
`kubeprov join-command`) works for nodes added by hand, and kubelets rotate their client
certificates through the CSR auto-approval bindings.

Stacked etcd with several control planes grows one member at a time, as kubeadm does: the first
control plane starts a one-member etcd; each next one is `member add`-ed through the first
member (etcd's JSON gateway on that host: no mirror pod needed) before its kubelet starts. Its
manifest, as rendered, names the members up to itself with --initial-cluster-state existing, and
stays so (etcd ignores --initial-* once its data directory exists), so no etcd ever restarts
after its join. A control plane's kubelet talks to its own API server, so it never waits on the
VIP its own static pods provide. Hosts carry /var/lib/kubeprov/joined once their kubelet is in
the cluster; `finalize` gives hosts that joined in this run their steady-state files
(render/stages.py).
"""

from __future__ import annotations

from provision.config.models import Cluster
from provision.phases.context import UpContext, UpOptions, fingerprint
from provision.phases.etcd import external, run_etcd_health
from provision.phases.files import plan_finalize, plan_render, plan_sync, run_finalize, run_render, run_sync
from provision.phases.kubelet import (
    plan_first_control_plane,
    plan_join_control_planes,
    plan_workers,
    run_first_control_plane,
    run_join_control_planes,
    run_mark_control_plane,
    run_workers,
)
from provision.phases.local_pki import plan_certs, plan_kubeconfigs, run_certs, run_kubeconfigs
from provision.phases.nodes import fresh_hosts, plan_etcd, plan_preflight, plan_prepare, run_etcd_install, run_preflight, run_prepare
from provision.phases.objects import (
    plan_addons,
    plan_bootstrap_token,
    plan_rbac,
    plan_upload_config,
    run_addons,
    run_bootstrap_token,
    run_rbac,
    run_upload_config,
)
from provision.phases.phase import Phase
from provision.phases.runner import Reporter
from provision.phases.verify import run_verify

__all__ = ["UP_PHASES", "UpContext", "UpOptions", "up"]


def _plan(*lines: str, hosts=None):
    def plan(ctx: UpContext):
        targets = hosts(ctx) if hosts else [None]
        for host in targets:
            for line in lines:
                yield (host.name if host else None), line

    return plan


def _first(ctx: UpContext):
    return [ctx.cluster.first_control_plane]


UP_PHASES: tuple[Phase, ...] = (
    Phase("certs", "issue missing CAs, certificates, keys and kubeconfigs in the cluster directory", run_certs, plan=plan_certs),
    Phase("kubeconfigs", "check every kubeconfig against the cluster (server, identity, signer)", run_kubeconfigs, plan=plan_kubeconfigs),
    Phase("preflight", "per-host checks before anything on a host changes", run_preflight, plan=plan_preflight,
          run_if=lambda ctx: bool(fresh_hosts(ctx)), why_not="every host is in the cluster already"),
    Phase("render", "every host's files and the cluster objects, written locally", run_render, plan=plan_render),
    Phase("sync", "push every host's rendered files (the one writer of them); only what differs", run_sync, plan=plan_sync),
    Phase("etcd", "external etcd: installed, started and healthy before the control plane", None, run_if=external,
          why_not="etcd is stacked: it comes with the control planes", children=(
              Phase("install", "the etcd role on the etcd members", run_etcd_install, plan=plan_etcd),
              Phase("health", "every member healthy over TLS", run_etcd_health, plan=_plan("etcdctl endpoint health over TLS"))),
          plan=None),
    Phase("prepare", "OS, containerd, runc, CNI plugins, crictl, kubelet, kubectl, images (Ansible roles)", run_prepare, plan=plan_prepare),
    Phase("control-plane", "start the first control plane's kubelet (and the workers'); wait for its API server's /readyz",
          run_first_control_plane, plan=plan_first_control_plane),
    Phase("upload-config", "kubeadm-config and kubelet-config ConfigMaps", run_upload_config,
          plan=plan_upload_config),
    Phase("bootstrap-token", "a join token and cluster-info signed with it (kubeadm's format)", run_bootstrap_token,
          plan=plan_bootstrap_token),
    Phase("rbac", "kubeadm's RBAC for token holders, CSR auto-approval and admin.conf's group", run_rbac,
          plan=plan_rbac),
    Phase("mark-control-plane", "label the first control plane and taint it NoSchedule (and give mirror pods its kubelet "
          "has not made a placeholder)", run_mark_control_plane,
          plan=_plan("label node-role.kubernetes.io/control-plane, taint NoSchedule", hosts=_first)),
    Phase("addons", "kube-proxy, CoreDNS and the CNI", run_addons, plan=plan_addons),
    Phase("control-plane-join", "the other control planes: etcd members one at a time, then their API servers together",
          run_join_control_planes,
          run_if=lambda ctx: len(ctx.cluster.control_planes) > 1, why_not="one control plane",
          plan=plan_join_control_planes),
    Phase("workers", "the workers' kubelets (started with the control plane; kubelet.conf from the local CA) registered", run_workers,
          run_if=lambda ctx: bool(ctx.cluster.workers), why_not="no workers",
          plan=plan_workers),
    Phase("finalize", "the rendered steady state on every joined host (etcd's full member list, kube-vip on admin.conf)",
          run_finalize, plan=plan_finalize),
    Phase("verify", "nodes Ready, control-plane pods and kube-proxy Ready, etcd healthy, admin.conf works", run_verify,
          plan=_plan("kubectl get nodes / pods -n kube-system, etcdctl endpoint health, auth can-i")),
)


def with_learnt_addresses(cluster: Cluster, transport, reporter: Reporter, *, parallel: int, record: bool) -> Cluster:
    """The cluster with an IP for every host known only by a DNS name (provision/addresses.py):
    recorded ones, and the others learnt on the hosts now."""
    from provision import addresses

    if not addresses.named(cluster):
        return cluster
    found, learnt = addresses.learn(transport, cluster, parallel=parallel, record=record)
    for name in sorted(learnt):
        reporter.host_line(None, name, "ok", f"address {found[name]}: its default route's source, learnt on the host"
                                             + ("" if record else " (not recorded: dry run)"))
    return addresses.with_addresses(cluster, found)


def up(cluster: Cluster, options: UpOptions, reporter: Reporter, *, dry_run: bool = False, skip=(),
       only: list[str] | None = None, fresh: bool = False, transport_options=None):
    """Run `up` (or, with `only`, some of its phases). Returns (RunReport, resumed)."""
    from provision import retries
    from provision.phases.journal import Journal
    from provision.phases.phase import select
    from provision.phases.runner import Runner
    from provision.transport import Options, Transport

    skipped = select(UP_PHASES, skip)
    chosen = select(UP_PHASES, only) if only else None
    opts = transport_options or Options(known_hosts=options.known_hosts)
    with Transport(opts) as transport:
        # Before the journal: the run (and a resumed one, which reads the record) is tied to the
        # cluster with the IPs its named hosts have.
        cluster = with_learnt_addresses(cluster, transport, reporter, parallel=options.parallel, record=not dry_run)
        ctx = UpContext(cluster, options, transport)
        journal, resumed = (None, False)
        if not dry_run and chosen is None:
            journal, resumed = Journal.open(ctx.cluster_dir, fingerprint(cluster), fresh=fresh)
        # A retried SSH connect or download is a line of the phase it happens in (a download's host: "local").
        with retries.saying_to(lambda host, line: reporter.host_line(ctx.step, host or "local", "warning", line)):
            report = Runner(UP_PHASES, reporter).run(ctx, dry_run=dry_run, skip=skipped, only=chosen, journal=journal, resumed=resumed)
    return report
