"""Piped output of the commands that need real hosts, run as the real command:

- `lab status -o json` lists the same lab and hosts as its text;
- `token create`, `token create --print-join-command`, `join-command` and `token list [-o json]`
  against a real API server: a lab host running the real kube-apiserver (and etcd) with the
  commands of kubeprov's own rendered static-pod manifests and the cluster's PKI pushed by
  `kubeprov sync`. The join line stays one line, byte for byte the one built here from the token
  and openssl's hash of the CA key; `token list -o json` carries the table's rows, which are the
  bootstrap-token Secrets kubectl reads from the API.

The API part needs real Kubernetes binaries: KUBEPROV_E2E_BUNDLE=DIR, a directory holding
kube-apiserver and kubectl (as tests/e2e takes it); it skips without one.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from provision.lab.access import ssh_args
from provision.lab.testing import running_lab
from testkit import KUBEPROV

pytestmark = pytest.mark.lab

SOURCE = os.environ.get("KUBEPROV_E2E_BUNDLE")
TOKEN = re.compile(r"[a-z0-9]{6}\.[a-z0-9]{16}")


def piped(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(KUBEPROV), *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "FORCE_COLOR": "1"})


def test_lab_status_as_json_has_the_listings_hosts():
    with running_lab("o", hosts=1) as lab:
        listed = piped("lab", "status")
        as_json = piped("lab", "status", "-o", "json")
    assert listed.returncode == 0 and as_json.returncode == 0, listed.stderr + as_json.stderr
    assert as_json.stderr == "" and "\x1b" not in listed.stdout
    mine = next(entry for entry in json.loads(as_json.stdout) if entry["name"] == lab.name)
    assert [(h["name"], h["address"], h["running"]) for h in mine["hosts"]] == [(h.name, h.address, True) for h in lab.hosts]
    text = listed.stdout.splitlines()
    head = text.index(f"{lab.name} {mine['subnet']} · 1/1 hosts running · {mine['stateDir']}")
    assert text[head + 1].split() == [lab.hosts[0].name, lab.hosts[0].address, "running"]


def _binaries() -> Path:
    if not SOURCE:
        pytest.skip("KUBEPROV_E2E_BUNDLE=DIR (real Kubernetes binaries) is not set: no API server to ask")
    for where in (Path(SOURCE), Path(SOURCE) / "bin"):
        if (where / "kube-apiserver").is_file() and (where / "kubectl").is_file():
            return where
    pytest.skip(f"{SOURCE} holds no kube-apiserver and kubectl binaries (a directory of binaries is needed)")


def _ca_hash(ca: Path) -> str:
    """sha256 of the CA's public key info, computed by openssl (kubeadm's discovery hash)."""
    der = subprocess.run(f"openssl x509 -in {ca} -noout -pubkey | openssl pkey -pubin -outform der",
                         shell=True, capture_output=True, check=True).stdout
    digest = subprocess.run(["sha256sum"], input=der, capture_output=True, check=True).stdout.split()[0].decode()
    return f"sha256:{digest}"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """A one-host lab whose host runs etcd and kube-apiserver as rendered by kubeprov."""
    binaries = _binaries()
    etcd = shutil.which("etcd")
    if etcd is None:
        pytest.skip("no etcd binary on this machine (scripts/setup installs etcd-server)")
    version = subprocess.run([str(binaries / "kubectl"), "version", "--client", "-o", "json"], capture_output=True,
                             text=True, check=True).stdout
    version = json.loads(version)["clientVersion"]["gitVersion"]
    with running_lab("k", hosts=1) as lab:
        host = lab.hosts[0]

        def ssh(command: str, stdin: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
            proc = subprocess.run(ssh_args(host.address, lab.key, lab.known_hosts) + [command], input=stdin,
                                  capture_output=True, timeout=300)
            assert not check or proc.returncode == 0, f"`{command}`: {proc.stderr.decode(errors='replace')}"
            return proc

        work = tmp_path_factory.mktemp("api")
        doc = yaml.safe_load(lab.cluster_file.read_text())
        doc.update(kubernetesVersion=version, clusterDir=str(work / "cluster"), cni="bridge")
        cluster = work / "cluster.yaml"
        cluster.write_text(yaml.safe_dump(doc, sort_keys=False))
        for args in (["certs", "generate"], ["render", "-o", work / "render"]):
            proc = piped(*args, "-c", cluster)
            assert proc.returncode == 0, f"kubeprov {args[0]}: {proc.stderr}"
        # sync refuses a render's _cluster/ directory (objects `up` applies through the API): set aside.
        (work / "render" / "_cluster").rename(work / "objects")
        proc = piped("sync", "--from", work / "render", "-c", cluster)
        assert proc.returncode == 0, f"kubeprov sync: {proc.stderr}"
        for source, target in ((binaries / "kube-apiserver", "/usr/local/bin/kube-apiserver"),
                               (binaries / "kubectl", "/usr/bin/kubectl"), (Path(etcd), "/usr/local/bin/etcd")):
            ssh(f"cat > {target} && chmod 0755 {target}", stdin=source.read_bytes())
        manifests = work / "render" / host.name / "etc" / "kubernetes" / "manifests"
        for unit, name in (("t-etcd", "etcd"), ("t-apiserver", "kube-apiserver")):
            command = yaml.safe_load((manifests / f"{name}.yaml").read_text())["spec"]["containers"][0]["command"]
            command[0] = f"/usr/local/bin/{name}"
            ssh(f"mkdir -p /var/lib/etcd /var/log/kubernetes/audit && systemd-run --unit={unit} {shlex.join(command)}")
        deadline = time.monotonic() + 180
        while ssh("kubectl --kubeconfig=/etc/kubernetes/admin.conf get --raw=/readyz", check=False).stdout != b"ok":
            assert time.monotonic() < deadline, ssh("journalctl -u t-apiserver -n 20 --no-pager", check=False).stdout.decode()
            time.sleep(2)
        # What `up` puts in the cluster for joins: cluster-info (unsigned; token create signs it).
        ssh("kubectl --kubeconfig=/etc/kubernetes/admin.conf apply -f -",
            stdin=(work / "objects" / "cluster-info.yaml").read_bytes())
        yield cluster, work / "cluster" / "pki" / "ca.crt", f"{host.address}:6443", ssh


def test_token_create_and_join_lines_piped_are_one_line_each(api):
    cluster, ca, endpoint, ssh = api
    created = piped("token", "create", "-c", cluster)
    assert created.returncode == 0 and created.stderr == "", created.stderr
    assert TOKEN.fullmatch(created.stdout.rstrip("\n")) and created.stdout.count("\n") == 1

    for args in (["token", "create", "--print-join-command"], ["join-command"]):
        proc = piped(*args, "-c", cluster)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        token = TOKEN.search(proc.stdout).group(0)
        expected = f"kubeadm join {endpoint} --token {token} --discovery-token-ca-cert-hash {_ca_hash(ca)}\n"
        assert proc.stdout == expected and len(expected) > 120  # longer than any width it was once cut at


def test_token_list_as_json_has_the_tables_rows_and_the_apis_tokens(api):
    cluster, _, _, ssh = api
    described = "made by [bold]a test[/bold]"  # markup-like text is shown as it is
    made = piped("token", "create", "--ttl", "2h", "--description", described, "-c", cluster)
    assert made.returncode == 0, made.stderr
    table = piped("token", "list", "-c", cluster)
    as_json = piped("token", "list", "-c", cluster, "-o", "json")
    assert table.returncode == 0 and as_json.returncode == 0, table.stderr + as_json.stderr
    assert table.stderr == as_json.stderr == "" and "\x1b" not in table.stdout
    rows = json.loads(as_json.stdout)

    header, *lines = table.stdout.splitlines()
    assert re.split(r" {3,}", header) == ["TOKEN", "TTL", "EXPIRES", "USAGES", "DESCRIPTION", "EXTRA GROUPS"]
    as_cells = [[r["token"], r["ttl"], r["expires"] or "<never>", ",".join(r["usages"]), r["description"] or "<none>",
                 ",".join(r["extraGroups"])] for r in rows]
    assert [re.split(r" {3,}", line) for line in lines] == as_cells
    mine = next(r for r in rows if r["token"] == made.stdout.strip())
    assert mine["description"] == described and mine["ttl"] in ("1h", "2h")

    # The rows are the cluster's bootstrap-token Secrets, as kubectl reads them from the API.
    secrets = json.loads(ssh("kubectl --kubeconfig=/etc/kubernetes/admin.conf get secrets -n kube-system "
                             "--field-selector=type=bootstrap.kubernetes.io/token -o json").stdout)["items"]

    def field(secret: dict, key: str) -> str:
        return base64.b64decode(secret["data"].get(key, "")).decode()

    assert sorted(f"{field(s, 'token-id')}.{field(s, 'token-secret')}" for s in secrets) == sorted(r["token"] for r in rows)
    by_token = {r["token"]: r for r in rows}
    for s in secrets:
        row = by_token[f"{field(s, 'token-id')}.{field(s, 'token-secret')}"]
        assert row["expires"] == (field(s, "expiration") or None)
        assert row["description"] == field(s, "description")
