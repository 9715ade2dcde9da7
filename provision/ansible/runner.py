"""Run a playbook through ansible-runner and turn its event stream into per-host progress.

Each runner event updates a HostProgress (current task, ok/changed/failed/skipped counts, the
first failure in plain words); `on_update` is called with the host's progress after every task
result so the CLI can print live lines. ansible-playbook's own output is suppressed: the events
carry everything, and the failed host's error is lifted out of the result instead of dumped.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from provision.ansible.inventory import PLAYBOOKS
from provision.errors import KubeprovError


@dataclass
class HostProgress:
    host: str
    task: str = ""
    ok: int = 0
    changed: int = 0
    failed: int = 0
    skipped: int = 0
    unreachable: bool = False
    error: str = ""  # the first failure, in plain words
    changed_tasks: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.unreachable:
            return "unreachable"
        if self.failed:
            return "failed"
        return "changed" if self.changed else "ok"


@dataclass
class RunResult:
    status: str  # ansible-runner's: successful, failed, timeout, canceled
    rc: int
    hosts: dict[str, HostProgress]
    seconds: float
    task_seconds: dict[str, float] = field(default_factory=dict)  # task → its slowest host's time

    def slowest_tasks(self, count: int = 5) -> list[tuple[str, float]]:
        return sorted(self.task_seconds.items(), key=lambda kv: -kv[1])[:count]

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not any(h.failed or h.unreachable for h in self.hosts.values())

    def then(self, later: "RunResult") -> "RunResult":
        """This run followed by `later` (preflight, then the roles) as one: counts per host added."""
        hosts = {}
        for name in {**self.hosts, **later.hosts}:
            a, b = self.hosts.get(name, HostProgress(name)), later.hosts.get(name, HostProgress(name))
            hosts[name] = HostProgress(name, b.task or a.task, a.ok + b.ok, a.changed + b.changed, a.failed + b.failed,
                                       a.skipped + b.skipped, a.unreachable or b.unreachable, a.error or b.error,
                                       a.changed_tasks + b.changed_tasks, a.warnings + b.warnings)
        return RunResult(later.status, later.rc, hosts, self.seconds + later.seconds, {**self.task_seconds, **later.task_seconds})


def plain_error(result: dict) -> str:
    """The useful line of a failed task result: the module's msg, else the command's stderr."""
    for item in result.get("results") or []:  # a loop: the first item that failed speaks for it
        if isinstance(item, dict) and item.get("failed"):
            label = item.get("_ansible_item_label", item.get("item"))
            label = label.get("path", label) if isinstance(label, dict) else label
            return f"{label}: {plain_error(item)}" if label else plain_error(item)
    for key in ("msg", "stderr", "module_stderr", "stdout"):
        value = result.get(key)
        if isinstance(value, str) and value.strip():
            lines = [line.strip() for line in value.strip().splitlines() if line.strip()]
            if key in ("stderr", "module_stderr"):
                # apt puts the cause first ("E: Failed to fetch …"); a traceback ends with it.
                errors = [line for line in lines if line.startswith("E: ")]
                return errors[0] if errors else lines[-1]
            text = " ".join(lines)
            if key == "msg" and text.startswith("non-zero return code") and result.get("stderr"):
                continue
            return text
    if result.get("rc") not in (None, 0):
        return f"command exited {result['rc']}"
    return "failed (no message)"


class _Events:
    def __init__(self, hosts: list[str], on_update: Callable[[HostProgress, str], None]):
        self.hosts = {name: HostProgress(name) for name in hosts}
        self.on_update = on_update
        self.task_seconds: dict[str, float] = {}

    def __call__(self, event: dict) -> bool:
        data = event.get("event_data") or {}
        kind = event.get("event", "")
        name = data.get("host")
        if not name or not kind.startswith("runner_on_") or kind == "runner_on_start":
            return True
        progress = self.hosts.setdefault(name, HostProgress(name))
        task = data.get("task", "")
        role = data.get("role")
        label = f"{role}: {task}" if role else task
        result = data.get("res") or {}
        progress.task = label
        if isinstance(data.get("duration"), int | float):  # for benchmarks: where prepare's time goes
            self.task_seconds[label] = max(self.task_seconds.get(label, 0.0), float(data["duration"]))
        if kind == "runner_on_ok":
            if result.get("changed"):
                progress.changed += 1
                progress.changed_tasks.append(label)
                what = "changed"
            else:
                progress.ok += 1
                what = "ok"
            if data.get("task_action", "").endswith("debug"):
                # Roles report warnings as debug messages starting with WARNING (one per loop item);
                # the host is named by whoever shows them, not in the message.
                messages = [result.get("msg")] + [r.get("msg") for r in result.get("results") or [] if isinstance(r, dict)]
                for message in messages:
                    if isinstance(message, str) and message.startswith("WARNING"):
                        progress.warnings.append(message.removeprefix("WARNING").lstrip(":").strip())
                        self.on_update(progress, "warning")
        elif kind == "runner_on_failed":
            if data.get("ignore_errors"):
                progress.ok += 1
                what = "ok"
            else:
                progress.failed += 1
                progress.error = progress.error or f"{label}: {plain_error(result)}"
                what = "failed"
        elif kind == "runner_on_unreachable":
            progress.unreachable = True
            progress.error = progress.error or f"unreachable: {plain_error(result)}"
            what = "unreachable"
        elif kind == "runner_on_skipped":
            progress.skipped += 1
            what = "skipped"
        else:
            return True
        self.on_update(progress, what)
        return True


def ansible_playbook_binary() -> str:
    """ansible-playbook from kubeprov's own environment first (a venv is often not on PATH)."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    if beside.exists():
        return str(beside)
    found = shutil.which("ansible-playbook")
    if not found:
        raise KubeprovError("ansible-playbook is not installed (pip install ansible-core)")
    return found


def run_playbook(
    playbook: str,
    inventory: Path,
    hosts: list[str],
    *,
    on_update: Callable[[HostProgress, str], None] = lambda progress, what: None,
    forks: int = 20,
    limit: str | None = None,
    work_dir: Path | None = None,
    timeout: int = 1800,
) -> RunResult:
    import time

    import ansible_runner

    events = _Events(hosts, on_update)
    started = time.monotonic()
    private = Path(tempfile.mkdtemp(prefix="kubeprov-runner-", dir=work_dir))
    try:
        runner = ansible_runner.run(
            private_data_dir=str(private),
            project_dir=str(PLAYBOOKS),
            playbook=str(PLAYBOOKS / playbook),
            inventory=str(inventory.resolve()),
            envvars={
                "ANSIBLE_CONFIG": str(PLAYBOOKS / "ansible.cfg"), "ANSIBLE_ROLES_PATH": str(PLAYBOOKS / "roles"),
                "ANSIBLE_NOCOLOR": "1",
                # ansible-runner turns host key checking off unless told otherwise; we never do.
                "ANSIBLE_HOST_KEY_CHECKING": "True",
                "PATH": f"{Path(ansible_playbook_binary()).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            },
            forks=forks,
            limit=limit,
            event_handler=events,
            quiet=True,
            timeout=timeout,
            settings={"suppress_ansible_output": True},
        )
        rc, status = runner.rc, runner.status
        if rc != 0 and not any(h.failed or h.unreachable for h in events.hosts.values()):
            # ansible-playbook died before any host result (bad inventory, syntax error): say why.
            text = runner.stdout.read() if runner.stdout else ""
            lines = [line for line in text.splitlines() if line.strip()]
            raise KubeprovError(f"ansible-playbook failed ({status}, exit {rc}): {lines[-1] if lines else 'no output'}")
    finally:
        if not os.environ.get("KUBEPROV_KEEP_RUNNER_DIR"):
            shutil.rmtree(private, ignore_errors=True)
    return RunResult(status, rc, events.hosts, time.monotonic() - started, events.task_seconds)
