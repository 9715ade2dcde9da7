"""`kubeprov upgrade apply --version V`: the cluster file says V (k0sctl's and KubeOne's model: the
operator edits kubernetesVersion and an artifact source that has V), and this rolls the running
cluster to it.

Refused before anything changes (one line, naming why): the file says another version, upgrade
plan's skew and upgrade rules say no, or the offline bundle lacks V's artifacts. Then, each step
journalled (provision/phases/journal.py: HostJournal, in the cluster directory) so an interrupted
apply continues where it stopped:
1. an etcd snapshot (provision/day2/etcd_backup.py), into the cluster directory's etcd-backups/;
2. the control planes, one at a time, and the workers in batches, through the rolling mechanism
   (provision/rolling.py): prepare's roles on that host alone install V's binaries and images,
   the new manifests are pushed (the transport keeps a backup of each file it replaces), the
   kubelet restarted until its Node reports V;
3. the cluster objects that name the version (kubeadm-config, kube-proxy's DaemonSet) applied;
   then every node and control-plane pod Ready.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from provision.config.models import ArtifactSource, Host
from provision.errors import KubeprovError

JOURNAL = "upgrade.json"
SNAPSHOT = "etcd-snapshot"  # the journal's name for step 1
OBJECTS = "cluster-objects"  # …and for step 3

Say = Callable[[str, str, str], None]  # (host, text, status)


class Refused(KubeprovError):
    """The upgrade may not start; nothing was changed."""

    exit_code = 1


def refusals(file_version: str, target: str, problems: list[str], missing: list[str]) -> list[str]:
    """Why `upgrade apply --version target` must not start (pure): the first is what is said."""
    from provision.upgrade.skew import shown, version

    found = []
    if shown(version(target)) != shown(version(file_version)):
        found.append(f"kubernetesVersion in the cluster file is {file_version}, not {shown(version(target))}: set it (and an "
                     f"artifact source that has {shown(version(target))}) in the file first, then run upgrade apply again")
    found += [f"not allowed: {p}" for p in problems]
    found += [f"the artifacts lack {shown(version(target))}: {m}" for m in missing]
    return found


def missing_artifacts(cluster) -> list[str]:
    """What the cluster file's offline bundle lacks for its version (other sources are checked
    when prepare fetches: every download against its published sha256)."""
    from provision.artifacts.plan import verify_bundle

    if cluster.artifacts.source is not ArtifactSource.BUNDLE:
        return []
    return [str(p) for p in verify_bundle(Path(cluster.artifacts.bundle_dir), cluster)]


@dataclass
class Upgrade:
    ctx: object  # UpContext of the cluster at the target version
    target: str
    batch: int = 1
    drain_timeout: float = 300.0
    force: bool = False

    def journal(self):
        from provision.phases.journal import HostJournal

        return HostJournal.open(self.ctx.cluster_dir / JOURNAL, "upgrade:" + self.target)

    def roll_spec(self):
        from provision.phases.files import desired_tree
        from provision.rolling import Roll

        ctx = self.ctx
        return Roll(tree=lambda h: desired_tree(ctx, h, joined=True), install=self.install, kubelet_version=self.target,
                    batch=self.batch, drain_timeout=self.drain_timeout, force=self.force)

    def install(self, host: Host) -> bool:
        """prepare's roles on `host` alone (V's kubelet, kubectl, images); True when they ran."""
        from provision import prepare
        from provision.ansible.applied import HostState
        from provision.phases.nodes import _ansible_failure, applied_states

        ctx = self.ctx
        (state,) = applied_states(ctx, [host])
        if state.current:
            ctx.say(host.name, "binaries and images already at this state; Ansible not run")
            return False
        others = [HostState(h.name, True, "") for h in ctx.cluster.hosts if h.name != host.name]
        report = prepare.prepare(ctx.cluster, ctx.prepare_options(), transport=ctx.transport, planned=ctx.prepare_plan(),
                                 checked=[state, *others])
        ctx.facts.forget(host)
        if report.result is not None and not report.result.ok:
            raise _ansible_failure(report.result, f"prepare on {host.name}")
        ctx.say(host.name, f"prepare's roles ran ({state.reason}): {self.target}'s binaries and images", "changed")
        return True


def check(ctx, target: str) -> None:
    """Refused, naming why, when the upgrade must not start."""
    from provision.upgrade.plan import plan

    found = refusals(ctx.cluster.kubernetes_version, target, [], [])
    if found:
        raise Refused(found[0])
    result = plan(ctx, target)
    found = refusals(ctx.cluster.kubernetes_version, target, result.problems, missing_artifacts(ctx.cluster))
    if found:
        raise Refused(found[0])


def plan_lines(upgrade: Upgrade):
    """(host, line) of what apply would do, step by step, from the hosts' facts."""
    from provision.phases.nodes import applied_states
    from provision.phases.objects import live_objects, object_documents
    from provision.kube.live import identity
    from provision.rolling import plan_lines as roll_lines

    ctx, journal = upgrade.ctx, upgrade.journal()
    if journal.resumed:
        yield "local", f"resume the interrupted upgrade to {upgrade.target}: done already: " + ", ".join(
            sorted(name for name in journal.hosts if journal.done(name)))
    if not journal.done(SNAPSHOT):
        yield "local", f"etcd snapshot into {ctx.cluster_dir / 'etcd-backups'}/"
    hosts = [h for h in ctx.cluster.nodes if not journal.done(h.name)]
    states = {s.host: s for s in applied_states(ctx, hosts)}
    for host, line in roll_lines(ctx, hosts, upgrade.roll_spec()):
        if line.startswith(("one control plane", "in a batch")):
            state = states[host]
            yield host, "prepare's roles: " + ("none (this exact state)" if state.current else state.reason)
            line += f"; kubelet restarted until its Node reports {upgrade.target}"
        yield host, line
    if not journal.done(OBJECTS):
        stale = live_objects(ctx).stale(object_documents(ctx))
        yield "local", "apply " + (", ".join("/".join(p for p in identity(d) if p) for d in stale) or "no object (all current)")


def apply(upgrade: Upgrade) -> None:
    from provision import rolling
    from provision.day2 import etcd_backup
    from provision.phases.objects import run_addons, run_upload_config
    from provision.phases.verify import wait_nodes_and_pods

    ctx = upgrade.ctx
    journal = upgrade.journal()
    if journal.resumed:
        ctx.say("local", "resuming the interrupted upgrade: " + ", ".join(
            f"{name} {entry.get('state')}" for name, entry in journal.hosts.items()))
    if not journal.done(SNAPSHOT):
        path = etcd_backup.default_path(ctx.cluster_dir)
        result = etcd_backup.backup(ctx.cluster, ctx.transport, path, lambda host, text: ctx.say(host, text))
        ctx.say("local", f"etcd snapshot: {result.path} (revision {result.revision})", "changed")
        journal.mark(SNAPSHOT, "done", path=str(result.path))
    rolling.roll(ctx, list(ctx.cluster.nodes), upgrade.roll_spec(), journal)
    if not journal.done(OBJECTS):
        run_upload_config(ctx)
        run_addons(ctx)
        journal.mark(OBJECTS, "done")
    # kube-proxy's DaemonSet replaces its pods one node at a time: done when every one runs V's image.
    ctx.kubectl(local=False).run("rollout", "status", "daemonset/kube-proxy", "-n", "kube-system",
                                 f"--timeout={int(ctx.options.node_timeout)}s", timeout=ctx.options.node_timeout + 60)
    wait_nodes_and_pods(ctx, ctx.kubectl(local=False))
    journal.finish()
    ctx.say("local", f"every node and control-plane pod Ready at {upgrade.target}", "ok")
