"""The local PKI phases: certificates and kubeconfigs issued and checked in the cluster directory
(no host is touched)."""

from __future__ import annotations

from provision.errors import KubeprovError
from provision.phases.context import UpContext


def _missing_credentials(ctx: UpContext) -> tuple[int, int]:
    creds = ctx.store.credentials()
    missing = sum(1 for c in creds if not c.path.exists())
    return missing, len(creds)


def run_certs(ctx: UpContext) -> None:
    outcomes = ctx.store.generate()
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.action] = counts.get(o.action, 0) + 1
    ctx.reread_pki()
    ctx.say("local", ", ".join(f"{n} {a}" for a, n in sorted(counts.items())) + f" in {ctx.store.root}")
    stale = [o for o in outcomes if o.action == "stale"]
    if stale:
        raise KubeprovError(f"{len(stale)} certificate(s) no longer match the cluster (first: {stale[0].label}: {stale[0].detail}); "
                            "replace them with `kubeprov certs renew`, then run `up` again")


def plan_certs(ctx: UpContext):
    missing, total = _missing_credentials(ctx)
    yield None, f"issue {missing} of {total} certificates/kubeconfigs (and any missing CA) in {ctx.store.root}; keep the rest"


def run_kubeconfigs(ctx: UpContext) -> None:
    rows, _ = ctx.store.check()
    kubeconfigs = [r for r in rows if r.name.endswith(".conf")]
    broken = [r for r in kubeconfigs if r.problems]
    if broken:
        raise KubeprovError(f"kubeconfig {broken[0].name} ({broken[0].host or 'cluster'}): {broken[0].problems[0]}; "
                            "`kubeprov certs renew` replaces it")
    ctx.say("local", f"{len(kubeconfigs)} kubeconfigs checked; admin kubeconfig: {ctx.store.kubeconfig_path('admin.conf', None)}")


def plan_kubeconfigs(ctx: UpContext):
    yield None, "check every kubeconfig (admin, super-admin, controller-manager, scheduler, kubelet per node) against the cluster"
