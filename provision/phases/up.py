"""The phases of `kubeprov up`, in order, and the context they share.

    certs → kubeconfigs → preflight → render → sync → etcd (external: install, health) → prepare
    → control-plane → upload-config → bootstrap-token → rbac → mark-control-plane → addons
    → control-plane-join → workers → finalize → verify

Why this order (it differs from the issue's sketch in three places, each for a reason):
- certs and kubeconfigs come before preflight: prepare's inventory carries the external etcd
  members' certificates, so the PKI must exist before the first Ansible run; issuing it touches
  only the local cluster directory.
- sync pushes every rendered file that prepare's roles do not place (the complement of prepare's
  own tree, so each file has exactly one writer: docs/architecture.md); it runs before prepare
  because none of its files need a package (manifests, kubeconfigs, PKI, HA and CNI files).
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
the cluster; `finalize` gives hosts that joined in this run their post-bootstrap files (kube-vip
on admin.conf).
"""

from __future__ import annotations

import hashlib
import json
import shlex
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath


from provision.config.models import CNI, Cluster, EtcdTopology, Host, LoadBalancerMode, Role
from provision.errors import KubeprovError
from provision.kube.kubectl import ADMIN_CONF, SUPER_ADMIN_CONF, Kubectl, changed
from provision.kube.live import LiveObjects, documents
from provision.phases.facts import JOINED_MARKER, KUBELET_BINARY, Facts
from provision.render.tree import File
from provision.phases.phase import Phase, Step
from provision.phases.runner import Reporter

MISSING = 44
RUNNING = 45
ETCD_PKI = "/etc/kubernetes/pki/etcd"
ETCD_PLAYBOOK = """\
# Written by `kubeprov up`: only the external etcd members' role from playbooks/, so etcd comes up
# before (and independently of) the node roles.
- name: external etcd members
  hosts: etcd
  gather_facts: false
  roles:
    - etcd
"""


@dataclass(frozen=True)
class UpOptions:
    bundle: Path | None = None
    known_hosts: Path = Path("~/.ssh/known_hosts")
    lab: bool = False
    swapoff: bool = False
    parallel: int = 20
    api_timeout: float = 300.0
    node_timeout: float = 300.0


@dataclass
class UpContext:
    cluster: Cluster
    options: UpOptions
    transport: object  # provision.transport.Transport
    reporter: Reporter = field(default_factory=Reporter)
    step: Step | None = None
    _material: object = None
    _rendered: tuple | None = None
    _joined: dict[str, bool] = field(default_factory=dict)  # hosts this run marked joined
    newly_joined: set[str] = field(default_factory=set)  # hosts whose kubelet this run started
    _prepare_plan: tuple | None = None
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

    @property
    def material(self):
        if self._material is None:
            from provision.pki.store import read_material

            self._material = read_material(self.store)
        return self._material

    @cached_property
    def live_objects(self) -> LiveObjects:
        """The object phases' objects as the API has them, read once when first asked."""
        return LiveObjects(self.kubectl(bootstrap=True), object_documents(self), read=not self.fresh_api)

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
        return Facts(self.transport, self.cluster.hosts, lambda h: sorted(str(p) for p in placed_paths(self, h)),
                     parallel=self.options.parallel)

    def joined(self, host: Host) -> bool:
        return self._joined.get(host.name) or self.facts(host).joined

    def mark_joined(self, host: Host) -> None:
        if self._joined.get(host.name):
            return
        if _push(self, host, {PurePosixPath(JOINED_MARKER): File(b"this node's kubelet was started by kubeprov up\n", 0o644)}):
            self.newly_joined.add(host.name)
        self._joined[host.name] = True


def fingerprint(cluster: Cluster) -> str:
    """What the journal ties a run to: the loaded cluster spec."""
    return hashlib.sha256(cluster.model_dump_json(by_alias=True).encode()).hexdigest()[:16]


def _check(ctx: UpContext, host: Host, command: str, what: str, timeout: float | None = None):
    result = ctx.transport.run(host, command, timeout=timeout)
    if not result.ok:
        raise KubeprovError(f"{host.name}: {what} failed (exit {result.exit_code}): {result.summary()}")
    return result


# --- certs, kubeconfigs ---------------------------------------------------------------------


def _missing_credentials(ctx: UpContext) -> tuple[int, int]:
    creds = ctx.store.credentials()
    missing = sum(1 for c in creds if not c.path.exists())
    return missing, len(creds)


def run_certs(ctx: UpContext) -> None:
    outcomes = ctx.store.generate()
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.action] = counts.get(o.action, 0) + 1
    ctx._material = None
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


# --- preflight, prepare (Ansible roles in playbooks/) ---------------------------------------


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

    return update


def run_preflight(ctx: UpContext) -> None:
    from provision.ansible.runner import run_playbook

    _, _, inventory = ctx.prepare_plan()
    fresh = fresh_hosts(ctx)
    result = run_playbook("preflight.yml", inventory, [h.name for h in fresh], on_update=_progress(ctx),
                          forks=ctx.options.parallel, work_dir=inventory.parent, limit=",".join(h.name for h in fresh))
    if not result.ok:
        raise _ansible_failure(result, "preflight")
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


def plan_prepare(ctx: UpContext):
    from provision.ansible.inventory import roles_for

    for host in ctx.cluster.hosts:
        yield host.name, "roles " + ", ".join(roles_for(ctx.cluster, host)[1:]) + " (skipped when the host's applied state matches)"


# --- render, sync ---------------------------------------------------------------------------


def run_render(ctx: UpContext) -> None:
    from provision.render.diff import CLUSTER_DIR
    from provision.render.tree import File, write_trees

    trees, objects = ctx.rendered()
    out = dict(trees)
    out[CLUSTER_DIR] = {PurePosixPath("/") / name: File(data, 0o644) for name, data in objects.items()}
    written = write_trees(ctx.cluster_dir / "rendered", out)
    for name, tree in sorted(trees.items()):
        ctx.say(name, f"{len(tree)} files")
    ctx.say("local", f"{len(written)} files written under {ctx.cluster_dir / 'rendered'}")


def plan_render(ctx: UpContext):
    yield None, f"render every host's files and the cluster objects under {ctx.cluster_dir / 'rendered'} (local only)"


def bootstrap_overrides(cluster: Cluster, host: Host, joined: bool) -> dict:
    """The files that differ from the rendered steady state while the cluster is being built:
    kube-vip's variant once the host has joined (super-admin.conf until kubeadm:cluster-admins exists).
    (What a joining host gets only later is render/control_plane.py: after_local_etcd_votes.)"""
    from provision.render.ha import render_kube_vip_after_bootstrap

    return render_kube_vip_after_bootstrap(cluster, host) if joined else {}


def desired_tree(ctx: UpContext, host: Host, *, joined: bool | None = None) -> dict:
    """What sync pushes to `host`: every rendered file (the transport is their one writer; the
    roles that act on some of them run after it)."""
    from provision.render.control_plane import after_local_etcd_votes

    trees, _ = ctx.rendered()
    joined = ctx.joined(host) if joined is None else joined
    tree = {path: f for path, f in trees[host.name].items() if joined or path not in after_local_etcd_votes(ctx.cluster, host)}
    tree.update(bootstrap_overrides(ctx.cluster, host, joined))
    return tree


def placed_paths(ctx: UpContext, host: Host) -> set[PurePosixPath]:
    """Every path this run may place on `host`: its rendered files in either stage, and the joined marker."""
    trees, _ = ctx.rendered()
    return {*trees[host.name], *bootstrap_overrides(ctx.cluster, host, True), PurePosixPath(JOINED_MARKER)}


def _push(ctx: UpContext, host: Host, tree: dict) -> list:
    """The one writer: `tree` onto `host`, comparing with the states its facts hold (a changed
    host's facts are read again when next asked)."""
    changes = ctx.transport.push(host, {str(p): (f.content, f.mode) for p, f in tree.items()}, known=ctx.facts(host).files)
    if changes:
        ctx.facts.forget(host)
    return changes


def run_sync(ctx: UpContext) -> None:
    from provision.transport import fan_out

    outcomes = fan_out(ctx.cluster.hosts, lambda h: _push(ctx, h, desired_tree(ctx, h)), parallel=ctx.options.parallel)
    failed = [o for o in outcomes if not o.ok]
    for o in outcomes:
        if o.ok:
            ctx.say(o.host, f"{len(o.value)} files changed" if o.value else "unchanged", "changed" if o.value else "ok")
        else:
            ctx.say(o.host, o.error_text, "failed")
    if failed:
        raise KubeprovError(f"sync failed on {', '.join(o.host for o in failed)}: {failed[0].error_text}")


def plan_sync(ctx: UpContext):
    if not ctx.pki_exists():
        for host in ctx.cluster.hosts:
            yield host.name, "push its rendered files (manifests, kubeconfigs, PKI, HA, CNI) once certs exist"
        return
    for host in ctx.cluster.hosts:
        tree = desired_tree(ctx, host)
        states = ctx.facts(host).files
        new = [p for p in tree if states[str(p)] is None]
        differ = [p for p in tree if states[str(p)] is not None
                  and states[str(p)].sha256 != hashlib.sha256(tree[p].content).hexdigest()]
        yield host.name, f"{len(tree)} files: {len(new)} to create, {len(differ)} to replace, {len(tree) - len(new) - len(differ)} unchanged"
        for path in sorted(new + differ)[:40]:
            yield host.name, f"  {'create ' if path in new else 'replace'} {path}"


# --- etcd -----------------------------------------------------------------------------------


def external(ctx: UpContext) -> bool:
    return ctx.cluster.etcd.topology is EtcdTopology.EXTERNAL


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
    playbook = ensure_private_dir(ctx.cluster_dir / "up") / "etcd.yml"
    atomic_write(playbook, ETCD_PLAYBOOK.encode(), 0o644, replace=True)
    result = run_playbook(str(playbook.resolve()), inventory, [h.name for h in members], on_update=_progress(ctx),
                          forks=ctx.options.parallel, work_dir=inventory.parent)
    for h in members:
        ctx.facts.forget(h)
    if not result.ok:
        raise _ansible_failure(result, "etcd install")
    for h in members:
        p = result.hosts[h.name]
        ctx.say(h.name, f"etcd role: {p.changed} changed, {p.ok} ok", "changed" if p.changed else "ok")


def etcdctl(cluster: Cluster, *args: str) -> str:
    from provision.render.etcd import client_url

    endpoints = ",".join(client_url(m.advertise_address) for m in cluster.etcd_members)
    return shlex.join(["env", "ETCDCTL_API=3", "etcdctl", f"--endpoints={endpoints}", f"--cacert={ETCD_PKI}/ca.crt",
                       f"--cert={ETCD_PKI}/healthcheck-client.crt", f"--key={ETCD_PKI}/healthcheck-client.key",
                       "--command-timeout=5s", *args])


def run_etcd_health(ctx: UpContext, timeout: float = 60.0) -> None:
    host = ctx.cluster.etcd_members[0]
    members = ctx.cluster.etcd_members
    deadline = time.monotonic() + timeout
    while True:
        result = ctx.transport.run(host, etcdctl(ctx.cluster, "endpoint", "health", "-w", "json"), timeout=30)
        healthy = []
        try:
            healthy = [e["endpoint"] for e in json.loads(result.stdout or "[]") if e.get("health")]
        except ValueError:
            pass
        if len(healthy) == len(members):
            break
        if time.monotonic() > deadline:
            raise KubeprovError(f"etcd is not healthy: {len(healthy)} of {len(members)} members answer "
                                f"({result.summary() or 'no output'})")
        time.sleep(1)
    for m in members:
        ctx.say(m.name, "etcd member healthy")
        if not m.has(Role.CONTROL_PLANE) and not m.has(Role.WORKER) and not ctx.joined(m):
            ctx.mark_joined(m)  # a member now: later runs give it no preflight (its etcd holds the ports by design)


def plan_etcd(ctx: UpContext):
    for m in ctx.cluster.etcd_members:
        yield m.name, "install etcd (role etcd), start the unit, wait until every member is healthy over TLS"


# --- kubelets and the API -------------------------------------------------------------------


def start_kubelet(ctx: UpContext, host: Host) -> bool:
    """True when it started the kubelet (False: it was running already)."""
    from provision.render.cni.bridge import ROUTES_UNIT

    names = ["kubelet"] + ([ROUTES_UNIT.name] if ctx.cluster.cni is CNI.BRIDGE else [])
    units = " ".join(names)
    facts = ctx.facts(host)
    if facts.kubelet_binary and all(facts.units[u].running for u in names):
        ctx.say(host.name, f"{units} running")
        return False
    # One round trip: refuse without a binary; leave running units alone (a re-run restarts nothing).
    # Each unit asked on its own: `is-active a b` succeeds when any one of them is active.
    running = " && ".join(f"systemctl is-active --quiet {u} && systemctl is-enabled --quiet {u}" for u in names)
    probe = ctx.transport.run(host, f"test -x {KUBELET_BINARY} || exit {MISSING}; {running} && exit {RUNNING}; "
                                    f"systemctl daemon-reload && systemctl enable --now {units}")
    if probe.exit_code == MISSING:
        raise KubeprovError(
            f"{host.name}: no kubelet binary at {KUBELET_BINARY}: the artifact source has none. Real Kubernetes "
            "binaries come from an offline bundle (bin/kubelet, `--bundle DIR` or artifacts.source: bundle) or the "
            "package repositories; then run `kubeprov up` again (it resumes here)")
    if probe.exit_code == RUNNING:
        ctx.say(host.name, f"{units} running")
        return False
    if not probe.ok:
        raise KubeprovError(f"{host.name}: starting the kubelet failed (exit {probe.exit_code}): {probe.summary()}")
    ctx.facts.forget(host)
    ctx.say(host.name, f"started {units}", "changed")
    return True


def wait_node(ctx: UpContext, host: Host, timeout: float) -> dict:
    """The host's Node object, once its kubelet has registered it."""
    kubectl = ctx.kubectl()
    deadline = time.monotonic() + timeout
    while True:
        result = kubectl.run("get", "node", host.name, "-o", "json", check=False)
        if result.ok:
            return result.json(f"kubectl get node {host.name} -o json")
        if time.monotonic() > deadline:
            raise KubeprovError(f"{host.name}: its node did not register within {timeout:g} s; see `journalctl -u kubelet` there")
        time.sleep(1)


def run_first_control_plane(ctx: UpContext) -> None:
    from provision.transport import fan_out

    host = ctx.cluster.first_control_plane
    # A control plane whose kubelet starts now has (nearly always) an empty API: the object phases
    # then apply without reading first. Were its etcd older, apply still finds what exists.
    ctx.fresh_api = start_kubelet(ctx, host)
    # Workers need nothing from the API to start (their kubelet.conf is signed by the local CA): their
    # kubelets start now and register as soon as it answers, instead of after the control plane.
    waiting = [w for w in ctx.cluster.workers if not ctx.joined(w)]
    failed = [o for o in fan_out(waiting, lambda w: start_kubelet(ctx, w), parallel=ctx.options.parallel) if not o.ok]
    if failed:
        raise KubeprovError("starting workers' kubelets failed: " + "; ".join(f"{o.host}: {o.error_text}" for o in failed))
    seconds = ctx.kubectl(host, bootstrap=True).wait_ready(ctx.options.api_timeout)
    ctx.say(host.name, f"API server ready (/readyz ok after {seconds:.1f}s)")
    if not ctx.joined(host):  # its kubelet started in this run
        ensure_mirror_pods(ctx, host)  # now, not at mark-control-plane: a restart overlaps the phases between


def _apply(ctx: UpContext, docs: list[dict]) -> None:
    """Apply what is not current already (provision/kube/live.py): a run with nothing to do
    reads the objects once instead of applying them phase by phase."""
    stale = ctx.live_objects.stale(docs)
    moved = changed(ctx.kubectl(bootstrap=True).apply(stale)) if stale else []
    ctx.say(ctx.cluster.first_control_plane.name,
            f"{len(docs)} objects, {len(moved)} changed" + (f": {', '.join(moved[:6])}" if moved else ""),
            "changed" if moved else "ok")


def upload_config_documents(ctx: UpContext) -> list[dict]:
    _, objects = ctx.rendered()
    return documents(objects["kubeadm-config.yaml"]) + documents(objects["kubelet-config.yaml"])


def run_upload_config(ctx: UpContext) -> None:
    _apply(ctx, upload_config_documents(ctx))


def object_documents(ctx: UpContext) -> list[dict]:
    """Every object the object phases apply, for one read of them all (the token's Secret only
    when a token is saved: a new one is not there to read)."""
    from provision.bootstrap.rbac import rbac_objects

    token = saved_token(ctx)
    return [*upload_config_documents(ctx), *(bootstrap_token_documents(ctx, token) if token else []),
            *rbac_objects(ctx.cluster), *addon_documents(ctx)]


def saved_token(ctx: UpContext):
    """The join token saved in the cluster directory (0600), or None."""
    from provision.bootstrap.token import BootstrapToken, parse_rfc3339

    path = ctx.cluster_dir / "bootstrap-token.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return BootstrapToken.parse(data["token"], description=data.get("description", ""),
                                expires=parse_rfc3339(data["expires"]) if data.get("expires") else None)


def ensure_token(ctx: UpContext):
    """This cluster's join token: the saved one while it has an hour left, so a re-run changes
    nothing; a new one (saved) otherwise."""
    import datetime as dt

    from provision.bootstrap.token import INIT_DESCRIPTION, BootstrapToken, rfc3339
    from provision.fsutil import PRIVATE_FILE_MODE, atomic_write

    now = dt.datetime.now(dt.timezone.utc)
    token = saved_token(ctx)
    if token and not token.expired(now + dt.timedelta(hours=1)):
        return token
    token = BootstrapToken.generate(description=INIT_DESCRIPTION, now=now)
    record = {"token": token.token, "description": token.description, "expires": rfc3339(token.expires)}
    atomic_write(ctx.cluster_dir / "bootstrap-token.json", (json.dumps(record) + "\n").encode(), PRIVATE_FILE_MODE, replace=True)
    return token


def bootstrap_token_documents(ctx: UpContext, token) -> list[dict]:
    """The token's Secret and cluster-info signed with it."""
    from provision.bootstrap.discovery import signed_cluster_info

    _, objects = ctx.rendered()
    signed = signed_cluster_info(ctx.cluster, ctx.material, [token])
    return [token.secret_object(), *(signed if d["kind"] == "ConfigMap" else d for d in documents(objects["cluster-info.yaml"]))]


def run_bootstrap_token(ctx: UpContext) -> None:
    token = ensure_token(ctx)
    _apply(ctx, bootstrap_token_documents(ctx, token))
    ctx.say("local", f"token {token.id}.<secret> expires {token.expires:%Y-%m-%d %H:%M}Z; `kubeprov join-command` prints it")


def run_rbac(ctx: UpContext) -> None:
    from provision.bootstrap.rbac import rbac_objects
    from provision.render.ha import render_kube_vip_after_bootstrap

    _apply(ctx, rbac_objects(ctx.cluster))
    first = ctx.cluster.first_control_plane
    if ctx.cluster.load_balancer_mode is LoadBalancerMode.KUBE_VIP:
        # kubeadm:cluster-admins is bound: kube-vip on the first control plane drops super-admin.conf.
        changes = _push(ctx, first, render_kube_vip_after_bootstrap(ctx.cluster, first))
        if changes:
            ctx.say(first.name, "kube-vip now uses admin.conf", "changed")
    ctx.mark_joined(first)


CRI_SOCKET_ANNOTATION = "kubeadm.alpha.kubernetes.io/cri-socket"


def annotate_cri_socket(ctx: UpContext, host: Host, node: dict) -> None:
    """kubeadm's per-node record of its CRI socket: kubeadm's own commands (upgrade, certs,
    join) read a node's registration from it and fall back to defaults without it."""
    from provision.render.kubelet import CONTAINERD_ENDPOINT

    if node["metadata"].get("annotations", {}).get(CRI_SOCKET_ANNOTATION) != CONTAINERD_ENDPOINT:
        ctx.kubectl(bootstrap=True).run("annotate", "node", host.name, "--overwrite", f"{CRI_SOCKET_ANNOTATION}={CONTAINERD_ENDPOINT}")
        ctx.say(host.name, f"annotated {CRI_SOCKET_ANNOTATION}", "changed")


CONTROL_PLANE_LABELS = ("node-role.kubernetes.io/control-plane", "node.kubernetes.io/exclude-from-external-load-balancers")
CONTROL_PLANE_TAINT = "node-role.kubernetes.io/control-plane"


def mark_control_plane(ctx: UpContext, host: Host) -> None:
    """kubeadm's mark-control-plane: its labels, and its NoSchedule taint unless it is also a worker.
    Only what the Node lacks is changed."""
    kubectl = ctx.kubectl(bootstrap=True)
    node = wait_node(ctx, host, ctx.options.node_timeout)
    labels = node["metadata"].get("labels", {})
    missing = [f"{key}=" for key in CONTROL_PLANE_LABELS if labels.get(key) != ""]
    taint = not host.has(Role.WORKER) and not any(
        t.get("key") == CONTROL_PLANE_TAINT and t.get("effect") == "NoSchedule" for t in node["spec"].get("taints", []))
    annotate_cri_socket(ctx, host, node)
    if missing:
        kubectl.run("label", "node", host.name, "--overwrite", *missing)
    if taint:
        kubectl.run("taint", "node", host.name, "--overwrite", f"{CONTROL_PLANE_TAINT}:NoSchedule")
    if missing or taint:
        ctx.say(host.name, "labelled control-plane" + (", tainted NoSchedule" if taint else ""), "changed")
    else:
        ctx.say(host.name, "control-plane labels and taint in place")


def ensure_mirror_pods(ctx: UpContext, host: Host) -> None:
    """A kubelet creates a static pod's mirror pod when it syncs the pod, and only once its Node
    exists and the API server admits it (the system-node-critical PriorityClass that the API server
    creates as it starts); after that, only when the pod is next synced: when a probe result
    changes, else at its resync, up to a minute later. On a control plane both may come after the
    2 s startup probes have passed. A kubelet restart syncs every pod at once (containers keep
    running), so the mirror pods appear now.

    Before the restart the Node's Ready goes Unknown (true while no kubelet runs): a restarted
    kubelet reports a Node it last saw Ready only at its next status period (10 s), one that is
    not Ready through its start-up fast path as soon as it is."""
    expected = set(expected_static_pods(ctx.cluster, host))
    wait_node(ctx, host, ctx.options.node_timeout)
    kubectl = ctx.kubectl(bootstrap=True)
    deadline = time.monotonic() + MIRROR_GRACE
    while True:
        listed = kubectl.run("get", "pods", "-n", "kube-system", f"--field-selector=spec.nodeName={host.name}", "-o", "name")
        missing = expected - {line.removeprefix("pod/") for line in listed.stdout.split()}
        if not missing:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)  # a sync may be creating them right now
    unknown = {"status": {"conditions": [{"type": "Ready", "status": "Unknown", "reason": "KubeletRestarting",
                                          "message": "kubeprov restarts the kubelet to create its mirror pods"}]}}
    kubectl.run("patch", "node", host.name, "--subresource=status", "--type=strategic", "-p", json.dumps(unknown))
    _check(ctx, host, "systemctl restart kubelet", "restarting the kubelet")
    ctx.say(host.name, f"kubelet restarted to create the mirror pods of {', '.join(sorted(missing))}", "changed")


MIRROR_GRACE = 1.0  # seconds a control plane's mirror pods may still take before its kubelet is restarted


def run_mark_control_plane(ctx: UpContext) -> None:
    mark_control_plane(ctx, ctx.cluster.first_control_plane)


ADDON_FILES = ("kube-proxy.yaml", "coredns.yaml")


def addon_documents(ctx: UpContext) -> list[dict]:
    _, objects = ctx.rendered()
    cni = sorted(name for name in objects if name.startswith("cni-"))
    return [doc for name in (*ADDON_FILES, *cni) for doc in documents(objects[name])]


def run_addons(ctx: UpContext) -> None:
    _apply(ctx, addon_documents(ctx))


def etcd_member_add(ctx: UpContext, host: Host) -> str | None:
    """Add `host` to the stacked etcd, as a learner, through the first member; its member ID while
    it is a learner still to promote (also one a failed run left), None once it votes."""
    from provision.kube import etcd_members
    from provision.render.etcd import peer_url

    first = ctx.cluster.first_control_plane
    url = peer_url(host.advertise_address)
    known = next((m for m in etcd_members.members(ctx.transport, first) if url in m.peer_urls), None)
    if known and not known.learner:
        ctx.say(host.name, "already an etcd member")
        return None
    if known:
        return known.id
    member_id = etcd_members.add_learner(ctx.transport, first, url)
    ctx.say(host.name, "added as an etcd learner", "changed")
    return member_id


def etcd_promote(ctx: UpContext, host: Host, member_id: str) -> None:
    from provision.kube import etcd_members

    etcd_members.promote(ctx.transport, ctx.cluster.first_control_plane, member_id)
    ctx.say(host.name, "etcd learner caught up: promoted to a voting member", "changed")


def wait_etcd_healthy(ctx: UpContext, hosts: list[Host], timeout: float) -> None:
    """Each stacked member answers its own /health (what the kubelet's probe asks), all asked at once."""
    from provision.kube import etcd_members
    from provision.transport import fan_out

    deadline = time.monotonic() + timeout
    waiting = list(hosts)
    while True:
        outcomes = fan_out(waiting, lambda h: etcd_members.healthy(ctx.transport, h), parallel=ctx.options.parallel)
        said = {o.host: (o.value[1] if o.ok else o.error_text) for o in outcomes if not (o.ok and o.value[0])}
        waiting = [h for h in waiting if h.name in said]
        if not waiting:
            return
        if time.monotonic() > deadline:
            name = waiting[0].name
            raise KubeprovError(f"{name}: etcd is not healthy after {timeout:g} s (/health: {said[name] or 'no answer'}); "
                                "see `crictl logs` of its etcd container there")
        time.sleep(1)


def run_join_control_planes(ctx: UpContext) -> None:
    """etcd's membership changes one host at a time (a learner, then a voter: never more than one
    member that is not yet serving); what follows each start (its API server ready, its mirror
    pods, its labels) on all of them at once."""
    from provision.transport import fan_out

    stacked = ctx.cluster.etcd.topology is EtcdTopology.STACKED
    joining = []
    for host in ctx.cluster.control_planes[1:]:
        if ctx.joined(host):
            ctx.say(host.name, "already joined")
            continue
        learner = etcd_member_add(ctx, host) if stacked else None
        start_kubelet(ctx, host)
        if learner:
            etcd_promote(ctx, host, learner)  # its API server needs a voting member (a learner serves no writes)
        if stacked:  # its control-plane manifests, held back until now (after_local_etcd_votes)
            changes = _push(ctx, host, desired_tree(ctx, host, joined=True))
            if changes:
                ctx.say(host.name, f"etcd member votes: {len(changes)} control-plane manifests placed", "changed")
        joining.append(host)

    def settle(host: Host) -> None:
        seconds = ctx.kubectl(host).wait_ready(ctx.options.api_timeout)
        ctx.say(host.name, f"API server ready after {seconds:.1f}s")
        ensure_mirror_pods(ctx, host)
        mark_control_plane(ctx, host)
        ctx.mark_joined(host)

    failed = [o for o in fan_out(joining, settle, parallel=ctx.options.parallel) if not o.ok]
    if failed:
        raise KubeprovError("control planes failed to join: " + "; ".join(f"{o.host}: {o.error_text}" for o in failed))


def run_workers(ctx: UpContext) -> None:
    from provision.transport import fan_out

    def join(host: Host) -> None:
        if ctx.joined(host):
            ctx.say(host.name, "already joined")
            return
        start_kubelet(ctx, host)
        annotate_cri_socket(ctx, host, wait_node(ctx, host, ctx.options.node_timeout))
        ctx.mark_joined(host)
        ctx.say(host.name, "node registered", "changed")

    outcomes = fan_out(ctx.cluster.workers, join, parallel=ctx.options.parallel)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise KubeprovError("workers failed: " + "; ".join(f"{o.host}: {o.error_text}" for o in failed))


def run_finalize(ctx: UpContext) -> None:
    """Steady-state files on the hosts that joined in this run (sync gave the others theirs);
    control planes one at a time, each API back before the next."""
    for host in ctx.cluster.hosts:
        if host.name not in ctx.newly_joined:
            continue
        changes = _push(ctx, host, desired_tree(ctx, host, joined=True))
        if changes:
            ctx.say(host.name, f"{len(changes)} files to steady state: {', '.join(c.path for c in changes[:4])}", "changed")
            if host.has(Role.CONTROL_PLANE):
                time.sleep(5)  # let the kubelet notice the manifest before asking the API again
                ctx.kubectl(host).wait_ready(ctx.options.api_timeout)


def _condition_ready(obj: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in obj["status"].get("conditions", []))


def expected_static_pods(cluster: Cluster, only: Host | None = None) -> list[str]:
    """The mirror pods every control plane (or just `only`) must show: its components, stacked
    etcd, the HA pods."""
    from provision.render.ha import render_ha

    names = []
    for host in ([only] if only else cluster.control_planes):
        components = ["kube-apiserver", "kube-controller-manager", "kube-scheduler"]
        if cluster.etcd.topology is EtcdTopology.STACKED:
            components.append("etcd")
        components += [PurePosixPath(p).stem for p in render_ha(cluster, host, None) if str(p).startswith("/etc/kubernetes/manifests/")]
        names += [f"{c}-{host.name}" for c in components]
    return sorted(names)


def run_verify(ctx: UpContext) -> None:
    from concurrent.futures import ThreadPoolExecutor

    kubectl = ctx.kubectl(local=False)  # admin.conf against the endpoint: what a user will use
    # Three questions, each its own round trip, asked at once: etcd's health on its hosts,
    # admin.conf's rights, and the nodes and pods (asked again until they are Ready).
    with ThreadPoolExecutor(2) as pool:
        etcd = pool.submit(run_etcd_health if external(ctx) else lambda c: wait_etcd_healthy(c, c.cluster.control_planes, timeout=30), ctx)
        admin = pool.submit(kubectl.run, "auth", "can-i", "*", "*", check=False)
        wait_nodes_and_pods(ctx, kubectl)
        can = admin.result()
        if can.stdout.strip() != "yes":
            raise KubeprovError(f"admin.conf cannot act as cluster admin (`kubectl auth can-i '*' '*'` says "
                                f"{can.stdout.strip() or can.summary()!r})")
        etcd.result()
    for h in ctx.cluster.nodes:
        ctx.say(h.name, "Ready")
    ctx.say("local", f"{len(expected_static_pods(ctx.cluster))} control-plane pods Ready, etcd healthy, admin.conf works: "
                     f"{ctx.store.kubeconfig_path('admin.conf', None)}")


def wait_nodes_and_pods(ctx: UpContext, kubectl: Kubectl) -> None:
    """Every node Ready, every control-plane pod and a kube-proxy per node Ready."""
    expected = expected_static_pods(ctx.cluster)
    deadline = time.monotonic() + ctx.options.node_timeout
    while True:
        result = kubectl.run("get", "nodes,pods", "-n", "kube-system", "-o", "json", check=False)
        if not result.ok:
            raise KubeprovError(f"{kubectl.host.name}: kubectl get nodes,pods failed (exit {result.exit_code}): {result.summary()}")
        items = result.json("kubectl get nodes,pods -o json")["items"]
        ready = {n["metadata"]["name"] for n in items if n["kind"] == "Node" and _condition_ready(n)}
        pods = {p["metadata"]["name"]: p for p in items if p["kind"] == "Pod"}
        not_ready = [name for name in expected if name not in pods or not _condition_ready(pods[name])]
        # A Ready kube-proxy pod on every node: the controller manager and the scheduler are at
        # work (a static pod can be Ready while its controller manager waits for leadership).
        proxied = {p["spec"].get("nodeName") for name, p in pods.items() if name.startswith("kube-proxy-") and _condition_ready(p)}
        not_ready += [f"kube-proxy on {h.name}" for h in ctx.cluster.nodes if h.name not in proxied]
        missing = [h.name for h in ctx.cluster.nodes if h.name not in ready]
        if not missing and not not_ready:
            return
        if time.monotonic() > deadline:
            raise KubeprovError(f"not ready after {ctx.options.node_timeout:g} s: nodes {', '.join(missing) or 'ok'}; "
                                f"pods not Ready: {', '.join(not_ready) or 'none'}")
        time.sleep(1)


def _plan(*lines: str, hosts=None):
    def plan(ctx: UpContext):
        targets = hosts(ctx) if hosts else [None]
        for host in targets:
            for line in lines:
                yield (host.name if host else None), line

    return plan


def _first(ctx: UpContext):
    return [ctx.cluster.first_control_plane]


# --- the list ---------------------------------------------------------------------------------

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
          run_first_control_plane,
          plan=_plan("start kubelet (static pods: etcd if stacked, API server, controller-manager, scheduler)",
                     "wait for /readyz through kubectl on the host", hosts=_first)),
    Phase("upload-config", "kubeadm-config and kubelet-config ConfigMaps", run_upload_config,
          plan=_plan("apply kube-system/kubeadm-config, kube-system/kubelet-config and their reader Roles")),
    Phase("bootstrap-token", "a join token and cluster-info signed with it (kubeadm's format)", run_bootstrap_token,
          plan=_plan("create/reuse bootstrap-token-<id> (24h) and apply kube-public/cluster-info with its jws-kubeconfig-<id>")),
    Phase("rbac", "kubeadm's RBAC for token holders, CSR auto-approval and admin.conf's group", run_rbac,
          plan=_plan("apply kubeadm:get-nodes, kubeadm:kubelet-bootstrap, kubeadm:node-autoapprove-*, kubeadm:cluster-admins")),
    Phase("mark-control-plane", "label the first control plane and taint it NoSchedule", run_mark_control_plane,
          plan=_plan("label node-role.kubernetes.io/control-plane, taint NoSchedule", hosts=_first)),
    Phase("addons", "kube-proxy, CoreDNS and the CNI", run_addons, plan=_plan("apply kube-proxy, CoreDNS and the CNI's objects")),
    Phase("control-plane-join", "the other control planes: etcd members one at a time, then their API servers together",
          run_join_control_planes,
          run_if=lambda ctx: len(ctx.cluster.control_planes) > 1, why_not="one control plane",
          plan=_plan("etcd member add (stacked), start kubelet, wait for /readyz, label and taint",
                     hosts=lambda ctx: ctx.cluster.control_planes[1:])),
    Phase("workers", "the workers' kubelets (started with the control plane; kubelet.conf from the local CA) registered", run_workers,
          run_if=lambda ctx: bool(ctx.cluster.workers), why_not="no workers",
          plan=_plan("start kubelet, wait for its Node", hosts=lambda ctx: ctx.cluster.workers)),
    Phase("finalize", "the rendered steady state on every joined host (etcd's full member list, kube-vip on admin.conf)",
          run_finalize, plan=_plan("push the steady-state files; one control plane at a time")),
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
