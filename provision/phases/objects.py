"""The cluster objects kubeadm's init creates, applied by kubectl on the first control plane:
kubeadm-config and kubelet-config, the bootstrap token and signed cluster-info, kubeadm's RBAC, the
addons (kube-proxy, CoreDNS, the CNI). Every object is read once and only stale ones are applied
(provision/kube/live.py)."""

from __future__ import annotations

import json

from provision.config.models import LoadBalancerMode
from provision.errors import KubeprovError
from provision.kube.kubectl import changed
from provision.kube.live import LiveObjects, documents
from provision.phases.context import UpContext
from provision.phases.files import mark_joined
from provision.phases.writer import push_tree
from provision.render.stages import after_bootstrap


def _apply(ctx: UpContext, docs: list[dict]) -> None:
    """Apply what is not current already (provision/kube/live.py): a run with nothing to do
    reads the objects once instead of applying them phase by phase."""
    stale = live_objects(ctx).stale(docs)
    moved = changed(ctx.kubectl(bootstrap=True).apply(stale)) if stale else []
    ctx.say(ctx.cluster.first_control_plane.name,
            f"{len(docs)} objects, {len(moved)} changed" + (f": {', '.join(moved[:6])}" if moved else ""),
            "changed" if moved else "ok")


def live_objects(ctx: UpContext) -> LiveObjects:
    """The object phases' objects as the API has them, read once per run when first asked (not at
    all on an API this run started: it is empty)."""
    if ctx.live is None:
        ctx.live = LiveObjects(ctx.kubectl(bootstrap=True), object_documents(ctx), read=not ctx.fresh_api)
    return ctx.live


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

    _apply(ctx, rbac_objects(ctx.cluster))
    first = ctx.cluster.first_control_plane
    if ctx.cluster.load_balancer_mode is LoadBalancerMode.KUBE_VIP:
        # kubeadm:cluster-admins is bound: kube-vip on the first control plane drops super-admin.conf.
        changes = push_tree(ctx, first, after_bootstrap(ctx.cluster, first))
        if changes:
            ctx.say(first.name, "kube-vip now uses admin.conf", "changed")
    mark_joined(ctx, first)


ADDON_FILES = ("kube-proxy.yaml", "coredns.yaml")


def addon_documents(ctx: UpContext) -> list[dict]:
    _, objects = ctx.rendered()
    cni = sorted(name for name in objects if name.startswith("cni-"))
    return [doc for name in (*ADDON_FILES, *cni) for doc in documents(objects[name])]


def run_addons(ctx: UpContext) -> None:
    _apply(ctx, addon_documents(ctx))


# --- plans: which objects an apply would change, from one read of them ----------------------------


def _shown(docs: list[dict]) -> str:
    from provision.kube.live import identity

    return ", ".join("/".join(part for part in identity(d) if part) for d in docs)


def _plan_apply(ctx: UpContext, docs_of):
    first = ctx.cluster.first_control_plane
    if not ctx.pki_exists() or not ctx.facts(first).units["kubelet"].running:
        yield first.name, "the API is not up yet: apply every object"
        return
    docs = docs_of(ctx)
    try:
        stale = live_objects(ctx).stale(docs)
    except KubeprovError as exc:
        yield first.name, f"cannot read the objects ({exc}): apply all {len(docs)}"
        return
    yield first.name, f"{len(docs)} objects: " + (f"apply {_shown(stale)}" if stale else "unchanged")


def plan_upload_config(ctx: UpContext):
    yield from _plan_apply(ctx, upload_config_documents)


def plan_bootstrap_token(ctx: UpContext):
    token = saved_token(ctx)
    if token is None:
        yield ctx.cluster.first_control_plane.name, "create a join token (24h) and sign cluster-info with it"
        return
    yield from _plan_apply(ctx, lambda c: bootstrap_token_documents(c, token))


def plan_rbac(ctx: UpContext):
    from provision.bootstrap.rbac import rbac_objects

    yield from _plan_apply(ctx, lambda c: rbac_objects(c.cluster))


def plan_addons(ctx: UpContext):
    yield from _plan_apply(ctx, addon_documents)
