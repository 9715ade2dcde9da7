"""`kubeprov up` without hosts: the phase list, dry-run offline, bootstrap-time files for growing a
stacked etcd, what sync leaves to prepare, the reused join token, and merging admin.conf."""

from __future__ import annotations

import json
import subprocess
from pathlib import PurePosixPath

import kubernetes_validate
import pytest
import yaml

from provision.config import load_cluster
from provision.phases.phase import flatten
from provision.phases.context import UpContext, UpOptions
from provision.phases.files import desired_tree
from provision.phases.objects import ensure_token
from provision.phases.up import UP_PHASES
from provision.render import etcd, stages, staticpod
from testkit import VENV_BIN, hosts, run_cli

ETCD_MANIFEST = staticpod.manifest_path("etcd")


def _flags(manifest: bytes) -> dict[str, str]:
    pod = yaml.safe_load(manifest)
    command = pod["spec"]["containers"][0]["command"]
    return dict(arg[2:].split("=", 1) for arg in command[1:])


def test_phase_list_order_matches_kubeadm_style_bootstrap():
    code, out, _ = run_cli("phase", "list")
    assert code == 0
    listed = [line.split()[0] for line in out.splitlines()[1:] if line.strip()]
    assert listed == [s.path for s in flatten(UP_PHASES)]
    order = listed.index
    # What must precede what, whatever else moves: the PKI before anything uses it, etcd before
    # the API server, the API before objects, the first control plane before joins, verify last.
    assert order("certs") < order("preflight") < order("sync") < order("etcd") < order("control-plane")
    assert order("control-plane") < order("upload-config") < order("bootstrap-token") < order("rbac")
    assert order("rbac") < order("control-plane-join") < order("workers") < order("verify") == len(listed) - 1


def test_dry_run_offline_plans_every_phase_and_writes_nothing(make_cluster, tmp_path):
    # TEST-NET hosts: with no PKI yet the plan needs no host, so nothing is contacted.
    cluster_file = make_cluster(hosts=hosts(3, 2), controlPlaneEndpoint="10.0.0.100:6443")
    code, out, err = run_cli("up", "--dry-run", "-c", cluster_file)
    assert code == 0, err
    for step in flatten(UP_PHASES):
        assert f" {step.path} " in out  # every phase is named in the plan or the summary
    for host in ("cp2", "cp3"):
        assert f"{host}" in out and "etcd member add (learner) and promote" in out
    assert "w1             start kubelet" in out
    assert "dry run: nothing was changed" in out
    assert not (tmp_path / "cluster").exists()  # no cluster dir, no journal, no PKI


def test_unknown_skip_phase_is_one_clear_line(make_cluster):
    code, _, err = run_cli("up", "--dry-run", "-c", make_cluster(), "--skip-phases", "certs,etc")
    assert code == 2
    assert err.strip().splitlines() == [err.strip()] and "no phase named 'etc'" in err


@pytest.fixture
def stacked3(make_cluster):
    cluster = load_cluster(make_cluster(hosts=hosts(3, 1), controlPlaneEndpoint="10.0.0.100:6443"), None)
    from provision.pki import PKIStore

    PKIStore(cluster).generate()
    return cluster


def test_stacked_etcd_grows_one_member_at_a_time(stacked3):
    """Each stacked member's manifest is what it joins with, and stays so: no restart after the join."""
    cluster = stacked3
    cps = cluster.control_planes
    peer = {h.name: f"https://{h.advertise_address}:2380" for h in cps}
    expected = [
        (f"cp1={peer['cp1']}", None),
        (f"cp1={peer['cp1']},cp2={peer['cp2']}", "existing"),
        (f"cp1={peer['cp1']},cp2={peer['cp2']},cp3={peer['cp3']}", "existing"),
    ]
    for host, (initial, state) in zip(cps, expected):
        manifest = staticpod.manifest(etcd.etcd_pod(cluster, host))
        flags = _flags(manifest.content)
        assert (flags["initial-cluster"], flags.get("initial-cluster-state")) == (initial, state)
        assert manifest.mode == 0o600
        kubernetes_validate.validate(yaml.safe_load(manifest.content), f"1.{cluster.minor}", strict=True)
        assert ETCD_MANIFEST not in stages.after_bootstrap(cluster, host)  # etcd's manifest is the same in both stages
    assert stages.after_bootstrap(cluster, cluster.host("w1")) == {}


def test_single_control_plane_needs_no_bootstrap_variant(make_cluster):
    cluster = load_cluster(make_cluster(), None)
    tree = {PurePosixPath("/etc/kubernetes/manifests/kube-apiserver.yaml"): None}
    first = cluster.first_control_plane
    assert stages.staged(cluster, first, tree, joined=False) == stages.staged(cluster, first, tree, joined=True) == tree


def test_sync_pushes_the_files_the_roles_act_on_too(stacked3):
    ctx = UpContext(stacked3, UpOptions(), transport=None)
    tree = {str(p) for p in desired_tree(ctx, stacked3.host("cp2"), joined=False)}
    # cp2 joins: its API server's manifest waits for its etcd member to vote; its etcd's does not
    assert "/etc/kubernetes/manifests/kube-apiserver.yaml" not in tree and "/etc/kubernetes/manifests/etcd.yaml" in tree
    assert "/etc/kubernetes/manifests/kube-apiserver.yaml" in {str(p) for p in desired_tree(ctx, stacked3.host("cp2"), joined=True)}
    assert "/etc/kubernetes/pki/ca.key" in tree
    assert "/etc/kubernetes/kubelet.conf" in tree
    for acted_on_by_roles in ("/var/lib/kubelet/config.yaml", "/etc/containerd/config.toml", "/etc/sysctl.d/99-kubernetes.conf"):
        assert acted_on_by_roles in tree


TOPOLOGIES = {
    "stacked-1cp": dict(hosts=hosts(1, 2)),
    "stacked-3cp-haproxy": dict(hosts=hosts(3, 1), controlPlaneEndpoint="10.0.0.100:6443",
                                loadBalancer={"mode": "haproxy-keepalived"}),
    "external-etcd": dict(hosts=hosts(1, 1) + [{"name": f"e{i}", "address": f"192.0.2.{50 + i}", "roles": ["etcd"]}
                                               for i in (1, 2, 3)], etcd={"topology": "external"}),
}


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_every_rendered_file_has_exactly_one_writer(make_cluster, topology):
    """The SSH transport (sync) writes every rendered file; no role writes one (the roles act on
    some of them: restarts, reloads — those are the files prepare's applied record hashes)."""
    from provision.ansible.inventory import ROLES_DIR
    from provision.ansible.nodefiles import render_for_prepare
    from provision.pki import PKIStore
    from provision.render import render_hosts
    from provision.render.control_plane import after_local_etcd_votes

    cluster = load_cluster(make_cluster(**TOPOLOGIES[topology]), None)
    PKIStore(cluster).generate()
    ctx = UpContext(cluster, UpOptions(), transport=None)
    rendered_paths = set()
    for host in cluster.hosts:
        rendered = render_hosts(cluster, ctx.material)[host.name]
        by_sync = desired_tree(ctx, host, joined=True)
        assert by_sync == rendered, host.name
        # a joining stacked control plane gets its control-plane manifests once its etcd member votes
        joining = desired_tree(ctx, host, joined=False)
        assert set(rendered) - set(joining) == after_local_etcd_votes(cluster, host), host.name
        acted_on = render_for_prepare(cluster, host, ctx.material)
        assert all(rendered[path] == file for path, file in acted_on.items()), host.name
        rendered_paths |= {str(p) for p in rendered}
    writing = {"ansible.builtin.copy", "copy", "ansible.builtin.template", "template", "ansible.builtin.file", "file",
               "ansible.builtin.lineinfile", "ansible.builtin.replace", "ansible.builtin.blockinfile"}
    for tasks_file in ROLES_DIR.glob("*/tasks/*.yml"):
        for task in yaml.safe_load(tasks_file.read_text()) or []:
            for step in [task, *task.get("block", [])]:
                for module in writing & set(step):
                    args = step[module] or {}
                    target = str(args.get("dest") or args.get("path") or "") if isinstance(args, dict) else ""
                    assert target not in rendered_paths, f"{tasks_file}: {step.get('name')} writes the rendered {target}"


def test_join_token_is_kept_private_and_reused(stacked3):
    ctx = UpContext(stacked3, UpOptions(), transport=None)
    first = ensure_token(ctx)
    path = ctx.cluster_dir / "bootstrap-token.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert ensure_token(ctx) == first
    record = json.loads(path.read_text())
    record["expires"] = "2000-01-01T00:00:00Z"
    path.write_text(json.dumps(record))
    assert ensure_token(ctx).id != first.id  # an expired token is replaced


def test_admin_kubeconfig_merges_once_and_never_clobbers(stacked3, tmp_path):
    from provision.errors import KubeprovError
    from provision.kube.kubeconfig_merge import merge_kubeconfig
    from provision.pki import PKIStore

    admin = PKIStore(stacked3).kubeconfig_path("admin.conf", None)
    target = tmp_path / "kube" / "config"
    target.parent.mkdir()
    target.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", "current-context": "other",
                                      "clusters": [{"name": "other", "cluster": {"server": "https://192.0.2.1:6443"}}],
                                      "users": [{"name": "me", "user": {"token": "x"}}],
                                      "contexts": [{"name": "other", "context": {"cluster": "other", "user": "me"}}]}))
    context = merge_kubeconfig(admin, target)
    assert merge_kubeconfig(admin, target) == context
    kubectl = [str(VENV_BIN / "kubectl"), f"--kubeconfig={target}"]
    names = subprocess.run([*kubectl, "config", "get-contexts", "-o", "name"], capture_output=True, text=True, check=True).stdout.split()
    assert sorted(names) == sorted(["other", context])
    current = subprocess.run([*kubectl, "config", "current-context"], capture_output=True, text=True, check=True).stdout.strip()
    assert current == "other"  # the user's choice is kept
    assert target.stat().st_mode & 0o777 == 0o600
    doc = yaml.safe_load(target.read_text())
    doc["clusters"] = [c if c["name"] != "test" else {**c, "cluster": {"server": "https://elsewhere:6443"}} for c in doc["clusters"]]
    target.write_text(yaml.safe_dump(doc))
    with pytest.raises(KubeprovError, match="cluster 'test' exists with other settings"):
        merge_kubeconfig(admin, target)


def test_mirror_pod_placeholders_are_mirror_pods_of_no_static_pod(stacked3):
    """What `up` creates for a mirror pod a kubelet has not made (provision/kube/mirror_pods.py):
    named like the static pod, bound to its host, marked as a mirror pod by a hash no static pod
    has (so the kubelet replaces it), and nothing the mirror-pod admission refuses (no service
    account, no secret)."""
    from provision.kube.mirror_pods import MIRROR_ANNOTATION, PLACEHOLDER_HASH, placeholders
    from provision.phases.verify import expected_static_pods
    from provision.render.kubelet import pause_image

    host = stacked3.control_planes[1]
    names = expected_static_pods(stacked3, host)
    listed = placeholders(stacked3, host, names)
    assert listed["kind"] == "List" and [p["metadata"]["name"] for p in listed["items"]] == sorted(names)
    for pod in listed["items"]:
        assert pod["metadata"]["annotations"] == {MIRROR_ANNOTATION: PLACEHOLDER_HASH}
        assert pod["metadata"]["namespace"] == "kube-system" and pod["spec"]["nodeName"] == host.name
        assert pod["spec"]["containers"] == [{"name": "placeholder", "image": pause_image(stacked3)}]
        assert "serviceAccountName" not in pod["spec"] and "volumes" not in pod["spec"]
