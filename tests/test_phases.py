"""The phase runner: order, --skip-phases, run_if, children, --dry-run, and the resume journal."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from provision.errors import ConfigError, KubeprovError
from provision.phases import Journal, Phase, PhaseFailed, Reporter, Runner, flatten, select


@dataclass
class Ctx:
    ran: list[str] = field(default_factory=list)
    fail_at: str | None = None
    external_etcd: bool = True
    reporter: object = None
    step: object = None


def _phase(name, *children, run_if=lambda ctx: True, why_not=""):
    def run(ctx):
        if ctx.fail_at == name:
            raise KubeprovError(f"{name} broke")
        ctx.ran.append(name)

    return Phase(name, f"does {name}", run, run_if=run_if, plan=lambda ctx: [(None, f"would {name}")],
                 children=tuple(children), why_not=why_not)


def tree():
    return [
        _phase("certs"),
        _phase("etcd", _phase("install"), _phase("health"), run_if=lambda ctx: ctx.external_etcd, why_not="stacked"),
        _phase("control-plane"),
        _phase("workers"),
    ]


class Collect(Reporter):
    def __init__(self):
        self.ends, self.plans = [], []

    def phase_end(self, step, status, seconds, detail=""):
        self.ends.append((step.path, status))

    def plan_line(self, step, host, text):
        self.plans.append((step.path, text))


def test_flatten_gives_paths_in_run_order():
    assert [s.path for s in flatten(tree())] == ["certs", "etcd", "etcd/install", "etcd/health", "control-plane", "workers"]


def test_runs_in_order_and_children_after_their_parent():
    ctx = Ctx()
    Runner(tree()).run(ctx)
    assert ctx.ran == ["certs", "etcd", "install", "health", "control-plane", "workers"]


def test_skip_phases_skips_a_phase_and_a_parent_with_its_children():
    ctx, reporter = Ctx(), Collect()
    report = Runner(tree(), reporter).run(ctx, skip=select(tree(), ["workers", "etcd"]))
    assert ctx.ran == ["certs", "control-plane"]
    assert report.statuses == {"certs": "done", "etcd": "skipped", "etcd/install": "skipped", "etcd/health": "skipped",
                               "control-plane": "done", "workers": "skipped"}


def test_skip_names_one_child():
    ctx = Ctx()
    Runner(tree()).run(ctx, skip=select(tree(), ["etcd/health"]))
    assert ctx.ran == ["certs", "etcd", "install", "control-plane", "workers"]


def test_unknown_phase_name_is_a_clear_error():
    with pytest.raises(ConfigError, match="no phase named 'etc'.*certs, etcd"):
        select(tree(), ["etc"])


def test_run_if_false_declines_the_phase_and_its_children():
    ctx = Ctx(external_etcd=False)
    report = Runner(tree()).run(ctx)
    assert ctx.ran == ["certs", "control-plane", "workers"]
    assert [report.statuses[p] for p in ("etcd", "etcd/install", "etcd/health")] == ["not-needed"] * 3


def test_only_runs_one_phase_with_its_children():
    ctx = Ctx()
    Runner(tree()).run(ctx, only=select(tree(), ["etcd"]))
    assert ctx.ran == ["etcd", "install", "health"]


def test_dry_run_plans_and_runs_nothing():
    ctx, reporter = Ctx(), Collect()
    report = Runner(tree(), reporter).run(ctx, dry_run=True)
    assert ctx.ran == []
    assert reporter.plans == [(p, f"would {p.rsplit('/', 1)[-1]}") for p in
                              ["certs", "etcd", "etcd/install", "etcd/health", "control-plane", "workers"]]
    assert set(report.statuses.values()) == {"planned"}


def test_failure_names_the_phase_and_the_journal_resumes_after_the_completed_ones(tmp_path):
    ctx = Ctx(fail_at="health")
    journal, resumed = Journal.open(tmp_path, "spec-1")
    assert not resumed
    with pytest.raises(PhaseFailed, match="phase etcd/health failed: health broke"):
        Runner(tree()).run(ctx, journal=journal)
    assert ctx.ran == ["certs", "etcd", "install"]
    on_disk = json.loads((tmp_path / "journal.json").read_text())
    assert list(on_disk["completed"]) == ["certs", "etcd", "etcd/install"]
    assert on_disk["failed"] == {"etcd/health": "phase etcd/health failed: health broke"}
    assert (tmp_path / "journal.json").stat().st_mode & 0o777 == 0o600

    # The next run of the same spec resumes: completed phases are not run again.
    ctx2, reporter = Ctx(), Collect()
    journal2, resumed = Journal.open(tmp_path, "spec-1")
    assert resumed
    report = Runner(tree(), reporter).run(ctx2, journal=journal2)
    assert ctx2.ran == ["health", "control-plane", "workers"]
    assert [report.statuses[p] for p in ("certs", "etcd", "etcd/install")] == ["resumed"] * 3
    assert json.loads((tmp_path / "journal.json").read_text())["finished"] is True

    # A finished run resumes nothing: the next `up` runs everything again.
    journal3, resumed = Journal.open(tmp_path, "spec-1")
    ctx3 = Ctx()
    Runner(tree()).run(ctx3, journal=journal3)
    assert not resumed and ctx3.ran == ["certs", "etcd", "install", "health", "control-plane", "workers"]


def test_a_failing_run_if_or_plan_is_that_phases_failure_in_the_journal_and_the_summary(tmp_path):
    """run_if and plan ask hosts too (an SSH failure there): the phase fails as if its run had."""
    def unreachable(ctx):
        raise KubeprovError("cp1: connection refused")

    phases = [_phase("certs"), _phase("preflight", run_if=unreachable), _phase("workers")]
    journal, _ = Journal.open(tmp_path, "spec-1")
    reporter = Collect()
    with pytest.raises(PhaseFailed, match="phase preflight failed: cp1: connection refused") as failed:
        Runner(phases, reporter).run(Ctx(), journal=journal)
    assert failed.value.report.statuses == {"certs": "done", "preflight": "failed"}
    assert reporter.ends == [("certs", "done"), ("preflight", "failed")]
    assert json.loads((tmp_path / "journal.json").read_text())["failed"] == {"preflight": "phase preflight failed: cp1: connection refused"}

    planning = [_phase("certs"), Phase("sync", "does sync", None, plan=unreachable)]
    with pytest.raises(PhaseFailed, match="phase sync failed: cp1: connection refused") as failed:
        Runner(planning).run(Ctx(), dry_run=True)
    assert failed.value.report.statuses == {"certs": "planned", "sync": "failed"}


def test_a_changed_spec_or_fresh_does_not_resume(tmp_path):
    journal, _ = Journal.open(tmp_path, "spec-1")
    with pytest.raises(PhaseFailed):
        Runner(tree()).run(Ctx(fail_at="workers"), journal=journal)
    assert not Journal.open(tmp_path, "spec-2")[1]
    assert not Journal.open(tmp_path, "spec-1", fresh=True)[1]
    assert Journal.open(tmp_path, "spec-1")[1]


def test_phase_run_takes_every_option_of_up_that_applies_to_a_run():
    """By construction (provision/phases/cli.py: takes_run_options), not by copy: an option added to
    up's runs reaches `phase run` too."""
    import typer.main

    from provision.cli import app

    root = typer.main.get_command(app)
    up = {p.name for p in root.commands["up"].params}
    phase_run = {p.name for p in root.commands["phase"].commands["run"].params}
    up_only = {"skip_phases", "fresh", "merge_kubeconfig"}  # a whole run's, not one phase's
    assert up - up_only == phase_run - {"name"}
    assert {"config", "bundle", "lab", "api_timeout", "parallel", "known_hosts", "dry_run"} <= phase_run


def test_a_discarded_journal_resumes_nothing(tmp_path):
    """reset discards an interrupted run's journal: the next up must rebuild the reset hosts."""
    with pytest.raises(PhaseFailed):
        Runner(tree()).run(Ctx(fail_at="workers"), journal=Journal.open(tmp_path, "spec-1")[0])
    assert Journal.open(tmp_path, "spec-1")[1] is True  # would resume
    assert Journal.discard(tmp_path) is True and Journal.discard(tmp_path) is False
    journal, resumed = Journal.open(tmp_path, "spec-1")
    assert not resumed and journal.completed == {}
