"""`kubeprov certs renew NAME|all`: re-issue certificates and kubeconfigs in the cluster directory
(provision/pki/store.py: the old ones backed up there), then roll them out to every host that
holds them through the rolling mechanism (provision/rolling.py): external etcd members and
control planes one at a time, each back and Ready (and etcd healthy) before the next, then the
workers; what reads a replaced file restarted (a static pod whose certificates or kubeconfig
changed is stopped and started again, the kubelet for its kubelet.conf, etcd's unit). The
transport keeps a backup of every file it replaces on a host. Workers are not drained: only
their kubelet restarts, and their pods keep running.

Journalled (CLUSTER_DIR/certs-renew.json): the local re-issue, then each host. An interrupted
renew, run again with the same names, does not re-issue: it continues the roll where it stopped,
restarting what a half-rolled host still owes. Another renew meanwhile is refused: the hosts
would otherwise hold a mix of two renewals with no record of what still owes a restart.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from provision.config.models import Cluster
from provision.errors import KubeprovError

JOURNAL = "certs-renew.json"
LOCAL = "cluster-directory"  # the journal's name for the re-issue in the cluster directory


class Unfinished(KubeprovError):
    """Another renew's roll is unfinished; nothing was renewed."""

    exit_code = 1


def journal_key(labels: Iterable[str]) -> str:
    return "renew:" + ",".join(sorted(labels))


def open_journal(cluster_dir: Path, labels: Iterable[str]):
    """The renew's journal; refused while another renew's roll is unfinished."""
    from provision.phases.journal import HostJournal

    key = journal_key(labels)
    other = HostJournal.unfinished_key(Path(cluster_dir) / JOURNAL)
    if other not in (None, key):
        raise Unfinished(f"an earlier `kubeprov certs renew {other.removeprefix('renew:').replace(',', ' ')}` did not finish "
                         f"rolling out to the hosts ({Path(cluster_dir) / JOURNAL}): run it again to finish it first")
    return HostJournal.open(Path(cluster_dir) / JOURNAL, key)


def _trial_copy(cluster: Cluster, into: Path) -> Path:
    """What a renew reads and writes, copied under `into` (the real cluster directory untouched)."""
    from provision.pki.secrets import encryption_key_path

    source = Path(cluster.directory)
    for name in ("pki", "kubeconfigs"):
        if (source / name).is_dir():
            shutil.copytree(source / name, into / name, ignore=shutil.ignore_patterns("backup"))
    key = encryption_key_path(source)
    if key.exists():
        (into / key.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(key, into / key.relative_to(source))
    return into


def trial(cluster: Cluster, names: list[str], hosts: list[str], *, new_key: bool) -> tuple[dict, dict[str, list[str]]]:
    """(host → its tree after the renew, host → the paths the renew would replace there), for
    --dry-run: the renew is made on a copy of the PKI and both renders compared. No host is
    contacted, nothing in the cluster directory is written."""
    from provision.pki import PKIStore
    from provision.pki.store import read_material
    from provision.render import render_hosts

    before = render_hosts(cluster, read_material(PKIStore(cluster)))
    with tempfile.TemporaryDirectory(prefix="kubeprov-renew-") as tmp:
        store = PKIStore(cluster, _trial_copy(cluster, Path(tmp)))
        store.renew(store.select(names, hosts), new_key=new_key)
        after = render_hosts(cluster, read_material(store))
    changed = {host: sorted(str(p) for p, f in tree.items() if before.get(host, {}).get(p) != f) for host, tree in after.items()}
    return after, changed


def plan_lines(cluster: Cluster, trees: dict, changed: dict[str, list[str]]) -> Iterable[tuple[str, str]]:
    """(host, line) of the roll, in its order (pure; `trial`'s answer)."""
    from provision.rolling import restarts, waves

    for wave in waves(cluster, [h for h in cluster.hosts if changed.get(h.name)]):
        for host in wave:
            paths = changed[host.name]
            alone = host not in cluster.workers
            why = restarts(trees[host.name], paths)
            yield host.name, ("alone, etcd healthy before and after: " if alone else "") \
                + f"replace {len(paths)} files (backups kept on the host); {why.said()}; wait until it is back" \
                + ("" if alone else " (not drained: its pods keep running)")
            for path in paths:
                yield host.name, f"replace {path}"


def hosts_holding(ctx) -> list:
    """The hosts a renew rolls: those in the cluster (their marker: a kubelet or an external etcd
    that `up` started). Each host is asked, so one that does not answer stops the renew before it
    changes anything; a host not in the cluster yet gets the new files from its `up`."""
    hosts = [h for h in ctx.cluster.hosts if ctx.joined(h)]
    later = [h.name for h in ctx.cluster.hosts if h not in hosts]
    if later:
        ctx.say("local", f"not in the cluster yet (their `up` brings the new files): {', '.join(later)}")
    return hosts


def roll_out(ctx, hosts: list, journal) -> list[str]:
    """Push the cluster directory's certificates and kubeconfigs to `hosts`, rolled; then every
    node and control-plane pod Ready; the journal finished. The names rolled."""
    from provision import rolling
    from provision.phases.files import desired_tree
    from provision.phases.verify import wait_nodes_and_pods

    spec = rolling.Roll(tree=lambda h: desired_tree(ctx, h, joined=True), drain=False)
    rolled = rolling.roll(ctx, hosts, spec, journal)
    if any(h in ctx.cluster.nodes for h in hosts):
        wait_nodes_and_pods(ctx, ctx.kubectl(local=False))
    journal.finish()
    return rolled
