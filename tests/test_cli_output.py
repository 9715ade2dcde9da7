"""Output meant for reuse, run as the real command with stdout piped (as `$(kubeprov …)`, `| jq`,
`> file` see it): plain text compared byte for byte with what the same data must give, never an
ANSI code (not even with FORCE_COLOR set), never a line cut at a width; and `-o json` carrying
the same rows as the table, alone on stdout.

The commands that need a running API server (token create|list, join-command) are proven on a
lab host in tests/lab/test_output_lab.py, with `lab status`.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import os
import re
import subprocess
from importlib.resources import files
from pathlib import Path

import pytest

from provision.phases.phase import flatten
from provision.phases.up import UP_PHASES
from testkit import KUBEPROV, cluster_dir_of, openssl_x509, run_cli

ANSI = re.compile(r"\x1b\[")


def piped(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real command, stdout and stderr to pipes; FORCE_COLOR set, which must not matter."""
    return subprocess.run([str(KUBEPROV), *map(str, args)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "FORCE_COLOR": "1", "TTY_COMPATIBLE": "1", **(env or {})})


def columns(text: str) -> list[list[str]]:
    """A piped table's lines split at its column gaps (three spaces or more; no cell holds one)."""
    return [re.split(r" {3,}", line) for line in text.splitlines()]


def aligned(header: list[str], rows: list[list[str]]) -> str:
    """What a piped table must be: columns three spaces apart, each as wide as its widest cell,
    one line per row, no trailing blanks."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "".join("   ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n" for row in [header, *rows])


# --- text to reuse -------------------------------------------------------------------------------


def test_config_example_piped_is_the_example_file_byte_for_byte():
    proc = piped("config", "example")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == files("provision.config").joinpath("example.yaml").read_text()
    assert proc.stderr == ""


def test_render_diff_piped_is_the_unified_diff_as_is(make_cluster, tmp_path):
    """A diff line holding a tab and one longer than any terminal come through unchanged (rich would
    expand the tab and a width would cut the line); the counts that follow match the trees on disk."""
    cluster = make_cluster()
    assert run_cli("certs", "generate", "-c", cluster)[0] == 0
    old, new = tmp_path / "old", tmp_path / "new"
    code, _, err = run_cli("render", "-c", cluster, "-o", old)
    assert code == 0, err
    path = "/var/lib/kubelet/config.yaml"
    edited = old / "cp1" / path.lstrip("/")
    assert edited.stat().st_mode & 0o077, "the test needs a file whose diff is shown (not a secret)"
    long_value = "x" * 300
    edited.write_text(edited.read_text() + f"# a\tcomment with a tab\nlongLine: {long_value}\n")

    proc = piped("render", "-c", cluster, "-o", new, "--diff", old)
    assert proc.returncode == 0, proc.stderr

    before = edited.read_text().splitlines(True)
    after = (new / "cp1" / path.lstrip("/")).read_text().splitlines(True)
    expected = f"changed  cp1:{path}\n"
    expected += "".join(difflib.unified_diff(before, after, f"a/cp1{path}", f"b/cp1{path}", n=2))
    expected += f"1 file(s) differ from {old}\n"
    total = 0
    for host_dir in sorted(p for p in new.iterdir() if p.is_dir()):
        tree = [f for f in host_dir.rglob("*") if f.is_file()]
        secret = sum(1 for f in tree if not f.stat().st_mode & 0o077)
        expected += f"{host_dir.name}: {len(tree)} files ({secret} secret)\n"
        total += len(tree)
    expected += f"{total} files written under {new}\n"
    assert proc.stdout == expected
    assert "-# a\tcomment with a tab\n" in proc.stdout and f"-longLine: {long_value}\n" in proc.stdout
    assert not ANSI.search(proc.stdout) and proc.stderr == ""


# --- tables: plain when piped, the same rows as JSON with -o json --------------------------------


def test_phase_list_piped_and_as_json():
    steps = flatten(UP_PHASES)
    proc = piped("phase", "list")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == aligned(["PHASE", "WHAT IT DOES"], [["  " * s.depth + s.path, s.phase.description] for s in steps])
    assert any(len(line) > 100 for line in proc.stdout.splitlines()), "no line long enough to show it is not cut at 80"

    as_json = piped("phase", "list", "-o", "json")
    assert as_json.returncode == 0 and as_json.stderr == ""
    rows = json.loads(as_json.stdout)
    table_rows = columns(proc.stdout)[1:]
    assert [r["phase"] for r in rows] == [cells[0].strip() for cells in table_rows] == [s.path for s in steps]
    assert [r["description"] for r in rows] == [cells[1] for cells in table_rows]
    assert all(r["parent"] == (r["phase"].rpartition("/")[0] or None) for r in rows)


def test_certs_check_expiration_as_json_has_the_tables_rows_and_the_real_dates(make_cluster):
    cluster = make_cluster(hosts=[{"name": "cp1", "address": "192.0.2.11", "roles": ["control-plane"]},
                                  {"name": "w1", "address": "192.0.2.21", "roles": ["worker"]}])
    assert run_cli("certs", "generate", "-c", cluster)[0] == 0
    table = piped("certs", "check-expiration", "-c", cluster)
    assert table.returncode == 0, table.stderr
    assert not ANSI.search(table.stdout) and table.stderr == ""
    leaf_part, ca_part = table.stdout.split("\n\n")
    leaf_lines, ca_lines = columns(leaf_part), columns(ca_part)
    assert leaf_lines[0] == ["CERTIFICATE", "HOST", "EXPIRES", "RESIDUAL", "CA", "EXTERNAL"]
    assert ca_lines[0] == ["CERTIFICATE AUTHORITY", "EXPIRES", "RESIDUAL", "EXTERNAL"]

    proc = piped("certs", "check-expiration", "-c", cluster, "-o", "json")
    assert proc.returncode == 0 and proc.stderr == ""
    doc = json.loads(proc.stdout)
    as_rows = [[r["name"], r["host"] or "-", dt.datetime.fromisoformat(r["expires"]).strftime("%Y-%m-%d %H:%MZ"),
                r["residual"], r["ca"], "yes" if r["external"] else "no"] for r in doc["certificates"]]
    assert as_rows == leaf_lines[1:]
    assert [[r["name"], dt.datetime.fromisoformat(r["expires"]).strftime("%Y-%m-%d %H:%MZ"), r["residual"],
             "yes" if r["external"] else "no"] for r in doc["certificateAuthorities"]] == ca_lines[1:]

    # The dates are the certificates' own, as openssl reads them.
    pki = cluster_dir_of(cluster) / "pki"
    by_key = {(r["name"], r["host"]): r for r in doc["certificates"]}
    assert openssl_x509(pki / "nodes" / "cp1" / "apiserver.crt").not_after == \
        dt.datetime.fromisoformat(by_key[("apiserver", "cp1")]["expires"])
    assert openssl_x509(pki / "ca.crt").not_after == \
        dt.datetime.fromisoformat(next(r for r in doc["certificateAuthorities"] if r["name"] == "ca")["expires"])
    assert {("kubelet.conf", "w1"), ("admin.conf", None)} <= set(by_key)


@pytest.mark.parametrize("with_cluster", [False, True], ids=["version", "cluster-file"])
def test_artifacts_list_one_line_per_artifact_and_as_json(make_cluster, with_cluster):
    args = ["-c", make_cluster(artifacts={"source": "release"})] if with_cluster else ["--version", "v1.31.4"]
    proc = piped("artifacts", "list", *args)
    assert proc.returncode == 0, proc.stderr
    assert not ANSI.search(proc.stdout) and proc.stderr == ""
    as_json = piped("artifacts", "list", *args, "-o", "json")
    assert as_json.returncode == 0 and as_json.stderr == ""
    doc = json.loads(as_json.stdout)
    artifacts = doc["artifacts"]
    lines = proc.stdout.splitlines()
    repos = [f"apt repository {r['name']}: {r['debLine']} (key {r['keyUrl']})" for r in doc["repositories"]]
    assert lines[:len(repos)] == repos
    title, header, *rows, count = lines[len(repos):]
    assert title.startswith(f"cluster {doc['cluster']} · " if with_cluster else f"Kubernetes {doc['kubernetesVersion']} · ")
    last = "HOSTS" if with_cluster else "WHEN"
    assert re.split(r" {3,}", header) == ["NAME", "KIND", "VERSION", "SOURCE", "SHA256", last]
    assert count == f"{len(artifacts)} artifacts" and len(rows) == len(artifacts)
    for line, a in zip(rows, artifacts):
        cells = re.split(r" {3,}", line.rstrip())
        expected = [a["name"], a["kind"], a["version"] or "(distribution)", a["source"], a["checksum"],
                    ", ".join(a["hosts"]) if with_cluster else a["when"]]
        assert cells == expected
    # Whole URLs on one line, however long (a release source's URLs are > 80 characters).
    assert max(len(line) for line in rows) > 160


def test_wrong_output_format_is_one_error_line():
    code, out, err = run_cli("phase", "list", "-o", "yaml")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == ["error: --output: 'yaml' is not one of table, json"]

