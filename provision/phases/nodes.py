"""The phases that make hosts able to run Kubernetes: preflight checks on fresh hosts (the
preflight role's module, sent through the transport: provision/preflight.py), then the roles in
playbooks/ through Ansible: the external etcd members' role, and prepare's node roles (packages,
binaries, images). Each asks the hosts' facts first and runs no Ansible on a host that already
has this exact state."""

from __future__ import annotations

from provision.config.models import Host
from provision.errors import KubeprovError
from provision.phases.context import UpContext


ETCD_PLAYBOOK = """\
# Written by `kubeprov up`: only the external etcd members' role from playbooks/, so etcd comes up
# before (and independently of) the node roles.
- name: external etcd members
  hosts: etcd
  gather_facts: false
  roles:
    - etcd
"""


def _ansible_failure(result, what: str) -> KubeprovError:
    failed = [h for h in result.hosts.values() if h.failed or h.unreachable]
    if not failed:
        return KubeprovError(f"{what} failed: ansible-runner {result.status} (exit {result.rc})")
    # The same cause on many hosts is said once, with the hosts it hit.
    by_cause: dict[str, list[str]] = {}
    for h in failed:
        by_cause.setdefault(h.error.replace(f"{h.host}: ", ""), []).append(h.host)
    return KubeprovError(f"{what} failed: " + "; ".join(f"{', '.join(hosts)}: {cause}" for cause, hosts in by_cause.items()))


def _progress(ctx: UpContext):
    def update(progress, what: str) -> None:
        if what in ("changed", "failed", "unreachable"):
            ctx.say(progress.host, progress.task if what == "changed" else progress.error, what)
        elif what == "warning":  # what a role could not do there (a bundle without crictl…)
            ctx.say(progress.host, progress.warnings[-1], what)

    return update


def run_preflight(ctx: UpContext) -> None:
    """The preflight role's check on every fresh host at once, through the transport
    (provision/preflight.py): one failing host stops the run before any host changes."""
    from provision import preflight

    ctx.prepare_plan()  # the bundle verified (and any download checked) before a host is asked anything
    fresh = fresh_hosts(ctx)
    verdicts = preflight.check(ctx.transport, ctx.cluster, fresh, swapoff=ctx.options.swapoff, parallel=ctx.options.parallel)
    for verdict in verdicts:
        for note in verdict.notes:
            ctx.say(verdict.host, note, "warning")
    failed = [v for v in verdicts if v.problems]
    for verdict in failed:
        ctx.say(verdict.host, "; ".join(verdict.problems), "failed")
    if failed:
        raise KubeprovError("preflight failed: " + "; ".join(f"{v.host}: {'; '.join(v.problems)}" for v in failed))
    for host in ctx.cluster.hosts:
        ctx.say(host.name, "checks passed" if host in fresh else "in the cluster already: not checked (its ports are in use by design)")


def fresh_hosts(ctx: UpContext) -> list[Host]:
    """Hosts whose kubelet kubeprov has not started yet: preflight is for them. On a member, the
    checks would fail by design (its API server and kubelet hold the ports preflight wants free)."""
    if not ctx.pki_exists():
        return list(ctx.cluster.hosts)  # no CA yet, so no host can have joined (and none is asked)
    return [h for h in ctx.cluster.hosts if not ctx.joined(h)]


def plan_preflight(ctx: UpContext):
    for host in fresh_hosts(ctx):
        yield host.name, "preflight checks (swap, ports, kernel modules, memory/CPU, OS, cgroups, time)"


def applied_states(ctx: UpContext, hosts: list[Host]):
    """prepare's no-op check (provision/ansible/applied.py) from the hosts' facts."""
    from provision.ansible import applied
    from provision.transport import fan_out

    plans, _, _ = ctx.prepare_plan()
    outcomes = fan_out(hosts, lambda h: applied.compare(plans[h.name], ctx.facts(h).applied(), ctx.facts(h).services()),
                       parallel=ctx.options.parallel)
    return [o.value if o.ok else applied.HostState(o.host, False, f"cannot read its state: {o.error_text}") for o in outcomes]


def run_prepare(ctx: UpContext) -> None:
    from provision import prepare

    states = applied_states(ctx, ctx.cluster.hosts)
    report = prepare.prepare(ctx.cluster, ctx.prepare_options(), _progress(ctx), transport=ctx.transport,
                             planned=ctx.prepare_plan(), checked=states)
    for state in states:
        if not state.current:
            ctx.facts.forget(state.host)  # the roles ran there (or were to): read it again when next asked
    if report.skipped:
        ctx.say("all", f"every host already has this exact state; Ansible not run ({report.seconds:.1f}s)")
        return
    if not report.result.ok:
        raise _ansible_failure(report.result, "prepare")
    for name, progress in report.result.hosts.items():
        ctx.say(name, f"{progress.changed} changed, {progress.ok} ok")
    slowest = report.result.slowest_tasks(4)
    if slowest:
        ctx.say("local", "slowest tasks: " + ", ".join(f"{task} {seconds:.1f}s" for task, seconds in slowest))


def _plan_roles(ctx: UpContext, hosts: list[Host], roles_of):
    """Per host: the roles Ansible would run and why, or that it has this exact state (its facts)."""
    if not ctx.pki_exists():  # a first run: the hosts are not asked (nor can prepare's plan carry etcd's certificates)
        for host in hosts:
            yield host.name, f"run roles {', '.join(roles_of(host))} (a first run: unless the host has this exact state)"
        return
    for state, host in zip(applied_states(ctx, hosts), hosts):
        if state.current:
            yield host.name, "has this exact state: no Ansible"
        else:
            yield host.name, f"run roles {', '.join(roles_of(host))}: {state.reason}"


def plan_prepare(ctx: UpContext):
    from provision.ansible.inventory import roles_for

    yield from _plan_roles(ctx, ctx.cluster.hosts, lambda h: roles_for(ctx.cluster, h)[1:])


def run_etcd_install(ctx: UpContext) -> None:
    from provision.ansible.runner import run_playbook
    from provision.fsutil import atomic_write, ensure_private_dir

    _, _, inventory = ctx.prepare_plan()
    members = ctx.cluster.etcd_members
    # Members that prepare already brought to this exact state (its record, services active) need no Ansible.
    states = applied_states(ctx, members)
    if all(state.current for state in states):
        for h in members:
            ctx.say(h.name, "etcd member already has this exact state; Ansible not run")
        return
    # Only the members that lack it run the role, as in prepare: the others were checked just now.
    targets = [h.name for h, state in zip(members, states) if not state.current]
    playbook = ensure_private_dir(ctx.cluster_dir / "up") / "etcd.yml"
    atomic_write(playbook, ETCD_PLAYBOOK.encode(), 0o644, replace=True)
    result = run_playbook(str(playbook.resolve()), inventory, targets, on_update=_progress(ctx), forks=ctx.options.parallel,
                          work_dir=inventory.parent, limit=",".join(targets) if len(targets) < len(members) else None)
    for name in targets:
        ctx.facts.forget(name)
    if not result.ok:
        raise _ansible_failure(result, "etcd install")
    for h in members:
        if h.name not in targets:
            ctx.say(h.name, "etcd member already has this exact state; Ansible not run")
            continue
        p = result.hosts[h.name]
        ctx.say(h.name, f"etcd role: {p.changed} changed, {p.ok} ok", "changed" if p.changed else "ok")


def plan_etcd(ctx: UpContext):
    yield from _plan_roles(ctx, ctx.cluster.etcd_members, lambda h: ["etcd"])
