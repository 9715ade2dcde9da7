"""`kubeprov certs rotate-ca [ca|front-proxy-ca|etcd-ca]`: replace a CA of a running cluster
without an outage.

The CA's file in the cluster directory's pki/ holds a bundle while the rotation runs, so every
renderer that embeds the CA (ca.crt files, kubeconfigs' certificate-authority-data, the API
server's --client-ca-file, the controller manager's --root-ca-file and so the kube-root-ca.crt
ConfigMaps pods read) emits both CAs. The first certificate of the bundle is the one whose key is
in <ca>.key and signs (PKIStore.load_ca); kube-controller-manager's signer, which takes one
certificate only, gets that one alone (Material.signing → <ca>-signing.crt). Steps, each
journalled in the cluster directory (rotate-ca.json; each roll per host in rotate-ca.<step>.json),
so an interrupted run continues where it stopped and a finished step is not done again:

1. issue     (local) a new CA key and certificate into pki/rotate-ca/ next to a copy of the old;
             <ca>.crt = old + new (the old still signs); kubeconfigs re-issued to embed both
2. trust     (roll) every node gets the bundle: its readers restart, one control plane at a time
3. pods      (ca) every kube-root-ca.crt ConfigMap holds both; Deployments, DaemonSets and
             StatefulSets restarted so their pods' clients load the bundle (they read it once)
4. reissue   (local) <ca>.crt = new + old, <ca>.key = the new key; every certificate and
             kubeconfig that CA signs re-issued from it (keys kept)
5. switch    (roll) every node gets its new certificates
6. kubelets  (ca) each kubelet's rotated client certificate (/var/lib/kubelet/pki, signed by a
             controller manager with the old CA) moved aside and the kubelet restarted: it starts
             from kubelet.conf's new certificate and rotates through a CSR signed with the new CA
             (checked); through the rolling mechanism too
7. drop      (local) <ca>.crt = new alone; kubeconfigs re-issued to embed it alone
8. trust-new (roll) every node trusts the new CA alone; (ca) the ConfigMaps hold it alone

The old CA's files stay in the cluster directory's backup/ (never overwritten: every replaced
file is copied first). Control planes roll one at a time (rolling.py: stacked etcd healthy before
and after, the host out of the load balancers while its API server restarts); workers only
restart their kubelet, so they are not drained (Roll.drain=False).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from provision.errors import KubeprovError

JOURNAL = "rotate-ca.json"
STAGING = "rotate-ca"  # pki/rotate-ca/: the old CA's copy and the new CA while a rotation runs
ROTATABLE = ("ca", "front-proxy-ca", "etcd-ca")
KUBELET_CLIENT = "/var/lib/kubelet/pki/kubelet-client-current.pem"


class Refused(KubeprovError):
    """The rotation may not start; nothing was changed."""

    exit_code = 1


@dataclass(frozen=True)
class Step:
    name: str
    roll: bool  # rolled through the hosts (else local)
    only_ca: bool  # only for the cluster CA ("ca")
    what: str


STEPS: tuple[Step, ...] = (
    Step("issue", False, False, "a new CA key and certificate; {crt} = old + new (the old signs); kubeconfigs embed both"),
    Step("trust", True, False, "trust the old and the new CA"),
    Step("pods", False, True, "every kube-root-ca.crt ConfigMap holds both CAs; Deployments, DaemonSets, StatefulSets restarted"),
    Step("reissue", False, False, "{crt} = new + old, {key} = the new key; every certificate and kubeconfig it signs re-issued"),
    Step("switch", True, False, "certificates signed by the new CA"),
    Step("kubelets", True, True, "kubelet client certificate re-issued by the new CA (rotated one moved aside, kubelet restarted)"),
    Step("drop", False, False, "{crt} = the new CA alone; kubeconfigs embed it alone"),
    Step("trust-new", True, False, "trust the new CA alone"),
)


def steps_for(name: str) -> list[Step]:
    return [s for s in STEPS if not s.only_ca or name == "ca"]


# --- refusals (before anything changes) ---------------------------------------------------------------

def check(cluster, cluster_dir: Path, name: str) -> None:
    """Refused, naming why: an unknown CA, an external one (its key absent), etcd's CA of external
    etcd members (not rolled by this command), another CA's rotation unfinished."""
    from provision.config.models import EtcdTopology
    from provision.errors import PKIError
    from provision.pki.certlist import CA_BY_NAME
    from provision.pki.store import PKIStore

    if name not in ROTATABLE:
        raise Refused(f"unknown CA {name!r}; one of: {', '.join(ROTATABLE)} (nothing was changed)")
    other = _journal_key(cluster_dir)
    if other and other != _key(name):
        raise Refused(f"a rotation of the {other.split(':', 1)[1]} CA is unfinished ({Path(cluster_dir) / JOURNAL}): "
                      f"run `kubeprov certs rotate-ca {other.split(':', 1)[1]}` to finish it first (nothing was changed)")
    if name == "etcd-ca" and cluster.etcd.topology is not EtcdTopology.STACKED:
        raise Refused("rotating the etcd CA of external etcd members is not supported: they are not nodes this "
                      "command rolls (nothing was changed)")
    store = PKIStore(cluster, cluster_dir)
    crt_path, key_path = store.ca_paths(CA_BY_NAME[name])
    try:
        _, key = store.load_ca(name)
    except PKIError as error:
        raise Refused(f"{error} (nothing was changed)") from None
    if key is None and not _stage(store, name)["new.key"].exists():
        raise Refused(f"the {name} CA is external ({key_path} is absent): kubeprov cannot issue its successor; "
                      "rotate it where its key is (nothing was changed)")
    if other is None and len(_certs(crt_path.read_bytes())) > 1:
        raise Refused(f"{crt_path} holds {len(_certs(crt_path.read_bytes()))} certificates and no rotation is journalled "
                      f"({Path(cluster_dir) / JOURNAL}): leave one CA in it first (nothing was changed)")


def _key(name: str) -> str:
    return f"rotate-ca:{name}"


def _journal_key(cluster_dir: Path) -> str | None:
    """The key of an unfinished rotation's journal, or None."""
    path = Path(cluster_dir) / JOURNAL
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return None
    return data.get("key") if data.get("hosts") else None


# --- the local PKI: pure helpers and the three local steps ------------------------------------------------

def _certs(pem: bytes) -> list:
    from cryptography import x509

    return x509.load_pem_x509_certificates(pem) if b"-----BEGIN CERTIFICATE-----" in pem else []


def bundle(*pems: bytes) -> bytes:
    """The certificates of `pems`, in order, each once (pure)."""
    from provision.pki import crypto

    from cryptography.hazmat.primitives import hashes

    out, seen = [], set()
    for pem in pems:
        for cert in _certs(pem):
            if cert.fingerprint(hashes.SHA256()) not in seen:
                seen.add(cert.fingerprint(hashes.SHA256()))
                out.append(crypto.cert_pem(cert))
    return b"".join(out)


def fingerprints(pem: bytes) -> list[str]:
    from cryptography.hazmat.primitives import hashes

    return [c.fingerprint(hashes.SHA256()).hex() for c in _certs(pem)]


def _stage(store, name: str) -> dict[str, Path]:
    """pki/rotate-ca/<base>.{old,new}.{crt,key}"""
    from provision.pki.certlist import CA_BY_NAME

    base = store.pki_dir / STAGING / CA_BY_NAME[name].base_name
    return {part: base.with_name(f"{base.name}.{part}") for part in ("old.crt", "old.key", "new.crt", "new.key")}


def desired_ca(stage: dict[str, bytes], step: str) -> tuple[bytes, bytes]:
    """(<ca>.crt, <ca>.key) as the local step `step` leaves them (pure): the first certificate signs."""
    old, new = stage["old.crt"], stage["new.crt"]
    if step == "issue":
        return bundle(old, new), stage["old.key"]
    if step == "reissue":
        return bundle(new, old), stage["new.key"]
    if step == "drop":
        return bundle(new), stage["new.key"]
    raise ValueError(step)


def _issue_new(store, name: str, now: dt.datetime) -> dict[str, bytes]:
    """The staged old and new CA, made once: an interrupted issue finds what it wrote and keeps it."""
    from provision.fsutil import PRIVATE_FILE_MODE, PUBLIC_FILE_MODE, atomic_write, ensure_private_dir
    from provision.pki import crypto
    from provision.pki.certlist import CA_BY_NAME

    spec = CA_BY_NAME[name]
    paths = _stage(store, name)
    ensure_private_dir(paths["old.crt"].parent)
    crt_path, key_path = store.ca_paths(spec)
    if not paths["old.crt"].exists():
        # The CA as it is before any change (one certificate: check refused a bundle).
        atomic_write(paths["old.key"], key_path.read_bytes(), PRIVATE_FILE_MODE, replace=True)
        atomic_write(paths["old.crt"], crt_path.read_bytes(), PUBLIC_FILE_MODE)
    if not paths["new.crt"].exists():
        if paths["new.key"].exists():
            key = crypto.load_key(paths["new.key"].read_bytes())
        else:
            key = crypto.new_key(store.cluster.certificates.key_algorithm)
            atomic_write(paths["new.key"], crypto.key_pem(key), PRIVATE_FILE_MODE)
        validity = dt.timedelta(days=store.cluster.certificates.ca_validity_days)
        atomic_write(paths["new.crt"], crypto.cert_pem(crypto.issue_ca(key, spec.common_name, validity, now)), PUBLIC_FILE_MODE)
    return {part: path.read_bytes() for part, path in paths.items()}


def _backup_dir(root: Path, now: dt.datetime, step: str) -> Path:
    base = root / "backup" / f"{now:%Y%m%dT%H%M%SZ}-rotate-ca-{step}"
    candidate, n = base, 0
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}.{n}")
    return candidate


def _set_ca(store, name: str, crt: bytes, key: bytes, backup: Path) -> bool:
    """Write the CA's files if they differ, each replaced file copied into `backup` first."""
    from provision.fsutil import PRIVATE_FILE_MODE, PUBLIC_FILE_MODE, atomic_write, backup_file
    from provision.pki.certlist import CA_BY_NAME

    crt_path, key_path = store.ca_paths(CA_BY_NAME[name])
    changed = False
    for path, data, mode in ((key_path, key, PRIVATE_FILE_MODE), (crt_path, crt, PUBLIC_FILE_MODE)):
        if path.exists() and path.read_bytes() == data:
            continue
        if path.exists():
            backup_file(path, backup / path.parent.relative_to(store.root))
        atomic_write(path, data, mode, replace=True)
        changed = True
    return changed


def stale_credentials(store, name: str, *, leaves: bool) -> list:
    """The kubeconfigs of CA `name` whose embedded trust is not its file's, and (`leaves`) every
    certificate it does not sign now (signed by the old CA) or that is missing."""
    rows, _ = store.check()
    found = []
    for cred, row in zip(store.credentials(), rows):
        if cred.ca != name:
            continue
        if any("embedded CA" in p for p in row.problems) or (
                leaves and any(p == "missing" or p.startswith("not signed by") for p in row.problems)):
            found.append(cred)
    return found


def local_step(cluster, cluster_dir: Path, name: str, step: str, now: dt.datetime | None = None) -> list[str]:
    """issue, reissue or drop in the cluster directory; what changed, said as lines. Idempotent:
    run again after an interruption, it finishes what is left."""
    from provision.pki.store import PKIStore

    now = now or dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    store = PKIStore(cluster, cluster_dir)
    said = []
    staged = _issue_new(store, name, now) if step == "issue" else \
        {part: path.read_bytes() for part, path in _stage(store, name).items()}
    crt, key = desired_ca(staged, step)
    backup = _backup_dir(store.root, now, step)
    if _set_ca(store, name, crt, key, backup):
        said.append(f"{store.ca_paths(_spec(name))[0].relative_to(store.root)}: {len(_certs(crt))} CA certificate(s), "
                    f"signing with the {'old' if step == 'issue' else 'new'} one (replaced files in {backup})")
    store = PKIStore(cluster, cluster_dir)  # the CA as just written
    creds = stale_credentials(store, name, leaves=step == "reissue")
    if creds:
        store.renew(creds, now=now)
        said.append(f"{len(creds)} certificates and kubeconfigs re-issued: "
                    + ", ".join(c.label for c in creds[:6]) + (" …" if len(creds) > 6 else ""))
    return said


def _spec(name: str):
    from provision.pki.certlist import CA_BY_NAME

    return CA_BY_NAME[name]


def finish_local(cluster_dir: Path, now: dt.datetime | None = None) -> Path | None:
    """The staged old and new CA moved into backup/ (the old key is kept, never deleted)."""
    now = now or dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    staging = Path(cluster_dir) / "pki" / STAGING
    if not staging.exists():
        return None
    target = _backup_dir(Path(cluster_dir), now, "done")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(staging), str(target))
    return target


# --- on the hosts ------------------------------------------------------------------------------------------

def touched_paths(cluster, host, tree: dict, name: str, step: str) -> list[str]:
    """The paths of `host`'s tree a roll step changes (pure; what the dry run names)."""
    from provision.pki.certlist import CA_BY_NAME, CERTS
    from provision.pki.kubeconfigs import KUBECONFIGS
    from provision.render.pki_files import KUBERNETES_DIR, PKI_DIR, SIGNING_SUFFIX

    base = CA_BY_NAME[name].base_name
    paths = {str(PKI_DIR / f"{base}.crt")}
    if step in ("trust", "trust-new") and name == "ca":
        paths |= {str(PKI_DIR / f"{base}{SIGNING_SUFFIX}"), "/etc/kubernetes/manifests/kube-controller-manager.yaml"}
    if step == "switch":
        paths |= {str(PKI_DIR / f"{base}.key"), str(PKI_DIR / f"{base}{SIGNING_SUFFIX}")}
        paths |= {str(PKI_DIR / f"{s.base_name}.{ext}") for s in CERTS if s.ca == name for ext in ("crt", "key")}
    if name == "ca" and step in ("trust", "switch", "trust-new"):
        paths |= {str(KUBERNETES_DIR / kc.file) for kc in KUBECONFIGS}
    return sorted(p for p in paths if PurePosixPath(p) in tree or p in tree)


def _roll_spec(ctx, install=None):
    from provision.phases.files import desired_tree
    from provision.rolling import Roll

    # Only files that carry the CA change: workers restart their kubelet alone, their pods keep running.
    return Roll(tree=lambda h: desired_tree(ctx, h, joined=True), install=install, drain=False)


def _kubelet_cert(ctx, host) -> bytes:
    result = ctx.transport.run(host, f"cat {KUBELET_CLIENT} 2>/dev/null; true", timeout=30)
    return result.stdout.encode() if isinstance(result.stdout, str) else result.stdout


def signed_by_pem(leaf_pem: bytes, ca_pem: bytes) -> bool:
    """Whether the first certificate of `leaf_pem` (a kubelet's cert+key file) is signed by `ca_pem`'s first (pure)."""
    from provision.pki import crypto

    leaves, cas = _certs(_only_certs(leaf_pem)), _certs(ca_pem)
    return bool(leaves and cas) and crypto.signed_by(leaves[0], cas[0])


def _only_certs(pem: bytes) -> bytes:
    """The CERTIFICATE blocks of a PEM file that also holds a key."""
    out, inside = [], False
    for line in pem.splitlines(keepends=True):
        if line.startswith(b"-----BEGIN CERTIFICATE-----"):
            inside = True
        if inside:
            out.append(line)
        if line.startswith(b"-----END CERTIFICATE-----"):
            inside = False
    return b"".join(out)


# Moves the kubelet's rotated client certificate aside (kept, with a timestamp), so the restarted
# kubelet starts from kubelet.conf's certificate and asks for a new one through a CSR.
_RESET_KUBELET_CLIENT = r"""
set -e
f=$1
[ -e "$f" ] || [ -L "$f" ] || exit 0
aside=$(dirname "$f")/kubeprov-rotate-ca
mkdir -p "$aside"
cp -P -- "$f" "$aside/$(basename "$f").$(date +%s)"
rm -f -- "$f"
"""


def kubelet_install(ctx, new_ca: bytes):
    """Roll.install for the kubelets step: True (restart the kubelet) when its client certificate
    is not signed by the new CA yet."""
    from provision.transport import remote

    def install(host) -> bool:
        if signed_by_pem(_kubelet_cert(ctx, host), new_ca):
            ctx.say(host.name, "kubelet client certificate already signed by the new CA")
            return False
        result = ctx.transport.run(host, remote.script(_RESET_KUBELET_CLIENT, KUBELET_CLIENT), timeout=60)
        if not result.ok:
            raise KubeprovError(f"{host.name}: moving {KUBELET_CLIENT} aside failed (exit {result.exit_code}): {result.summary()}")
        ctx.say(host.name, f"{KUBELET_CLIENT} moved aside (kept in kubeprov-rotate-ca/): the kubelet starts from kubelet.conf", "changed")
        return True

    return install


def wait_kubelets(ctx, hosts: Iterable, new_ca: bytes) -> None:
    """Until every kubelet's client certificate is signed by the new CA (its CSR approved and signed)."""
    timeout = ctx.options.node_timeout
    started = time.monotonic()
    behind = list(hosts)
    while behind:
        behind = [h for h in behind if not signed_by_pem(_kubelet_cert(ctx, h), new_ca)]
        if not behind:
            break
        if time.monotonic() - started > timeout:
            raise KubeprovError(f"{', '.join(h.name for h in behind)}: the kubelet's client certificate is not signed by "
                                f"the new CA after {timeout:g} s (its CSR: `kubectl get csr`); the rotation stops here; "
                                "run it again once it is")
        time.sleep(2)
    ctx.say("local", "every kubelet's client certificate is signed by the new CA", "ok")


def wait_root_ca(ctx, want: bytes) -> None:
    """Until every namespace's kube-root-ca.crt holds exactly the CAs of `want` (the controller
    manager publishes its --root-ca-file there)."""
    timeout = ctx.options.api_timeout
    started = time.monotonic()
    wanted = sorted(fingerprints(want))
    while True:
        result = ctx.kubectl(local=False).run("get", "configmaps", "-A", "--field-selector=metadata.name=kube-root-ca.crt",
                                              "-o", "json", check=False, timeout=60)
        items = result.json("kubectl get configmaps").get("items", []) if result.ok else []
        behind = [i["metadata"]["namespace"] for i in items
                  if sorted(fingerprints(i.get("data", {}).get("ca.crt", "").encode())) != wanted]
        if items and not behind:
            ctx.say("local", f"kube-root-ca.crt holds {len(wanted)} CA certificate(s) in all {len(items)} namespaces")
            return
        if time.monotonic() - started > timeout:
            raise KubeprovError(f"kube-root-ca.crt still differs from the CA bundle after {timeout:g} s in: "
                                f"{', '.join(behind) or '(none listed)'}; see kube-controller-manager's log")
        time.sleep(2)


def restart_workloads(ctx) -> None:
    """Every Deployment, DaemonSet and StatefulSet restarted and rolled out: their pods' clients read
    the CA from the service account volume once, at start."""
    kubectl = ctx.kubectl(local=False)
    listed = kubectl.run("get", "deployments,daemonsets,statefulsets", "-A", "-o", "json", timeout=60).json("kubectl get")
    items = listed.get("items", [])
    # `rollout restart` replaces no pod of an OnDelete workload (and `rollout status` refuses it): said, left to its owner.
    on_delete = [f"{i['metadata']['namespace']}/{i['kind'].lower()}/{i['metadata']['name']}" for i in items
                 if (i.get("spec", {}).get("updateStrategy") or {}).get("type") == "OnDelete"]
    names = [(i["metadata"]["namespace"], f"{i['kind'].lower()}/{i['metadata']['name']}") for i in items
             if f"{i['metadata']['namespace']}/{i['kind'].lower()}/{i['metadata']['name']}" not in on_delete]
    if on_delete:
        ctx.say("local", "not restarted (OnDelete update strategy: delete their pods to load the CA bundle): "
                + ", ".join(on_delete), "warning")
    for namespace, what in names:
        kubectl.run("rollout", "restart", what, "-n", namespace, timeout=60)
    for namespace, what in names:
        kubectl.run("rollout", "status", what, "-n", namespace, f"--timeout={int(ctx.options.node_timeout)}s",
                    timeout=ctx.options.node_timeout + 60)
    ctx.say("local", f"{len(names)} workloads restarted to read the CA bundle: "
            + ", ".join(f"{ns}/{what}" for ns, what in names[:6]) + (" …" if len(names) > 6 else ""), "changed")


# --- the whole rotation ----------------------------------------------------------------------------------------

@dataclass
class Rotation:
    ctx: object  # UpContext
    name: str

    def journal(self):
        from provision.phases.journal import HostJournal

        return HostJournal.open(self.ctx.cluster_dir / JOURNAL, _key(self.name))

    def roll_journal(self, step: str):
        from provision.phases.journal import HostJournal

        return HostJournal.open(self.ctx.cluster_dir / f"rotate-ca.{step}.json", f"{_key(self.name)}:{step}")

    def staged_new(self) -> bytes:
        from provision.pki.store import PKIStore

        return _stage(PKIStore(self.ctx.cluster, self.ctx.cluster_dir), self.name)["new.crt"].read_bytes()

    def reread(self) -> None:
        """The PKI changed locally: render again, and read every host's files again when next asked."""
        ctx = self.ctx
        ctx.reread_pki()
        for host in ctx.cluster.hosts:
            ctx.facts.forget(host)


def plan_lines(rotation: Rotation):
    """(host, line) per step and host, without changing anything or asking any host (the steps'
    files from the current render)."""
    from provision.pki.certlist import CA_BY_NAME
    from provision.phases.files import desired_tree
    from provision.rolling import restarts, waves

    ctx, name = rotation.ctx, rotation.name
    journal = rotation.journal()
    base = CA_BY_NAME[name].base_name
    fmt = {"crt": f"pki/{base}.crt", "key": f"pki/{base}.key"}
    if journal.resumed:
        yield "local", "resume the interrupted rotation; done already: " + (
            ", ".join(s.name for s in steps_for(name) if journal.done(s.name)) or "nothing")
    numbered = list(enumerate(steps_for(name), 1))
    for number, step in numbered:
        head = f"{number}/{len(numbered)} {step.name}"
        if journal.done(step.name):
            yield "local", f"{head}: done"
            continue
        if not step.roll:
            yield "local", f"{head}: {step.what.format(**fmt)}"
            continue
        done = rotation.roll_journal(step.name)
        for wave in waves(ctx.cluster, list(ctx.cluster.nodes)):
            for host in wave:
                if done.done(host.name):
                    yield host.name, f"{head}: done"
                    continue
                tree = desired_tree(ctx, host, joined=True)
                paths = touched_paths(ctx.cluster, host, tree, name, step.name)
                if step.name == "kubelets":
                    yield host.name, f"{head}: {step.what}; wait for its Node Ready"
                    continue
                if not paths:
                    yield host.name, f"{head}: holds no file of the {name} CA: not rolled"
                    continue
                order = "one control plane at a time (etcd healthy)" if len(wave) == 1 and wave[0] in ctx.cluster.control_planes \
                    else "a worker, not drained"
                yield host.name, f"{head}: {step.what}: {order}; replace {', '.join(paths)}; {restarts(tree, paths).said()}"
        if step.name == "trust" and name == "ca":
            yield "local", f"{head}: cluster-info (kube-public) carries both CAs"
        if step.name == "kubelets":
            yield "local", f"{head}: every kubelet's client certificate checked: signed by the new CA"
        if step.name == "trust-new" and name == "ca":
            yield "local", f"{head}: cluster-info and every kube-root-ca.crt carry the new CA alone"
    yield "local", "the old CA's files stay in the cluster directory's backup/"


def rotate(rotation: Rotation) -> None:
    from provision import rolling

    ctx, name = rotation.ctx, rotation.name
    journal = rotation.journal()
    steps = steps_for(name)
    if journal.resumed:
        ctx.say("local", "resuming the interrupted rotation of the " + name + " CA; done: "
                + (", ".join(s.name for s in steps if journal.done(s.name)) or "nothing"))
    for number, step in enumerate(steps, 1):
        head = f"{number}/{len(steps)} {step.name}"
        if journal.done(step.name):
            rotation.roll_journal(step.name).finish()
            continue
        if not journal.resumed and number == 1:
            journal.mark("started", "running")  # from here on an interruption resumes, and another CA is refused
        if step.name in ("issue", "reissue", "drop"):
            for line in local_step(ctx.cluster, ctx.cluster_dir, name, step.name):
                ctx.say("local", f"{head}: {line}", "changed")
            rotation.reread()
        elif step.name == "pods":
            wait_root_ca(ctx, _trust(ctx, name))
            restart_workloads(ctx)
        else:
            install = kubelet_install(ctx, rotation.staged_new()) if step.name == "kubelets" else None
            ctx.say("local", f"{head}: {step.what}: control planes one at a time, then the workers")
            rolling.roll(ctx, list(ctx.cluster.nodes), _roll_spec(ctx, install), rotation.roll_journal(step.name))
            if step.name == "kubelets":
                wait_kubelets(ctx, list(ctx.cluster.nodes), rotation.staged_new())
            if name == "ca" and step.name in ("trust", "trust-new"):
                from provision.phases.objects import run_bootstrap_token

                run_bootstrap_token(ctx)  # cluster-info: what joining nodes trust
                if step.name == "trust-new":
                    wait_root_ca(ctx, _trust(ctx, name))
            rotation.reread()
        journal.mark(step.name, "done")
        rotation.roll_journal(step.name).finish()
        ctx.say("local", f"{head}: done", "ok")
    moved = finish_local(ctx.cluster_dir)
    journal.finish()
    ctx.say("local", f"the {name} CA is rotated" + (f"; the old and new CA's staged files are in {moved}" if moved else ""), "ok")


def _trust(ctx, name: str) -> bytes:
    from provision.pki.store import PKIStore

    return PKIStore(ctx.cluster, ctx.cluster_dir).trust_pem(name)
