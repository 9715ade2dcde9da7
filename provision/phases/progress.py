"""The phase runner's progress on a terminal (rich): a line per phase start and end, indented
lines per host as phases report them, dry-run plans under their phase, and a closing table."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from provision.phases.phase import Step
from provision.phases.runner import Reporter, RunReport

_STYLE = {"ok": "green", "changed": "yellow", "failed": "red", "unreachable": "red", "warning": "yellow"}
_END = {"done": "[green]✓[/]", "failed": "[red]✗[/]", "skipped": "[dim]–[/]", "resumed": "[cyan]↷[/]",
        "not-needed": "[dim]·[/]", "planned": "[blue]○[/]"}


class ConsoleReporter(Reporter):
    def __init__(self, console: Console):
        self.console = console

    def _indent(self, step: Step | None) -> str:
        return "  " * (step.depth if step else 0)

    def phase_start(self, step: Step) -> None:
        self.console.print(f"{self._indent(step)}[bold]▶ {step.path}[/] [dim]{escape(step.phase.description)}[/]", soft_wrap=True)

    def phase_end(self, step: Step, status: str, seconds: float, detail: str = "") -> None:
        mark = _END.get(status, status)
        suffix = f" ({escape(detail)})" if detail else ""
        timing = f" {seconds:.1f}s" if status in ("done", "failed") else ""
        self.console.print(f"{self._indent(step)}{mark} {step.path} [dim]{status}{timing}[/]{suffix}", soft_wrap=True)

    def plan_line(self, step: Step, host: str | None, text: str) -> None:
        where = f"{host:<14} " if host else ""
        self.console.print(f"{self._indent(step)}    {escape(where)}{escape(text)}", soft_wrap=True)

    def host_line(self, step: Step | None, host: str, status: str, text: str) -> None:
        style = _STYLE.get(status, "")
        self.console.print(f"{self._indent(step)}    {escape(host):<14} [{style}]{status:9}[/] {escape(text)}", soft_wrap=True)


class HostLines(Reporter):
    """A day-2 command's progress outside the phase runner (renew, rotate-ca, upgrade apply): one
    plain line per report, the host names aligned (`width`: the longest, "local" included)."""

    def __init__(self, console: Console, cluster):
        self.console = console
        self.width = max([len("local"), *(len(h.name) for h in cluster.hosts)])

    def line(self, host: str, text: str) -> None:
        self.console.print(f"{host:<{self.width}}  {text}", soft_wrap=True)

    def host_line(self, step: Step | None, host: str, status: str, text: str) -> None:
        self.line(host, f"{status:<8}  {text}")


def summary_table(report: RunReport) -> Table:
    table = Table(box=None, pad_edge=False, title="phases", title_justify="left")
    for column in ("PHASE", "STATUS", "SECONDS"):
        table.add_column(column, no_wrap=True)
    for path, status in report.statuses.items():
        table.add_row(path, status, f"{report.seconds.get(path, 0.0):.2f}")
    table.add_row("total", "", f"{report.total:.2f}")
    return table
