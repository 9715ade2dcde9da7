"""Run a phase tree in order: skip what --skip-phases names or run_if declines, skip what the
journal says already finished, print the plan instead of running under --dry-run, and stop at
the first failure (recorded in the journal, so the next run resumes there).

What happens is told to a Reporter (the CLI draws it with rich; tests collect it).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from provision.errors import KubeprovError
from provision.phases.journal import Journal
from provision.phases.phase import Context, Phase, Step, flatten


class PhaseFailed(KubeprovError):
    """A phase raised; the message names the phase and the cause."""

    def __init__(self, phase: str, cause: BaseException):
        self.phase = phase
        self.cause = cause
        text = str(cause) if isinstance(cause, KubeprovError) else f"{type(cause).__name__}: {cause}"
        super().__init__(f"phase {phase} failed: {text}")
        self.exit_code = getattr(cause, "exit_code", 1)
        self.report: RunReport | None = None


class Reporter:
    """Callbacks; the default does nothing."""

    def phase_start(self, step: Step) -> None: ...
    def phase_end(self, step: Step, status: str, seconds: float, detail: str = "") -> None: ...
    def plan_line(self, step: Step, host: str | None, text: str) -> None: ...
    def host_line(self, step: Step, host: str, status: str, text: str) -> None: ...


@dataclass
class RunReport:
    statuses: dict[str, str] = field(default_factory=dict)  # path → done | skipped | resumed | not-needed | planned | failed
    seconds: dict[str, float] = field(default_factory=dict)
    resumed: bool = False
    total: float = 0.0


class Runner:
    def __init__(self, phases: Iterable[Phase], reporter: Reporter | None = None):
        self.phases = tuple(phases)
        self.reporter = reporter or Reporter()

    def run(self, ctx: Context, *, dry_run: bool = False, skip: set[str] = frozenset(),
            only: set[str] | None = None, journal: Journal | None = None, resumed: bool = False) -> RunReport:
        report = RunReport(resumed=resumed)
        started = time.monotonic()
        declined: list[str] = []  # phases run_if turned down: their children are not needed either
        if hasattr(ctx, "reporter"):
            ctx.reporter = self.reporter
        for step in flatten(self.phases):
            path = step.path
            if only is not None and path not in only:
                continue
            if path in skip:
                self._end(report, step, "skipped", 0.0, "--skip-phases")
                continue
            if journal is not None and path in journal.completed and not dry_run:
                self._end(report, step, "resumed", 0.0, "done in the interrupted run")
                continue
            if hasattr(ctx, "step"):
                ctx.step = step  # before run_if: what it says (a retried SSH connect) is this phase's
            begin = time.monotonic()
            # run_if and plan ask hosts too: their failures are this phase's, journalled like a run's.
            try:
                if any(path.startswith(parent + "/") for parent in declined) or not step.phase.run_if(ctx):
                    declined.append(path)
                    self._end(report, step, "not-needed", time.monotonic() - begin, step.phase.why_not)
                    continue
                self.reporter.phase_start(step)
                if dry_run:
                    for host, text in (step.phase.plan(ctx) if step.phase.plan else ()):
                        self.reporter.plan_line(step, host, text)
                    self._end(report, step, "planned", time.monotonic() - begin)
                    continue
                if step.phase.run is not None:
                    step.phase.run(ctx)
            except BaseException as exc:
                seconds = time.monotonic() - begin
                failure = exc if isinstance(exc, PhaseFailed) else PhaseFailed(path, exc)
                if journal is not None and not dry_run and not isinstance(exc, KeyboardInterrupt):
                    journal.fail(path, str(failure))
                self._end(report, step, "failed", seconds, str(failure.cause if isinstance(failure, PhaseFailed) else exc))
                report.total = time.monotonic() - started
                if isinstance(exc, KeyboardInterrupt):
                    raise
                failure.report = report  # what ran before it, for the summary and benchmarks
                raise failure from exc
            seconds = time.monotonic() - begin
            if journal is not None:
                journal.done(path, seconds)
            self._end(report, step, "done", seconds)
        report.total = time.monotonic() - started
        if journal is not None and not dry_run and only is None:
            journal.finish()
        return report

    def _end(self, report: RunReport, step: Step, status: str, seconds: float, detail: str = "") -> None:
        report.statuses[step.path] = status
        report.seconds[step.path] = seconds
        self.reporter.phase_end(step, status, seconds, detail)
