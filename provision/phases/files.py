"""The phases that own the files on the hosts: render (local), sync (every rendered file pushed
through the transport, the one writer of them: phases/writer.py) and finalize (the steady state on
hosts that joined in this run). Which stage a host's files are in is render/stages.py."""

from __future__ import annotations

import time
from pathlib import PurePosixPath

from provision.config.models import Host, Role
from provision.errors import KubeprovError
from provision.phases.context import UpContext
from provision.phases.facts import JOINED_MARKER
from provision.phases.writer import pending, push_tree
from provision.render.stages import staged
from provision.render.tree import File


def run_render(ctx: UpContext) -> None:
    from provision.render.diff import CLUSTER_DIR
    from provision.render.tree import write_trees

    trees, objects = ctx.rendered()
    out = dict(trees)
    out[CLUSTER_DIR] = {PurePosixPath("/") / name: File(data, 0o644) for name, data in objects.items()}
    written = write_trees(ctx.cluster_dir / "rendered", out)
    for name, tree in sorted(trees.items()):
        ctx.say(name, f"{len(tree)} files")
    ctx.say("local", f"{len(written)} files written under {ctx.cluster_dir / 'rendered'}")


def plan_render(ctx: UpContext):
    yield None, f"render every host's files and the cluster objects under {ctx.cluster_dir / 'rendered'} (local only)"


def desired_tree(ctx: UpContext, host: Host, *, joined: bool | None = None) -> dict:
    """What sync pushes to `host`: every rendered file (the transport is their one writer; the
    roles that act on some of them run after it)."""
    trees, _ = ctx.rendered()
    return staged(ctx.cluster, host, trees[host.name], joined=ctx.joined(host) if joined is None else joined)


def mark_joined(ctx: UpContext, host: Host) -> None:
    """The host is in the cluster (its kubelet, or its external etcd, runs): its marker, so later
    runs give it no preflight and the steady-state files."""
    if host.name in ctx.marked_joined:
        return
    if push_tree(ctx, host, {PurePosixPath(JOINED_MARKER): File(b"this node's kubelet was started by kubeprov up\n", 0o644)}):
        ctx.newly_joined.add(host.name)
    ctx.marked_joined.add(host.name)


def rolled_hosts(ctx: UpContext) -> list[Host]:
    """Nodes of a running cluster whose file changes restart something there: joined, their
    kubelet running, and files that differ whose readers restart (the kubelet, a static pod:
    rolling.restarts). They are rolled (provision/rolling.py), not pushed all at once: a config
    change must not restart every control plane's API server together. A change that restarts
    nothing is pushed in place as on any host: the bridge CNI's routes unit when a node is added
    (run again by the control-plane phase: kubelet.refresh_pod_routes) would otherwise drain every
    worker and move its pods for nothing. A fresh cluster has none."""
    from provision.rolling import restarts

    if not ctx.pki_exists():
        return []
    found = []
    for host in ctx.cluster.nodes:
        if not (ctx.joined(host) and ctx.facts(host).units["kubelet"].running):
            continue
        tree = desired_tree(ctx, host)
        changed = [c.path for c in pending(ctx, host, tree) if c.what != "mode"]
        if changed and restarts(tree, changed):
            found.append(host)
    return found


def _roll(ctx: UpContext):
    from provision.phases.context import fingerprint
    from provision.phases.journal import HostJournal
    from provision.rolling import Roll

    journal = HostJournal.open(ctx.cluster_dir / ROLL_JOURNAL, "up:" + fingerprint(ctx.cluster))
    return Roll(tree=lambda h: desired_tree(ctx, h)), journal


ROLL_JOURNAL = "rolling.json"  # the hosts an interrupted roll of `up` finished, and what the others owe


def version_changes(ctx: UpContext) -> dict[str, str]:
    """Hosts in the cluster whose prepare record names another Kubernetes version than the
    cluster file: name → that version. A version change is an upgrade, which `up` must not do
    by pushing the new manifests (their images are not on the hosts yet) and running prepare on
    every host at once: `kubeprov upgrade apply` rolls it, one control plane at a time."""
    found = {}
    for host in ctx.cluster.nodes:
        if not ctx.joined(host):
            continue
        recorded = ((ctx.facts(host).applied() or {}).get("settings") or {}).get("kubernetesVersion")
        if recorded and recorded != ctx.cluster.kubernetes_version:
            found[host.name] = recorded
    return found


def refuse_version_change(ctx: UpContext) -> None:
    changed = version_changes(ctx)
    if changed:
        name, running = sorted(changed.items())[0]
        target = ctx.cluster.kubernetes_version
        raise KubeprovError(f"{name}: runs Kubernetes {running} and the cluster file says {target}: that is an upgrade, "
                            f"which up does not do; see `kubeprov upgrade plan --version {target}`, then "
                            f"`kubeprov upgrade apply --version {target}` (nothing was changed)")


def run_sync(ctx: UpContext) -> None:
    from provision import rolling
    from provision.transport import fan_out

    refuse_version_change(ctx)
    spec, journal = _roll(ctx)
    rolled = {h.name for h in rolled_hosts(ctx)} | {name for name in journal.hosts if not journal.done(name)}
    rolled &= {h.name for h in ctx.cluster.nodes}
    outcomes = fan_out([h for h in ctx.cluster.hosts if h.name not in rolled], lambda h: push_tree(ctx, h, desired_tree(ctx, h)),
                       parallel=ctx.options.parallel)
    failed = [o for o in outcomes if not o.ok]
    for o in outcomes:
        if o.ok:
            ctx.say(o.host, f"{len(o.value)} files changed" if o.value else "unchanged", "changed" if o.value else "ok")
        else:
            ctx.say(o.host, o.error_text, "failed")
    if failed:
        raise KubeprovError(f"sync failed on {', '.join(o.host for o in failed)}: {failed[0].error_text}")
    if rolled:
        ctx.say("local", f"rolling {', '.join(sorted(rolled))}: control planes one at a time, workers drained in batches")
        rolling.roll(ctx, [h for h in ctx.cluster.hosts if h.name in rolled], spec, journal)
    journal.finish()


def _change_lines(host: Host, found: list):
    verb = {"created": "create", "content": "replace", "mode": "chmod/chown"}
    for change in found:
        yield host.name, f"{verb[change.what]} {change.path}"


def plan_sync(ctx: UpContext):
    if not ctx.pki_exists():
        for host in ctx.cluster.hosts:
            yield host.name, "push its rendered files (manifests, kubeconfigs, PKI, HA, CNI) once certs exist"
        return
    from provision import rolling

    refuse_version_change(ctx)
    rolled = rolled_hosts(ctx)
    for host in ctx.cluster.hosts:
        if host in rolled:
            continue
        tree = desired_tree(ctx, host)
        found = pending(ctx, host, tree)
        yield host.name, f"{len(tree)} files: {len(found)} to change" if found else f"{len(tree)} files: unchanged"
        yield from _change_lines(host, found)
    if rolled:
        yield from rolling.plan_lines(ctx, rolled, _roll(ctx)[0])


def plan_finalize(ctx: UpContext):
    """Hosts that join in this run (not joined now) get their steady-state files after."""
    for host in ctx.cluster.hosts:
        if not ctx.pki_exists() or ctx.joined(host):
            continue
        from provision.transport.ssh import Change

        bootstrap, steady = desired_tree(ctx, host, joined=False), desired_tree(ctx, host, joined=True)
        later = sorted(p for p, f in steady.items() if bootstrap.get(p) != f)
        yield from _change_lines(host, [Change(str(p), "content" if p in bootstrap else "created") for p in later])


def run_finalize(ctx: UpContext) -> None:
    """Steady-state files on the hosts that joined in this run (sync gave the others theirs);
    control planes one at a time, each API back before the next."""
    for host in ctx.cluster.hosts:
        if host.name not in ctx.newly_joined:
            continue
        changes = push_tree(ctx, host, desired_tree(ctx, host, joined=True))
        if changes:
            ctx.say(host.name, f"{len(changes)} files to steady state: {', '.join(c.path for c in changes[:4])}", "changed")
            if host.has(Role.CONTROL_PLANE):
                time.sleep(5)  # let the kubelet notice the manifest before asking the API again
                ctx.kubectl(host).wait_ready(ctx.options.api_timeout)
