"""Wall time of `kubeprov up` on a fresh 3-host lab, and of each phase; then of a second `up`.

Without Kubernetes binaries (nothing here provides them) `up` stops at prepare's kubelet role, so
the figures cover the phases that need no API server: certs, preflight, render, sync, external
etcd on 3 hosts, the node roles. With `--bundle DIR` (real binaries and images) it runs to verify.
The second run shows the resumed (or, after a complete run, no-op) cost.

    .venv/bin/python bench/up.py [--bundle DIR] [--keep]    (needs root; makes and removes lab `benchup`)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml

from provision.config import load_cluster
from provision.lab import lifecycle, rootfs
from provision.phases.runner import PhaseFailed, Reporter
from provision.phases.up import UpOptions, up

LAB = "benchup"


def cluster_file(info, work: Path) -> Path:
    doc = yaml.safe_load(info.cluster_file.read_text())
    for host in doc["hosts"]:
        host["roles"] = [*host["roles"], "etcd"]
        host["ssh"]["knownHosts"] = str(info.known_hosts)
    doc.update({"etcd": {"topology": "external"}, "cni": "bridge", "clusterDir": str(work / "cluster")})
    path = work / "cluster.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def timed_up(cluster, options) -> tuple[float, object, str]:
    started = time.perf_counter()
    try:
        report, stopped = up(cluster, options, Reporter()), ""
    except PhaseFailed as failure:
        report, stopped = failure.report, str(failure)
    return time.perf_counter() - started, report, stopped


def show(title: str, seconds: float, report, stopped: str) -> None:
    print(f"\n{title}: {seconds:.1f} s wall" + (f"  (stopped: {stopped[:140]})" if stopped else ""))
    for path, status in report.statuses.items():
        print(f"  {path:<20} {status:<11} {report.seconds.get(path, 0.0):7.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--keep", action="store_true", help="leave the lab running")
    args = parser.parse_args()
    rootfs.ensure(progress=print)
    work = Path(tempfile.mkdtemp(prefix="kubeprov-bench-up-"))
    try:
        started = time.perf_counter()
        info = lifecycle.up(LAB, 3)
        print(f"lab {LAB}: 3 hosts in {time.perf_counter() - started:.1f} s")
        cluster = load_cluster(cluster_file(info, work), None)
        options = UpOptions(bundle=args.bundle, known_hosts=info.known_hosts, lab=True)
        show("first up", *timed_up(cluster, options))
        show("second up", *timed_up(cluster, options))
    finally:
        if not args.keep:
            lifecycle.down(LAB)


if __name__ == "__main__":
    main()
