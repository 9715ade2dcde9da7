"""The lab's local apt repository: Debian's own .debs, indexed, served on the bridge address.

The .debs are resolved against the lab rootfs itself (`apt-get install --download-only` in a
chroot of it), so the repository holds exactly the packages and dependencies a lab host lacks.
Hosts' sources.list names only this repository: they `apt-get install` as real machines do,
and nothing leaves the lab.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from pathlib import Path

from provision.lab import cgroups
from provision.lab.errors import LabError
from provision.lab.layout import REPO_PORT, Layout
from provision.lab.system import in_netns, run

# What kubeprov installs on hosts, plus the load balancers its HA modes use.
PACKAGES = (
    "etcd-server",
    "etcd-client",
    "containerd",
    "runc",
    "containernetworking-plugins",
    "haproxy",
    "keepalived",
    "ipvsadm",
)


def download(rootfs: Path, repo: Path) -> None:
    """Fetch PACKAGES and their missing dependencies from Debian's mirror into `repo`.

    Runs apt in a chroot of the rootfs inside a private mount namespace, so its /proc mount
    vanishes with it.
    """
    archives = rootfs / "var/cache/apt/archives"
    script = (
        f"mount -t proc proc {rootfs}/proc && "
        f"chroot {rootfs} apt-get -qq update && "
        f"chroot {rootfs} env DEBIAN_FRONTEND=noninteractive apt-get -qq install --download-only -y "
        + " ".join(PACKAGES)
    )
    run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], timeout=1200)
    repo.mkdir(parents=True, exist_ok=True)
    debs = sorted(archives.glob("*.deb"))
    if not debs:
        raise LabError(f"apt downloaded no packages into {archives}")
    for deb in debs:
        shutil.move(str(deb), repo / deb.name)
    index(repo)


def index(repo: Path) -> None:
    """A flat repository (`deb [trusted=yes] URL ./`): Packages and Packages.gz beside the .debs."""
    packages = _scan(repo)
    (repo / "Packages").write_text(packages)
    with gzip.open(repo / "Packages.gz", "wt") as handle:
        handle.write(packages)


def _scan(repo: Path) -> str:
    proc = subprocess.run(
        ["dpkg-scanpackages", "--multiversion", "."], cwd=repo, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise LabError(f"dpkg-scanpackages in {repo} failed: {proc.stderr.strip()[-300:]}")
    return proc.stdout


def sources_list(layout: Layout) -> str:
    # Unsigned local repository: trusted because it never leaves this machine.
    return f"# the kubeprov lab's local repository ({layout.name}); nothing else is reachable\n" \
           f"deb [trusted=yes] {layout.repo_url} ./\n"


def serve(layout: Layout, repo: Path, log: Path) -> int:
    """Start an HTTP server for `repo` on the bridge address, inside the lab's namespace.

    It runs in a cgroup of the lab's own, so teardown finds and kills it like a host.
    """
    cgroup_dirs = cgroups.create(layout.repo_cgroup)
    args = in_netns(layout.lan_netns, [
        "python3", "-m", "http.server", "--bind", layout.gateway, "--directory", str(repo), str(REPO_PORT),
    ])
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=lambda: cgroups.enter(cgroup_dirs, os.getpid()),
        )
    return proc.pid
