"""How long `lab up` takes for 3 and for 20 hosts (rootfs cached), and `lab down`.

Goal from the issue: 20 hosts take at most twice as long as 3. Hosts boot in parallel, but all
share this machine's 2 cores, so the boot of 20 systemd instances is CPU-bound; the figures say
how far from the goal that leaves us. The rootfs is built first (not timed) if missing.

    .venv/bin/python bench/lab.py [--sizes 3 20] [--repeat N]    (needs root)
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from provision.lab import lifecycle, rootfs


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 20])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    rootfs.ensure(progress=print)
    name = f"bench{os.getpid() % 10000}"
    results: dict[int, tuple[list[float], list[float]]] = {}
    for size in args.sizes:
        ups, downs = [], []
        for _ in range(args.repeat):
            try:
                ups.append(timed(lambda: lifecycle.up(name, size)))
            finally:
                downs.append(timed(lambda: lifecycle.down(name)))
        results[size] = (ups, downs)
        print(f"{size:3} hosts: up {statistics.median(ups):6.2f} s (runs {', '.join(f'{t:.2f}' for t in ups)}), "
              f"down {statistics.median(downs):5.2f} s, {statistics.median(ups) / size:.2f} s per host", flush=True)
    if len(args.sizes) >= 2:
        small, large = min(args.sizes), max(args.sizes)
        ratio = statistics.median(results[large][0]) / statistics.median(results[small][0])
        verdict = "within" if ratio <= 2 else "over"
        print(f"up {large}/{small} ratio: {ratio:.2f} ({verdict} the 2× goal; {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
