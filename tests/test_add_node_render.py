"""Adding a worker to the cluster file changes nothing kubeprov renders for the other hosts — no
file, no cluster object, no input of prepare's no-op check — but the bridge CNI's routes unit,
which routes each other node's pod CIDR statically and so must name the new node's.
(tests/e2e/test_day2_add_node_e2e.py proves the same on a running cluster.)"""

from __future__ import annotations

import pytest

from provision.config import load_cluster
from provision.phases.context import UpContext, UpOptions
from provision.phases.files import desired_tree
from provision.pki import PKIStore
from provision.render import render_cluster
from provision.render.cni.bridge import ROUTES_UNIT
from testkit import hosts

TOPOLOGIES = {
    "stacked-1cp": dict(hosts=hosts(1, 2)),
    "stacked-3cp-haproxy": dict(hosts=hosts(3, 1), controlPlaneEndpoint="10.0.0.100:6443",
                                loadBalancer={"mode": "haproxy-keepalived"}),
    "worker-local-lb": dict(hosts=hosts(2, 1), loadBalancer={"workerLocalLB": True, "workerLocalLBPort": 6443}),
    "external-etcd": dict(hosts=hosts(1, 1) + [{"name": f"e{i}", "address": f"192.0.2.{50 + i}", "roles": ["etcd"]}
                                               for i in (1, 2, 3)], etcd={"topology": "external"}),
}
NEW = {"name": "w9", "address": "192.0.2.109", "internalAddress": "10.0.0.109", "roles": ["worker"]}


def _rendered(cluster) -> tuple[dict, dict, dict]:
    """Each host's tree (as sync pushes it to a joined host), the cluster objects, prepare's record per host."""
    from provision import prepare

    PKIStore(cluster).generate()
    ctx = UpContext(cluster, UpOptions(), transport=None)
    trees = {h.name: desired_tree(ctx, h, joined=True) for h in cluster.hosts}
    plans, _, _ = prepare.plan(cluster, ctx.prepare_options())
    return trees, render_cluster(cluster, ctx.material), {name: plan.applied for name, plan in plans.items()}


# Every topology with the bridge CNI (the one whose files name the other nodes); flannel and calico
# (cluster objects only) on two of them.
CASES = [(t, "bridge") for t in TOPOLOGIES] + [(t, cni) for t in ("stacked-1cp", "stacked-3cp-haproxy") for cni in ("flannel", "calico")]


@pytest.mark.parametrize(("topology", "cni"), CASES)
def test_adding_a_worker_changes_no_other_hosts_files_but_the_bridge_routes(make_cluster, topology, cni):
    spec = TOPOLOGIES[topology]
    before = _rendered(load_cluster(make_cluster(cni=cni, **spec), None))
    # The same cluster file (and cluster directory: the PKI is kept), one worker appended.
    after = _rendered(load_cluster(make_cluster(cni=cni, **{**spec, "hosts": spec["hosts"] + [NEW]}), None))
    trees_before, objects_before, applied_before = before
    trees_after, objects_after, applied_after = after
    assert set(trees_after) == set(trees_before) | {NEW["name"]}
    differ = {f"{host}: {path}" for host, tree in trees_before.items()
              for path in sorted(set(tree) | set(trees_after[host])) if tree.get(path) != trees_after[host].get(path)}
    routes = {f"{h.name}: {ROUTES_UNIT}" for h in load_cluster(make_cluster(cni=cni, **spec), None).nodes} if cni == "bridge" else set()
    assert differ == routes
    if cni == "bridge":  # the one change: a route to the new node's pod CIDR, via its address (kept, not pruned)
        for host in {d.split(":")[0] for d in routes}:
            added = set(trees_after[host][ROUTES_UNIT].content.decode().splitlines()) \
                - set(trees_before[host][ROUTES_UNIT].content.decode().splitlines())
            (route,) = [line for line in added if "route replace" in line]
            (prune,) = [line for line in added if "route del" in line]
            assert added == {route, prune} and f"via {NEW['internalAddress']}" in route, host
            assert f"-e {route.split()[4]} " in prune, host
    assert objects_after == objects_before
    assert {h: applied_after[h] for h in applied_before} == applied_before  # prepare stays a no-op on them
