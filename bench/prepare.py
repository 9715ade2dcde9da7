"""`kubeprov prepare` on 3 lab hosts: first run, no-op re-run (goal: < 3 s), and plain
ansible-playbook running the same roles with nothing to change.

The no-op re-run is kubeprov's skip path: one SSH command per host reads the applied-state
record and finds it current, so Ansible never starts. "plain ansible-playbook" is what a
kubespray-style tool pays for the same answer: every task of every role checks its state.
The bundle holds STAND-IN kubelet/kubectl/crictl scripts (never started) and no images.

    .venv/bin/python bench/prepare.py [--keep]     (needs root and the lab's tools)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from provision.artifacts.bundle import seal
from provision.ansible.inventory import PLAYBOOKS
from provision.ansible.runner import ansible_playbook_binary
from provision.config.loader import load_cluster
from provision.lab import lifecycle
from provision.lab.testing import unavailable_reason
from provision.pki import PKIStore

LAB = "pbench"
STAND_IN = "#!/bin/sh\n# STAND-IN for {name} (kubeprov bench): placement only, never started.\nexit 3\n"


def timed(args: list[str], **kwargs) -> tuple[float, subprocess.CompletedProcess]:
    start = time.monotonic()
    proc = subprocess.run(args, capture_output=True, text=True, **kwargs)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args[:3])}… failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return seconds, proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the lab running afterwards")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        sys.exit(f"cannot run: {reason}")
    work = Path(tempfile.mkdtemp(prefix="kubeprov-bench-prepare-"))
    try:
        info = lifecycle.up(LAB, 3)
        bundle = work / "bundle"
        (bundle / "bin").mkdir(parents=True)
        for name in ("kubelet", "kubectl", "crictl"):
            (bundle / "bin" / name).write_text(STAND_IN.format(name=name))
            (bundle / "bin" / name).chmod(0o755)
        seal(bundle)
        ssh = {"key": str(info.key), "knownHosts": str(info.known_hosts)}
        roles = [["control-plane", "etcd"], ["worker", "etcd"], ["worker", "etcd"]]
        document = {
            "apiVersion": "kubeprov.io/v1alpha1", "kind": "Cluster", "name": LAB, "kubernetesVersion": "v1.31.0",
            "clusterDir": str(work / "cluster"), "cni": "bridge", "etcd": {"topology": "external"},
            "containerd": {"restrict_oom_score_adj": True},
            "hosts": [{"name": h.name, "address": h.address, "roles": r, "ssh": ssh} for h, r in zip(info.hosts, roles)],
        }
        cluster_file = work / "cluster.yaml"
        cluster_file.write_text(yaml.safe_dump(document))
        PKIStore(load_cluster(cluster_file, None)).generate()
        prepare = [sys.executable, "-m", "provision", "prepare", "-c", str(cluster_file), "--bundle", str(bundle), "--lab"]
        first, _ = timed(prepare)
        noops = [timed(prepare)[0] for _ in range(3)]
        inventory = work / "cluster" / "prepare" / "inventory.yml"
        env = {**os.environ, "ANSIBLE_CONFIG": str(PLAYBOOKS / "ansible.cfg")}
        plain, proc = timed([ansible_playbook_binary(), "-i", str(inventory), str(PLAYBOOKS / "site.yml")], env=env, cwd=PLAYBOOKS)
        recap = [line for line in proc.stdout.splitlines() if "changed=" in line]
        noop = min(noops)
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; 3 hosts, external etcd on all three")
        print(f"  first prepare (packages, etcd cluster, files)       {first:7.1f} s")
        print(f"  no-op prepare (applied state current, no Ansible)   {noop:7.2f} s   best of {len(noops)}: "
              + ", ".join(f"{s:.2f}" for s in noops) + ("   goal < 3 s: met" if noop < 3 else "   goal < 3 s: MISSED"))
        print(f"  plain ansible-playbook, same roles, nothing to do   {plain:7.1f} s   ({plain / noop:.0f}x the no-op prepare)")
        for line in recap:
            print(f"    {' '.join(line.split())}")
    finally:
        if not args.keep:
            lifecycle.down(LAB)
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
