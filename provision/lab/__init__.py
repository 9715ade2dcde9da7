"""The local lab: N real systemd hosts on this machine, reachable over SSH, without a hypervisor.

Each host is a `systemd-nspawn --boot` of one cached Debian rootfs (an overlay per host) in a
network namespace of its own, on a bridge that lives in the lab's own namespace. A local apt
repository inside the lab serves the packages kubeprov installs, so hosts install them the way
real machines do, and nothing reaches outside. See shared/LAB-NOTES.md for why each knob exists.

Entry points: `lifecycle.up`, `lifecycle.down`, `lifecycle.status` (the CLI is `kubeprov lab`).
"""

from provision.lab.errors import LabError

__all__ = ["LabError"]
