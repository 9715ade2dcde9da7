"""Every command that loads a cluster warns, one line on stderr, when a certificate of its cluster
directory (pki/ or a kubeconfig's embedded client certificate) expires within 30 days: it names
the certificate and its date and gives the `kubeprov certs renew` line that renews it. Stdout
stays clean (`-o json` parses); a cluster with fresh certificates gets no warning.

Certificates are real ones from the project's own PKI code: issued by `kubeprov certs generate`
or `certs renew` with a short `certificates.validityDays`, or by PKIStore with a fixed clock.
Dates are compared with what openssl reads from the files.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex
from pathlib import Path

import yaml

from provision.config import load_cluster
from provision.pki import PKIStore
from testkit import KUBEPROV, cluster_dir_of, openssl_x509, run_cli

HA = [*({"name": f"cp{i}", "address": f"192.0.2.1{i}", "roles": ["control-plane"]} for i in (1, 2, 3)),
      {"name": "w1", "address": "192.0.2.21", "roles": ["worker"]}]


def stamp(path: Path, kubeconfig: bool = False) -> str:
    """A certificate's notAfter as the warning writes it, read by openssl."""
    if kubeconfig:
        import base64

        doc = yaml.safe_load(path.read_text())
        pem = base64.b64decode(doc["users"][0]["user"]["client-certificate-data"])
        return f"{openssl_x509(pem).not_after:%Y-%m-%d %H:%M}Z"
    return f"{openssl_x509(path).not_after:%Y-%m-%d %H:%M}Z"


def set_validity(cluster: Path, days: int, ca_days: int | None = None) -> None:
    doc = yaml.safe_load(cluster.read_text())
    doc["certificates"] = {"validityDays": days, **({"caValidityDays": ca_days} if ca_days else {})}
    cluster.write_text(yaml.safe_dump(doc, sort_keys=False))


def one_warning(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def renew_line(warning: str) -> list[str]:
    """The command the warning gives, as argv for the kubeprov under test."""
    command = re.search(r"`(kubeprov certs renew [^`]*)`", warning).group(1)
    # --local-only: these hosts are TEST-NET addresses that nothing answers (the rollout to hosts is
    # tests/test_certs_renew_rollout.py's and the e2e's).
    return [str(KUBEPROV), *shlex.split(command)[1:], "--local-only"]


def run(argv: list[str]) -> tuple[int, str, str]:
    return run_cli(*argv[1:])


def test_fresh_certificates_give_no_warning(make_cluster, tmp_path):
    cluster = make_cluster()
    assert run_cli("certs", "generate", "-c", cluster)[0] == 0
    for args in (["config", "validate", "-c", cluster], ["render", "-c", cluster, "-o", tmp_path / "r"],
                 ["artifacts", "list", "-c", cluster, "-o", "json"]):
        code, out, err = run_cli(*args)
        assert code == 0 and err == "", (args, err)


def test_no_cluster_directory_yet_gives_no_warning(make_cluster):
    code, _, err = run_cli("config", "validate", "-c", make_cluster())
    assert code == 0 and err == ""


def test_everything_expiring_is_one_line_with_the_soonest_and_renew_all(make_cluster, tmp_path):
    cluster = make_cluster(certificates={"validityDays": 10})
    code, _, err = run_cli("certs", "generate", "-c", cluster)
    assert code == 0 and err == ""  # the directory was empty when it loaded the cluster
    pki = cluster_dir_of(cluster) / "pki"

    code, out, err = run_cli("render", "-c", cluster, "-o", tmp_path / "r")
    assert code == 0
    line = one_warning(err)
    count = len(PKIStore(load_cluster(cluster, None)).credentials())
    assert line.startswith(f"warning: {count} certificates expire within 30 days: apiserver (cp1) expires "
                           f"{stamp(pki / 'nodes' / 'cp1' / 'apiserver.crt')} (in 10 days), ")
    assert f"and {count - 3} more (`kubeprov certs check-expiration` lists them)" in line
    assert line.endswith(f"renew them with `kubeprov certs renew all -c {cluster}`")
    assert "warning" not in out and out.endswith(f"files written under {tmp_path / 'r'}\n")

    # -o json: the warning stays on stderr, stdout is the document alone.
    code, out, err = run_cli("artifacts", "list", "-c", cluster, "-o", "json")
    assert code == 0 and one_warning(err) == line
    assert json.loads(out)["cluster"] == "test"

    # check-expiration is the full report: its rows and attention lines, not the warning again.
    code, out, err = run_cli("certs", "check-expiration", "-c", cluster)
    assert code == 1 and "warning:" not in err
    assert len(err.splitlines()) == count and all(x.startswith("attention: ") for x in err.splitlines())

    # The command it gives renews them all: afterwards (with a year's validity) no warning.
    set_validity(cluster, 365)
    code, _, err = run(renew_line(line))
    assert code == 0 and err == "", err
    code, _, err = run_cli("render", "-c", cluster, "-o", tmp_path / "r")
    assert code == 0 and err == ""


def test_one_certificate_on_one_host_is_named_with_its_renew_command(make_cluster):
    cluster = make_cluster(hosts=HA, controlPlaneEndpoint="192.0.2.100:6443")
    assert run_cli("certs", "generate", "-c", cluster)[0] == 0
    root = cluster_dir_of(cluster)

    # cp2's kubelet.conf re-issued for 10 days: the warning names it and renews exactly it.
    set_validity(cluster, 10)
    code, _, err = run_cli("certs", "renew", "--local-only", "kubelet.conf", "--host", "cp2", "-c", cluster)
    assert code == 0
    date = stamp(root / "kubeconfigs" / "nodes" / "cp2" / "kubelet.conf", kubeconfig=True)
    expected = (f"warning: certificate kubelet.conf (cp2) expires {date} (in 10 days); "
                f"renew it with `kubeprov certs renew kubelet.conf --host cp2 -c {cluster}`")
    assert one_warning(err) == expected  # renew reports what it left expiring, read after renewing
    code, out, err = run_cli("config", "validate", "-c", cluster)
    assert code == 0 and one_warning(err) == expected and "warning" not in out

    set_validity(cluster, 365)
    code, out, err = run(renew_line(expected))
    assert code == 0 and err == "" and out.splitlines()[1] == "1 renewed"
    assert out.startswith("renewed  kubelet.conf (cp2)")

    # A cluster-wide kubeconfig: no --host.
    set_validity(cluster, 10)
    assert run_cli("certs", "renew", "--local-only", "admin.conf", "-c", cluster)[0] == 0
    set_validity(cluster, 365)
    code, _, err = run_cli("config", "validate", "-c", cluster)
    date = stamp(root / "kubeconfigs" / "admin.conf", kubeconfig=True)
    assert one_warning(err) == (f"warning: certificate admin.conf expires {date} (in 10 days); "
                                f"renew it with `kubeprov certs renew admin.conf -c {cluster}`")
    assert run(renew_line(err))[0] == 0
    assert run_cli("config", "validate", "-c", cluster)[2] == ""


def test_expired_certificates_and_a_cluster_dir_given_on_the_command_line(make_cluster, tmp_path):
    """Issued with a fixed clock 400 days ago (365-day leaves, 10-year CAs): every leaf has expired."""
    cluster = make_cluster()
    elsewhere = tmp_path / "elsewhere"
    model = load_cluster(cluster, None).model_copy(update={"cluster_dir": elsewhere})
    PKIStore(model).generate(now=dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(days=400))

    code, _, err = run_cli("config", "validate", "-c", cluster)
    assert code == 0 and err == ""  # its own cluster directory has no PKI
    code, _, err = run_cli("certs", "generate", "-c", cluster, "--cluster-dir", elsewhere)
    line = one_warning(err.replace("warning: some certificates are stale; `kubeprov certs renew NAME --host HOST` replaces them\n", ""))
    date = stamp(elsewhere / "pki" / "nodes" / "cp1" / "apiserver.crt")
    assert f": apiserver (cp1) expired {date}, " in line
    assert line.endswith(f"renew them with `kubeprov certs renew all -c {cluster} --cluster-dir {elsewhere}`")


def test_an_expiring_ca_is_named_and_said_not_renewable(make_cluster):
    cluster = make_cluster(certificates={"validityDays": 10, "caValidityDays": 10})
    assert run_cli("certs", "generate", "-c", cluster)[0] == 0
    code, _, err = run_cli("config", "validate", "-c", cluster)
    line = one_warning(err)
    pki = cluster_dir_of(cluster) / "pki"
    assert f"ca CA expires {stamp(pki / 'ca.crt')} (in 10 days)" in line
    assert (f"renew them with `kubeprov certs renew all -c {cluster}`; replace each CA with "
            f"`kubeprov certs rotate-ca ca -c {cluster}`, then ") in line
    assert f"`kubeprov certs rotate-ca etcd-ca -c {cluster}`" in line and line.endswith("`")
