"""`lab up` is idempotent, cleans up after a failure half-way, and `lab down` leaves the machine
exactly as it found it: no namespace, mount, cgroup, link or process of the lab remains."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provision.lab import cgroups, host, lifecycle
from provision.lab.errors import LabError
from provision.lab.layout import state_root
from provision.lab.state import load

pytestmark = pytest.mark.lab
KUBEPROV = Path(sys.executable).parent / "kubeprov"


def _kubeprov(*args: str, user: str | None = None) -> subprocess.CompletedProcess:
    prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] if user else []
    return subprocess.run([*prefix, str(KUBEPROV), *args], capture_output=True, text=True, timeout=600)


def test_second_up_keeps_running_hosts(lab):
    layout = load(lab.name).layout
    before = {n: host.init_pid(layout, n) for n in (1, 2, 3)}
    again = lifecycle.up(lab.name, 3)
    after = {n: host.init_pid(layout, n) for n in (1, 2, 3)}
    assert None not in before.values()
    assert after == before
    assert [h.name for h in again.hosts] == [h.name for h in lab.hosts]


def test_up_restarts_a_host_that_died_with_its_identity(lab):
    layout = load(lab.name).layout
    victim = lab.hosts[-1]
    machine_id = lab.ssh(victim, "cat /etc/machine-id").stdout
    os.kill(host.init_pid(layout, 3), 9)
    deadline = time.monotonic() + 30
    while host.is_alive(layout, 3) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert lifecycle.status() and not dict(
        (s.name, r) for s, r in lifecycle.status())[lab.name][victim.name]
    again = lifecycle.up(lab.name, 3)
    assert again.system_states[victim.name] == "running"
    # Same machine-id and host key: the known_hosts written at creation still checks it strictly.
    assert lab.ssh(victim, "cat /etc/machine-id").stdout == machine_id


# --- the machine before and after ------------------------------------------------------------

def _snapshot() -> dict[str, set[str]]:
    netns = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    routes = set(subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True,
                                check=True).stdout.splitlines())
    links = set(subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
                .stdout.split("\n"))
    links = {line.split(":")[1].strip().split("@")[0] for line in links if line.strip()}
    mounts = set(Path("/proc/mounts").read_text().splitlines())
    # os.walk, not rglob: other engineers' labs come and go meanwhile, and a cgroup directory that
    # vanishes mid-walk must not fail the snapshot (rglob raised FileNotFoundError once).
    cgroup_dirs = {os.path.join(top, d) for parent in cgroups.parent_dirs() for top, dirs, _ in os.walk(parent) for d in dirs}
    processes = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cgroup = (proc / "cgroup").read_text()
        except OSError:
            continue
        processes.add(f"{proc.name} {cmdline} {cgroup}")
    return {"netns": netns, "routes": routes, "links": links, "mounts": mounts, "cgroups": cgroup_dirs, "processes": processes}


def _belongs_to(name: str, entry: str) -> bool:
    """Whether an entry names the lab: its namespaces, leg, cgroups, state dir or processes."""
    return any(marker in entry for marker in (f"kp-{name}", f"kubeprov-lab-{name}-", f"{state_root()}/{name}"))


def _left_behind(before: dict[str, set[str]], after: dict[str, set[str]], name: str) -> dict[str, list[str]]:
    """What appeared or vanished that names this lab. Everything a lab makes carries its name
    (namespaces kp-<lab>-…, the leg kp-<lab>, cgroups kubeprov-lab-<lab>-…, overlay and netns
    mounts under its state dir and /run/netns, processes in its cgroups); other engineers' test
    runs share this machine and make their own namespaces and processes meanwhile, so unrelated
    changes are not ours to judge."""
    found = {}
    for kind in before:
        changed = (after[kind] - before[kind]) | (before[kind] - after[kind])
        changed = {entry for entry in changed if _belongs_to(name, entry)}
        if changed:
            found[kind] = sorted(changed)
    return found


def _settled(before: dict[str, set[str]], name: str, seconds: float = 15) -> dict[str, list[str]]:
    """_left_behind, allowing init a moment to reap the lab's exited launchers: `lab up` exits
    right away, so nspawn's parent becomes PID 1, whose reaping of zombies is not immediate."""
    deadline = time.monotonic() + seconds
    while True:
        left = _left_behind(before, _snapshot(), name)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def test_up_down_twice_leaves_the_machine_as_it_was(lab):
    # The `lab` fixture made sure /run/netns exists (ip netns makes it once per boot, then keeps it).
    name = f"u{os.getpid()}"[:12]
    before = _snapshot()
    for _ in range(2):
        up = _kubeprov("lab", "up", "--hosts", "2", "--name", name)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "✓" in up.stdout and f"{name}-2" in up.stdout  # progress per step, then the hosts
        during = _snapshot()
        assert f"kp-{name}-1" in during["netns"] and f"kp-{name}" in during["links"]
        assert any(f"kubeprov-lab-{name}-1" in d for d in during["cgroups"])
        status = _kubeprov("lab", "status")
        assert f"{name}-1" in status.stdout and "2/2 hosts running" in status.stdout
        ssh = _kubeprov("lab", "ssh", f"{name}-2", "--name", name, "--", "hostname")
        assert ssh.stdout.strip() == f"{name}-2", ssh.stderr
        down = _kubeprov("lab", "down", "--name", name)
        assert down.returncode == 0, down.stdout + down.stderr
        assert _settled(before, name) == {}
    assert not (state_root() / name).exists()
    assert "nothing to remove" in _kubeprov("lab", "down", "--name", name).stdout


def test_failure_half_way_removes_what_up_made(lab, monkeypatch):
    name = f"f{os.getpid()}"[:12]
    before = _snapshot()
    monkeypatch.setattr(lifecycle, "BOOT_TIMEOUT", 0.0)  # hosts are made and started, then "never boot"
    with pytest.raises(LabError, match=rf"host {name}-1 .*not booted"):
        lifecycle.up(name, 2)
    assert _left_behind(before, _snapshot(), name) == {}
    assert load(name) is None


def test_not_root_is_one_clear_line():
    proc = _kubeprov("lab", "up", user="65534")
    assert proc.returncode != 0
    assert "needs root" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_bad_name_and_host_count_are_clear_errors():
    proc = _kubeprov("lab", "up", "--name", "Bad-Name")
    assert proc.returncode == 4 and "lab name 'Bad-Name' is invalid" in proc.stderr
    proc = _kubeprov("lab", "up", "--hosts", "0", "--name", "zz")
    assert proc.returncode == 4 and "--hosts must be 1 to 200" in proc.stderr


def test_twenty_hosts_boot_and_the_inotify_limit_is_restored(lab):
    """20 systemd hosts outgrow root's 128 inotify instances; up raises the limit, and the last
    down restores it — unless other labs (the shared fixture lab here) still run."""
    from provision.lab.limits import INOTIFY

    name = f"b{os.getpid()}"[:12]
    before = int(INOTIFY.read_text())
    try:
        big = lifecycle.up(name, 20)
        assert set(big.system_states.values()) <= {"running"}, big.system_states
        assert len(big.system_states) == 20
        assert int(INOTIFY.read_text()) >= 128 + 16 * 23
    finally:
        lifecycle.down(name)
    # The fixture lab still runs, so the raised limit stays until the last lab goes.
    assert int(INOTIFY.read_text()) >= before


def test_up_grows_and_shrinks_a_lab_keeping_its_hosts(lab):
    name = f"g{os.getpid()}"[:12]
    try:
        one = lifecycle.up(name, 1)
        layout = load(name).layout
        first_pid = host.init_pid(layout, 1)
        two = lifecycle.up(name, 2)
        assert host.init_pid(layout, 1) == first_pid  # kept, not rebooted
        first, second = two.hosts
        ssh = _kubeprov("lab", "ssh", first.name, "--name", name, "--", "getent", "hosts", second.name)
        assert ssh.stdout.split() == [second.address, second.name], ssh.stderr  # learnt the new host's name
        shrunk = lifecycle.up(name, 1)
        assert [h.name for h in shrunk.hosts] == [h.name for h in one.hosts]
        assert host.init_pid(layout, 1) == first_pid
        assert not host.is_alive(layout, 2) and not (layout.host_dir(2)).exists()
        assert f"kp-{name}-2" not in os.listdir("/run/netns")
        assert second.name not in shrunk.known_hosts.read_text()
    finally:
        lifecycle.down(name)
