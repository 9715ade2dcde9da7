"""Rolling a change through a RUNNING cluster, host by host: the one mechanism that `up` (a config
change on hosts that joined), `upgrade apply` (new binaries, images and manifests) and `certs
renew` (new certificates and kubeconfigs) share.

Control planes go one at a time: stacked etcd healthy first; the host's new binaries (the
caller's `install`) and files (through the transport, the one writer: it keeps a backup of what
it replaces); then what reads them restarted: a static pod whose manifest changed restarts by
itself, one whose manifest is the same but that reads a changed file (a certificate, a
kubeconfig, a config) is stopped and started again (its manifest moved out and back, as kubeadm
advises; etcd first, its leadership handed over before and its health awaited after, so no API
server rejoins the load balancers over an etcd still starting), the kubelet restarted when its
own files or binary changed; then the host waited for:
its API server's /readyz, each of its static pods' mirror pod showing the manifest's containers
and Ready (the new pod, not the old one still Ready), etcd healthy again. External etcd members go
first, one at a time, the same way: their systemd unit restarted when a file it reads changed, the
members healthy before and after. Workers go in bounded batches: cordoned and drained (evictions:
PodDisruptionBudgets hold; not when only the kubelet restarts: Roll.drain), rolled, uncordoned.

Progress is journalled per host (provision/phases/journal.py: HostJournal): a host is "started"
with what it still owes (a kubelet restart, a pod to restart) before anything on it changes, and
"done" once it settled, so an interrupted roll resumes host by host and owes nothing it pushed.
What to restart is decided here from the paths that change (`restarts`, pure).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import yaml

from provision.config.models import Cluster, Host, Role
from provision.errors import KubeprovError
from provision.phases.journal import HostJournal
from provision.render import etcd as etcd_files
from provision.render.kubelet import CONFIG_PATH, DROP_IN_PATH, FLAGS_ENV_PATH, KUBECONFIG, UNIT_PATH
from provision.render.staticpod import MANIFESTS_DIR

# What the kubelet reads itself (a restart of the kubelet, not of a pod, picks them up).
KUBELET_FILES = frozenset(map(str, (CONFIG_PATH, FLAGS_ENV_PATH, UNIT_PATH, DROP_IN_PATH, KUBECONFIG)))
# Other systemd services kubeprov renders (external etcd): the unit file first (a host whose tree
# has it runs the service), then what the service reads (a file, or a directory and all below it).
SERVICE_READS = {"etcd": tuple(map(str, (etcd_files.UNIT_PATH, etcd_files.ENV_PATH, etcd_files.ETCD_PKI)))}
MIRROR_STALE = 10.0  # seconds a mirror pod may lag its new manifest before its kubelet is asked to sync it
LB_SETTLE = 3.0  # seconds the other load balancers get to drop an API server (checks every 1 s, 2 to fall)
BATCH = 1  # workers drained at once by default: one node's pods at a time need room elsewhere


@dataclass(frozen=True)
class Restarts:
    """What must restart on a host for its changed files to take effect."""

    kubelet: bool = False
    manifests: tuple[str, ...] = ()  # static pods whose manifest changed: the kubelet restarts them
    readers: tuple[str, ...] = ()  # static pods with the same manifest that read a changed file
    services: tuple[str, ...] = ()  # systemd services (SERVICE_READS) that read a changed file

    def __bool__(self) -> bool:
        return self.kubelet or bool(self.manifests) or bool(self.readers) or bool(self.services)

    def merged(self, other: Restarts) -> Restarts:
        return Restarts(self.kubelet or other.kubelet, tuple(sorted({*self.manifests, *other.manifests})),
                        tuple(sorted({*self.readers, *other.readers})), tuple(sorted({*self.services, *other.services})))

    @classmethod
    def owed(cls, entry: dict) -> Restarts:
        """What a journal entry (HostJournal.owed) says an interrupted roll still owes."""
        return cls(bool(entry.get("kubelet")), tuple(entry.get("manifests", ())), tuple(entry.get("readers", ())),
                   tuple(entry.get("services", ())))

    def said(self) -> str:
        parts = [f"{', '.join(self.manifests)} restart with their new manifests"] if self.manifests else []
        parts += [f"{', '.join(self.readers)} restarted (files they read changed)"] if self.readers else []
        parts += [f"{', '.join(self.services)} restarted (systemd; files it reads changed)"] if self.services else []
        parts += ["kubelet restarted"] if self.kubelet else []
        return "; ".join(parts) or "nothing to restart"


def _static_pod(content: bytes) -> dict:
    return yaml.safe_load(content) or {}


def _host_paths(pod: dict) -> list[str]:
    return [v["hostPath"]["path"].rstrip("/") for v in pod.get("spec", {}).get("volumes", []) if v.get("hostPath")]


def static_pods(tree: dict) -> dict[str, dict]:
    """The static pods in a host's tree: manifest path → the pod."""
    return {str(p): _static_pod(f.content) for p, f in tree.items() if PurePosixPath(p).parent == MANIFESTS_DIR}


def _under(path: str, read: str) -> bool:
    return path == read or path.startswith(read + "/")


def _named_paths(pod: dict) -> list[str]:
    """Absolute paths the pod's containers name in their command and arguments (`--flag=/a,/b`, `/a`)."""
    words = [w for c in pod.get("spec", {}).get("containers", []) for w in (c.get("command") or []) + (c.get("args") or [])]
    values = [w.split("=", 1)[1] if w.startswith("-") and "=" in w else w for w in words]
    return [v.rstrip("/") for value in values for v in value.split(",") if v.startswith("/")]


def _reads(pod: dict, path: str) -> bool:
    """Whether the static pod reads the host's `path`: it lies in one of the pod's hostPath volumes,
    and the pod's command names it (Kubernetes' components name every file they read with a flag,
    so kube-controller-manager, which mounts all of /etc/kubernetes/pki, does not read
    apiserver.crt), or names nothing in that volume (haproxy reads its config by its own path)."""
    named = _named_paths(pod)
    for volume in _host_paths(pod):
        if _under(path, volume):
            inside = [n for n in named if _under(n, volume)]
            if not inside or any(_under(path, n) for n in inside):
                return True
    return False


def restarts(tree: dict, changed: Iterable[str], *, kubelet: bool = False) -> Restarts:
    """What restarts for `changed` paths of a host whose desired files are `tree` (pure):
    a changed manifest's pod (by itself), a pod that reads a changed file (`_reads`), a
    service of SERVICE_READS the host runs whose files changed, the kubelet for its own files (or
    `kubelet`: its binary changed)."""
    changed = {str(p) for p in changed}
    paths = {str(p) for p in tree}
    services = tuple(sorted(name for name, reads in SERVICE_READS.items()
                            if reads[0] in paths and any(_under(c, r) for c in changed for r in reads)))
    manifests, readers = [], []
    for path, pod in static_pods(tree).items():
        name = pod.get("metadata", {}).get("name", PurePosixPath(path).stem)
        if path in changed:
            manifests.append(name)
        elif any(_reads(pod, c) for c in changed):
            readers.append(name)
    return Restarts(kubelet or bool(changed & KUBELET_FILES), tuple(sorted(manifests)), tuple(sorted(readers)), services)


def waves(cluster: Cluster, hosts: Iterable[Host], batch: int = BATCH) -> list[list[Host]]:
    """The order a roll takes (pure): each external etcd member alone (what the API servers
    depend on goes first, as kubeadm upgrades etcd first), then each control plane alone, in the
    cluster file's order, then the workers in batches of at most `batch`."""
    if batch < 1:
        raise KubeprovError(f"a worker batch must be at least 1, not {batch}")
    names = {h.name for h in hosts}
    members = [[h] for h in cluster.etcd_members if h.name in names and h not in cluster.nodes]
    planes = [[h] for h in cluster.control_planes if h.name in names]
    workers = [h for h in cluster.workers if h.name in names and not h.has(Role.CONTROL_PLANE)]
    return members + planes + [workers[i:i + batch] for i in range(0, len(workers), batch)]


@dataclass
class Roll:
    """What is rolled: each host's desired files, and optionally what installs first."""

    tree: Callable[[Host], dict]  # the host's desired files (pushed through the transport)
    install: Callable[[Host], bool] | None = None  # binaries and images before the files; True when the kubelet's changed
    kubelet_version: str | None = None  # every rolled kubelet must report it (upgrade); else its kubelet restarts
    batch: int = BATCH
    drain_timeout: float = 300.0
    force: bool = False  # drain pods no controller manages too
    drain: bool = True  # workers cordoned and drained first; False when only the kubelet restarts (its pods keep running)
    done: set[str] = field(default_factory=set)


def _node_version(kubectl, name: str) -> str:
    result = kubectl.run("get", "node", name, "-o", "jsonpath={.status.nodeInfo.kubeletVersion}", check=False, timeout=60)
    return result.stdout.strip() if result.ok else ""


def _api_elsewhere(ctx, host: Host):
    """kubectl on a control plane other than `host` whose API server answers (the host's own
    API server may be restarting); the host itself when it is the only one."""
    from provision.kube.kubectl import Kubectl

    said = []
    for cp in [c for c in ctx.cluster.control_planes if c.name != host.name] or [host]:
        kubectl: Kubectl = ctx.kubectl(cp)
        try:
            ok, what = kubectl.ready()
        except KubeprovError as error:
            ok, what = False, str(error)
        if ok:
            return kubectl
        said.append(f"{cp.name}: {what or 'no answer'}")
    raise KubeprovError(f"{host.name}: no other control plane's API server answers ({'; '.join(said)}): "
                        "a roll needs one to watch the host")


def _containers(pod: dict) -> dict:
    return {c["name"]: (c.get("image"), c.get("command"), c.get("args"))
            for c in pod.get("spec", {}).get("containers", [])}


def _ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in pod.get("status", {}).get("conditions", []))


def _instant(stamp: str):
    """An RFC 3339 time as the API writes it ("…Z")."""
    import datetime as dt

    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _started_since(pod: dict, since: float) -> bool:
    for status in pod.get("status", {}).get("containerStatuses", []):
        started = (status.get("state", {}).get("running") or {}).get("startedAt")
        if not started or _instant(started).timestamp() < since:
            return False
    return True


NO_MIRROR, OLD_MIRROR = "no mirror pod", "still the old pod"


def pods_behind(tree: dict, host: str, listed: dict, *, restarted: dict[str, float]) -> list[tuple[str, str]]:
    """(name, why) of the host's static pods whose mirror pod does not show the manifest's containers
    Ready yet (pure; `listed`: kube-system's pods as JSON; `restarted`: pod name → epoch its restart began)."""
    mirrors = {p["metadata"]["name"]: p for p in listed.get("items", [])}
    behind = []
    for pod in static_pods(tree).values():
        name = pod["metadata"]["name"]
        mirror = mirrors.get(f"{name}-{host}")
        if mirror is None:
            behind.append((name, NO_MIRROR))
        elif _containers(mirror) != _containers(pod):
            behind.append((name, OLD_MIRROR))
        elif not _ready(mirror):
            behind.append((name, "not Ready"))
        elif name in restarted and not _started_since(mirror, restarted[name]):
            behind.append((name, "not restarted yet"))
    return behind


def _wait_static_pods(ctx, host: Host, tree: dict, restarted: dict[str, float]) -> None:
    from provision.kube import mirror_pods

    if not static_pods(tree):
        return
    timeout = ctx.options.api_timeout
    started = time.monotonic()
    nudged = False
    while True:
        kubectl = _api_elsewhere(ctx, host)
        result = kubectl.run("get", "pods", "-n", "kube-system", f"--field-selector=spec.nodeName={host.name}", "-o", "json",
                             check=False, timeout=60)
        behind = pods_behind(tree, host.name, result.json("kubectl get pods") if result.ok else {}, restarted=restarted) \
            if result.ok else [("kube-system's pods", "not listed: " + result.summary())]
        if not behind:
            return
        said = ", ".join(f"{name} ({why})" for name, why in behind)
        waited = time.monotonic() - started
        if waited > timeout:
            raise KubeprovError(f"{host.name}: its static pods did not come back with their new state within {timeout:g} s: "
                                f"{said}; see `journalctl -u kubelet` there")
        lagging = {why: [f"{name}-{host.name}" for name, w in behind if w == why] for why in (NO_MIRROR, OLD_MIRROR)}
        if not nudged and waited > MIRROR_STALE and any(lagging.values()):
            # A kubelet whose API server restarted under it may not sync a mirror pod until its
            # resync, up to a minute later: asked to now (provision/kube/mirror_pods.py).
            if lagging[NO_MIRROR]:
                mirror_pods.place(kubectl, ctx.cluster, host, lagging[NO_MIRROR])
            if lagging[OLD_MIRROR]:
                mirror_pods.resync(kubectl, host, lagging[OLD_MIRROR])
            ctx.say(host.name, f"its kubelet asked to sync mirror pods still behind after {waited:.0f}s ({said})", "changed")
            nudged = True
        time.sleep(1)


BOUNCE_DIR = "/etc/kubernetes/kubeprov-restarting"

# Moves a static pod's manifest out (the kubelet stops the pod) and, once its process is gone,
# back (the kubelet starts it again): kubeadm's advice for a pod whose certificates changed.
_BOUNCE = r"""
set -e
manifest=$1 name=$2 aside=$3/$(basename "$1")
mkdir -p "$3"
[ -e "$manifest" ] && mv -f -- "$manifest" "$aside"
for i in $(seq 120); do pgrep -f "(^|/)$name( |$)" >/dev/null || break; sleep 0.5; done
mv -f -- "$aside" "$manifest"
date +%s
"""


def _bounce(ctx, host: Host, tree: dict, names: Iterable[str]) -> dict[str, float]:
    """Restart each named static pod of `host` (manifest unchanged); when each restart began."""
    from provision.transport import remote

    began = {}
    # etcd first, and healthy again before the rest: an API server restarted before it would be
    # taken back into the load balancers while its etcd is still starting (its /readyz says 500).
    pods = sorted(static_pods(tree).items(), key=lambda item: item[1]["metadata"]["name"] != "etcd")
    for path, pod in pods:
        name = pod["metadata"]["name"]
        if name not in names:
            continue
        command = (pod["spec"]["containers"][0].get("command") or [name])[0].rsplit("/", 1)[-1]
        result = ctx.transport.run(host, remote.script(_BOUNCE, path, command, BOUNCE_DIR), timeout=120)
        if not result.ok:
            raise KubeprovError(f"{host.name}: restarting {name} failed (exit {result.exit_code}): {result.summary()}")
        began[name] = float(result.stdout.split()[-1])
        ctx.say(host.name, f"{name} restarted (its manifest moved out and back)", "changed")
        if name == "etcd":
            _etcd_healthy(ctx, f"after its restart on {host.name}", [host])
            ctx.say(host.name, "its etcd member is healthy again")
    return began


# Before a control plane's API server restarts, new connections to it are reset, its own host's
# included (remote.api_connections: a request the load balancers send meanwhile is refused and
# redispatched), instead of reaching an API server that answers /readyz with 500 as it shuts
# down; connections already open are left alone. Taken back once the old process is gone: the new
# one's /readyz says 500 until it is ready, so the load balancers take it back only then.
def _load_balancers(ctx, host: Host, state: str) -> None:
    """`out`: new connections to the host's API server reset; `in`: taken back."""
    from provision.transport import remote

    ctx.transport.run(host, remote.api_connections(host.advertise_address, ctx.cluster.api_server_port, state), timeout=60)


_API_PIDS = r"""pgrep -f '(^|/)kube-apiserver( |$)' | tr '\n' ' '; true"""


def _api_pids(ctx, host: Host) -> set[str]:
    return set(ctx.transport.run(host, _API_PIDS, timeout=30).stdout.split())


def _wait_gone(ctx, host: Host, pids: set[str]) -> None:
    """Until none of `pids` (the old API server) runs any more."""
    deadline = time.monotonic() + ctx.options.api_timeout
    while pids & _api_pids(ctx, host):
        if time.monotonic() > deadline:
            raise KubeprovError(f"{host.name}: the old kube-apiserver still runs after {ctx.options.api_timeout:g} s; "
                                "see `journalctl -u kubelet` there")
        time.sleep(0.5)


def _etcd_healthy(ctx, when: str, members: list[Host] | None = None) -> None:
    """Every etcd member (stacked or external; or only `members`) answers its /health, or the roll stops."""
    from provision.kube import etcd_members

    timeout = ctx.options.api_timeout
    unhealthy = etcd_members.wait_healthy(ctx.transport, members or ctx.cluster.etcd_members, timeout=timeout,
                                          parallel=ctx.options.parallel)
    if unhealthy:
        name, said = unhealthy
        raise KubeprovError(f"{name}: etcd is not healthy {when} (after {timeout:g} s; /health: {said or 'no answer'}): "
                            "the roll stops here; run the command again once it is")


def _etcd_leader_elsewhere(ctx, host: Host) -> None:
    """Before the etcd member on `host` restarts: its leadership handed to another member."""
    from provision.kube import etcd_members

    leader = etcd_members.hand_over_leadership(ctx.transport, host)
    if leader:
        ctx.say(host.name, f"etcd leadership handed to {leader} before its member restarts", "changed")


def _roll_host(ctx, host: Host, roll: Roll, journal: HostJournal | None) -> None:
    """Install, push, restart, settle one host (its wave's drain and etcd checks are the caller's)."""
    from provision.phases.context import check_run
    from provision.phases.writer import pending, push_tree

    owed = journal.owed(host.name) if journal else {}
    kubelet = bool(roll.install(host)) if roll.install else False
    if roll.install:
        ctx.facts.forget(host)
    tree = roll.tree(host)
    found = [c.path for c in pending(ctx, host, tree) if c.what != "mode"]
    why = restarts(tree, found, kubelet=kubelet).merged(Restarts.owed(owed))
    if roll.kubelet_version and host in ctx.cluster.nodes and _node_version(_api_elsewhere(ctx, host), host.name) != roll.kubelet_version:
        why = why.merged(Restarts(kubelet=True))
    if journal:
        journal.mark(host.name, "started", kubelet=why.kubelet, manifests=list(why.manifests), readers=list(why.readers),
                     services=list(why.services))
    api_restarts = host.has(Role.CONTROL_PLANE) and ("kube-apiserver" in why.manifests or "kube-apiserver" in why.readers)
    old_api = _api_pids(ctx, host) if api_restarts else set()
    if api_restarts:
        _load_balancers(ctx, host, "out")
        time.sleep(LB_SETTLE)
    if "etcd" in (*why.manifests, *why.readers, *why.services):
        _etcd_leader_elsewhere(ctx, host)
    changes = push_tree(ctx, host, tree)
    if changes:
        ctx.say(host.name, f"{len(changes)} files replaced (backups kept on the host): "
                           + ", ".join(c.path for c in changes[:5]) + (" …" if len(changes) > 5 else ""), "changed")
    restarted = _bounce(ctx, host, tree, why.readers) if why.readers else {}
    if api_restarts:
        _wait_gone(ctx, host, old_api)
        _load_balancers(ctx, host, "in")
    for service in why.services:
        check_run(ctx, host, f"systemctl daemon-reload && systemctl restart {service}", f"restarting {service}")
        ctx.say(host.name, f"{service} restarted", "changed")
    heartbeat = None
    if why.kubelet:
        if host in ctx.cluster.nodes:
            heartbeat = ready_heartbeat(_node(_api_elsewhere(ctx, host), host.name))
        check_run(ctx, host, "systemctl daemon-reload && systemctl restart kubelet", "restarting the kubelet")
        ctx.say(host.name, "kubelet restarted", "changed")
    if host.has(Role.CONTROL_PLANE) and any(p["metadata"]["name"] == "kube-apiserver" for p in static_pods(tree).values()):
        seconds = ctx.kubectl(host).wait_ready(ctx.options.api_timeout)
        ctx.say(host.name, f"its API server answers /readyz ({seconds:.1f}s)")
    _wait_static_pods(ctx, host, tree, restarted)
    if owed:
        _load_balancers(ctx, host, "in")  # an interrupted roll may have left it out
    if host in ctx.cluster.nodes:
        _wait_node(ctx, host, roll.kubelet_version, after=heartbeat)
    if why:
        ctx.say(host.name, f"settled: {why.said()}", "changed")


def ready_heartbeat(node: dict) -> str | None:
    """When the node's kubelet last posted its Ready condition (RFC 3339, the host's clock), or None."""
    for condition in node.get("status", {}).get("conditions", []):
        if condition.get("type") == "Ready":
            return condition.get("lastHeartbeatTime")
    return None


def node_back(node: dict, after: str | None) -> bool:
    """Ready, as posted after the heartbeat `after` (pure): the Ready a kubelet posted before its
    restart says nothing of the new one, which may first post NotReady (its runtime not yet synced)."""
    if not _ready(node):
        return False
    if after is None:
        return True
    posted = ready_heartbeat(node)
    return posted is not None and _instant(posted) > _instant(after)


def _node(kubectl, name: str) -> dict:
    result = kubectl.run("get", "node", name, "-o", "json", check=False, timeout=60)
    return result.json("kubectl get node") if result.ok else {}


def _wait_node(ctx, host: Host, version: str | None, *, after: str | None = None) -> None:
    """The host's Node Ready (reporting `version` when given; posted after the heartbeat `after`
    when its kubelet restarted)."""
    timeout = ctx.options.node_timeout
    started = time.monotonic()
    while True:
        node = _node(_api_elsewhere(ctx, host), host.name)
        ready = node_back(node, after) if node else False
        reports = node.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", "") if node else ""
        if ready and (version is None or reports == version):
            return
        if time.monotonic() - started > timeout:
            raise KubeprovError(f"{host.name}: its Node is not Ready" + (f" at {version} (reports {reports or 'nothing'})" if version else "")
                                + f" after {timeout:g} s; see `journalctl -u kubelet` there")
        time.sleep(1)


def needs_roll(ctx, host: Host, roll: Roll, journal: HostJournal | None) -> bool:
    """Whether `host` has anything to roll: files that differ, a journalled debt, or (roll.install /
    kubelet_version) the caller's own check through `install`'s currency."""
    from provision.phases.writer import pending

    if journal and journal.done(host.name):
        return False
    if journal and journal.owed(host.name):
        return True
    if roll.install or roll.kubelet_version:
        return True
    return bool(pending(ctx, host, roll.tree(host)))


def roll(ctx, hosts: list[Host], roll: Roll, journal: HostJournal | None = None) -> list[str]:
    """Roll `hosts` (see the module's docstring); the names rolled, in order."""
    from provision.day2.node import drain
    from provision.transport import fan_out

    rolled = []
    for wave in waves(ctx.cluster, hosts, roll.batch):
        wave = [h for h in wave if needs_roll(ctx, h, roll, journal)]
        if not wave:
            continue
        if wave[0] not in ctx.cluster.workers:  # a control plane or an external etcd member: alone
            (host,) = wave
            _etcd_healthy(ctx, f"before {host.name} is rolled")
            _roll_host(ctx, host, roll, journal)
            _etcd_healthy(ctx, f"after {host.name} was rolled")
        else:
            kubectl = _api_elsewhere(ctx, wave[0])
            for host in wave if roll.drain else ():
                if journal:
                    journal.mark(host.name, "started")
                lines = drain(kubectl, host.name, timeout=roll.drain_timeout, force=roll.force, gone=False)
                evicted = [line for line in lines if line.startswith("pod/") and line.endswith(" evicted")]
                ctx.say(host.name, f"cordoned and drained ({len(evicted)} pods evicted)", "changed")
            failed = [o for o in fan_out(wave, lambda h: _roll_host(ctx, h, roll, journal), parallel=ctx.options.parallel) if not o.ok]
            if failed:
                raise KubeprovError("rolling workers failed (they stay cordoned): "
                                    + "; ".join(f"{o.host}: {o.error_text}" for o in failed))
            for host in wave if roll.drain else ():
                kubectl.run("uncordon", host.name, timeout=60)
                ctx.say(host.name, "uncordoned", "changed")
        for host in wave:
            if journal:
                journal.mark(host.name, "done")
            rolled.append(host.name)
    return rolled


def plan_lines(ctx, hosts: list[Host], roll: Roll) -> Iterable[tuple[str, str]]:
    """(host, line) of what `roll` would do, from the hosts' facts (no change)."""
    from provision.phases.writer import pending

    for wave in waves(ctx.cluster, hosts, roll.batch):
        for host in wave:
            tree = roll.tree(host)
            found = pending(ctx, host, tree)
            why = restarts(tree, [c.path for c in found if c.what != "mode"])
            alone = host not in ctx.cluster.workers
            drains = roll.drain and not alone
            head = ("one control plane at a time" if host.has(Role.CONTROL_PLANE) else "one etcd member at a time") \
                + ": etcd healthy, " if alone else f"in a batch of {len(wave)}: " + ("cordon, drain, " if drains else "")
            yield host.name, head + (f"replace {len(found)} files" if found else "no file changes") \
                + f"; {why.said()}; wait for it" + ("; uncordon" if drains else "")
            verbs = {"created": "create", "content": "replace", "mode": "chmod/chown"}
            for change in found:
                yield host.name, f"{verbs[change.what]} {change.path}"
