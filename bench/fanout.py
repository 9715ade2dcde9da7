"""One command fanned out to 3 vs 20 hosts: does the fan-out scale? (Goal: 20 hosts ≤ 2× the time of 3.)

The hosts are real sshd daemons on loopback (tests/transport_sshd.py: one per address, own host
key, own UTS namespace), so the numbers include real SSH handshakes and real process start-up on
the "hosts" — which all share this machine's CPUs, unlike real hosts. Two cases per size:

- cold: a new Transport, so every host is connected (TCP, key exchange, host-key check, auth) and
  then runs the command: what `kubeprov exec` costs;
- warm: the same Transport again, connections reused: what each later step of a run costs.

    .venv/bin/python bench/fanout.py [--repeat N] [--command CMD]   (needs root and sshd)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from transport_sshd import sshd_fleet, unavailable_reason  # noqa: E402

from provision.transport import Options, Transport, fan_out  # noqa: E402


def sshd_cpu_seconds(fleet) -> float:
    """CPU used so far by the daemons and the per-connection processes they have reaped."""
    total = 0
    for daemon in fleet.daemons:
        fields = Path(f"/proc/{daemon.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / os.sysconf("SC_CLK_TCK")


def timed_fan_out(transport: Transport, hosts, command: str) -> float:
    start = time.monotonic()
    outcomes = fan_out(hosts, lambda h: transport.run(h, command))
    elapsed = time.monotonic() - start
    bad = [f"{o.host}: {o.error_text or o.value.summary()}" for o in outcomes if not (o.ok and o.value.ok)]
    if bad:
        raise SystemExit("fan-out failed: " + "; ".join(bad))
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--command", default="hostname")
    args = parser.parse_args()
    if reason := unavailable_reason():
        raise SystemExit(f"cannot run: {reason}")

    sizes = (3, 20)
    with sshd_fleet(max(sizes)) as fleet:
        options = Options(known_hosts=fleet.known_hosts)
        results: dict[tuple[str, int], float] = {}
        cpu: dict[int, tuple[float, float]] = {}
        for size in sizes:
            hosts = fleet.hosts[:size]
            cold, warm = [], []
            client_cpu = server_cpu = 0.0
            for _ in range(args.repeat):
                with Transport(options) as transport:
                    client_before, server_before = time.process_time(), sshd_cpu_seconds(fleet)
                    cold.append(timed_fan_out(transport, hosts, args.command))
                    warm.append(timed_fan_out(transport, hosts, args.command))
                time.sleep(0.2)  # let the daemons reap their sessions, so their CPU is counted
                client_cpu += time.process_time() - client_before
                server_cpu += sshd_cpu_seconds(fleet) - server_before
            results["cold", size] = statistics.median(cold)
            results["warm", size] = statistics.median(warm)
            cpu[size] = (client_cpu / args.repeat, server_cpu / args.repeat)

    print(f"`{args.command}` fanned out, median of {args.repeat} runs")
    print(f"{'case':6} {'3 hosts':>9} {'20 hosts':>9} {'ratio':>6}  goal ≤ 2.0")
    for case in ("cold", "warm"):
        small, large = results[case, 3], results[case, 20]
        ratio = large / small
        print(f"{case:6} {small:8.3f}s {large:8.3f}s {ratio:6.2f}  {'ok' if ratio <= 2 else 'MISSED'}")
    print(f"CPU per round (cold + warm), all on this machine's {os.cpu_count()} cores:")
    for size in sizes:
        client, server = cpu[size]
        print(f"  {size:2} hosts: kubeprov {client:.3f} s, sshd side {server:.3f} s "
              f"({server / size * 1000:.0f} ms per host; on real hosts this runs on their own CPUs)")


if __name__ == "__main__":
    main()
