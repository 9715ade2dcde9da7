"""Wall time of `kubeprov up` per topology on a fresh lab: the first up (per phase) and a no-op
second up, against the targets an operator expects on this 2-core machine.

With `--bundle DIR` (real Kubernetes binaries, or a complete offline bundle; tests/e2e/bundle.py
assembles the images) every topology is built to a verified cluster. Without one, `up` stops at
prepare (no kubelet exists here), so only the phases before it are measured, on 1cp-2workers.

    .venv/bin/python bench/up.py [--bundle DIR] [--topology NAME ...] [--keep]
    (needs root; makes and removes labs named benchup<N>)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from provision.config import load_cluster
from provision.lab import lifecycle, rootfs
from provision.lab.topologies import TOPOLOGIES, cluster_document
from provision.phases.runner import PhaseFailed, Reporter
from provision.phases.up import UpOptions, up

# Targets on this machine (issue 9): first up per topology, and any no-op up.
FIRST_UP_TARGET = {"1cp-2workers": 45.0, "3cp-1worker-haproxy": 90.0}
NOOP_TARGET = 3.0


def timed_up(cluster, options) -> tuple[float, object, str]:
    started = time.perf_counter()
    try:
        report, stopped = up(cluster, options, Reporter()), ""
    except PhaseFailed as failure:
        report, stopped = failure.report, str(failure)
    return time.perf_counter() - started, report, stopped


def show(title: str, seconds: float, report, stopped: str, target: float | None) -> None:
    against = f"  (target {target:g} s: {seconds / target:.2f}×)" if target else ""
    print(f"\n{title}: {seconds:.1f} s wall{against}" + (f"  (stopped: {stopped[:140]})" if stopped else ""))
    slowest = sorted(report.seconds.items(), key=lambda kv: -kv[1])[:6]
    print("  slowest phases: " + ", ".join(f"{path} {seconds:.1f} s" for path, seconds in slowest))


def bench(name: str, number: int, bundle: Path | None, keep: bool) -> tuple[float, float]:
    topology = TOPOLOGIES[name]
    lab = f"benchup{number}"
    work = Path(tempfile.mkdtemp(prefix="kubeprov-bench-up-"))
    try:
        started = time.perf_counter()
        info = lifecycle.up(lab, topology.hosts, control_planes=topology.control_planes)
        print(f"\n=== {name}: {topology.description}; lab of {topology.hosts} hosts in {time.perf_counter() - started:.1f} s")
        version = None
        if bundle:
            out = subprocess.run([str(bundle / "bin" / "kubelet"), "--version"], capture_output=True, text=True, check=True).stdout
            version = out.split()[-1]
        doc = cluster_document(name, info.cluster_file, info.hosts, version=version, bundle=bundle, cluster_dir=work / "cluster")
        path = work / "cluster.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        cluster = load_cluster(path, None)
        options = UpOptions(known_hosts=info.known_hosts, lab=True)
        first = timed_up(cluster, options)
        show("first up", *first, FIRST_UP_TARGET.get(name) if bundle else None)
        second = timed_up(cluster, options)
        show("no-op up", *second, NOOP_TARGET if bundle else None)
        return first[0], second[0]
    finally:
        if not keep:
            lifecycle.down(lab)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="real Kubernetes binaries, or a complete offline bundle")
    parser.add_argument("--topology", action="append", choices=list(TOPOLOGIES), help="default: all (with --bundle)")
    parser.add_argument("--keep", action="store_true", help="leave the labs running")
    args = parser.parse_args()
    rootfs.ensure(progress=print)
    bundle = None
    if args.bundle:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))
        from bundle import assemble  # test tooling: images assembled from the binaries and Debian's packages

        bundle = assemble(args.bundle.resolve(), Path("/var/cache/kubeprov/e2e-bundle"))
    names = args.topology or (list(TOPOLOGIES) if bundle else ["1cp-2workers"])
    rows = [(name, *bench(name, i, bundle, args.keep)) for i, name in enumerate(names)]
    print("\ntopology               first up    no-op up")
    for name, first, second in rows:
        print(f"{name:<22} {first:7.1f} s   {second:6.2f} s")


if __name__ == "__main__":
    main()
