#!/usr/bin/python3
"""Ansible module: look at a host once and say, in plain words, what stops it from joining.

Never changes anything and never fails itself: it returns `problems` (the role fails the run on
them, naming the host) and `warnings` (shown, not fatal), plus the facts it looked at.

The same file runs without Ansible: `kubeprov up` and `prepare` send it through their SSH
transport (provision/preflight.py), with KUBEPROV_PREFLIGHT=json and the parameters as JSON in
argv[1]; it then prints its answer as JSON. One SSH command per host instead of a playbook run.
"""

import json
import os
import re
import subprocess
import sys

SUPPORTED = {"debian": 11, "ubuntu": 20}  # ID → oldest major version
# What proves a module is in the running kernel besides /sys/module (built-in modules without
# parameters have no entry there).
LOADED_EVIDENCE = {"overlay": lambda: "overlay" in _read("/proc/filesystems"), "br_netfilter": lambda: os.path.isdir("/proc/sys/net/bridge")}


def _read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def _run(args):
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, "", str(exc)
    return proc.returncode, proc.stdout.strip(), proc.stderr.strip()


def os_release():
    values = {}
    for line in _read("/etc/os-release").splitlines():
        key, _, value = line.partition("=")
        values[key] = value.strip().strip('"')
    return values


def listeners():
    """port → 'process (pid N)' for every listening TCP socket."""
    code, out, _ = _run(["ss", "-Hltnp"])
    found = {}
    if code != 0:
        return found
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        port = fields[3].rsplit(":", 1)[-1]
        if not port.isdigit():
            continue
        match = re.search(r'users:\(\("([^"]+)",pid=(\d+)', line)
        found.setdefault(int(port), f"{match.group(1)} (pid {match.group(2)})" if match else "an unknown process")
    return found


def module_state(name):
    if os.path.isdir(f"/sys/module/{name}") or LOADED_EVIDENCE.get(name, lambda: False)():
        return "loaded"
    code, _, err = _run(["modprobe", "-n", name])
    return "available" if code == 0 else f"missing ({err or 'modprobe -n failed'})"


PARAMETERS = {
    "ports": {"type": "dict", "default": {}},  # port → the process allowed to hold it (ours)
    "modules": {"type": "list", "elements": "str", "default": []},
    "min_memory_mb": {"type": "int", "default": 0},
    "min_cpus": {"type": "int", "default": 1},
    "swapoff": {"type": "bool", "default": False},  # the os role will turn swap off
}


def look(p):
    """(problems, warnings, facts) for the parameters `p`."""
    problems, warnings = [], []

    release = os_release()
    distro, version = release.get("ID", "unknown"), release.get("VERSION_ID", "")
    major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else 0
    if distro not in SUPPORTED or major < SUPPORTED[distro]:
        problems.append(f"unsupported OS {release.get('PRETTY_NAME', distro)} (kubeprov supports Debian 11+ and Ubuntu 20.04+)")

    swaps = [line.split()[0] for line in _read("/proc/swaps").splitlines()[1:] if line.strip()]
    if swaps and p["swapoff"]:
        warnings.append(f"swap is on ({', '.join(swaps)}); the os role turns it off (kubeprov_swapoff)")
    elif swaps:
        problems.append(f"swap is on ({', '.join(swaps)}); the kubelet refuses to start with swap (swapoff -a and remove it from /etc/fstab)")

    memory_mb = 0
    match = re.search(r"^MemTotal:\s+(\d+) kB", _read("/proc/meminfo"), re.M)
    if match:
        memory_mb = int(match.group(1)) // 1024
    if memory_mb < p["min_memory_mb"]:
        problems.append(f"too little memory: {memory_mb} MB, this role needs at least {p['min_memory_mb']} MB")
    cpus = len(os.sched_getaffinity(0))
    if cpus < p["min_cpus"]:
        problems.append(f"too few CPUs: {cpus}, this role needs at least {p['min_cpus']}")

    held = listeners()
    for port_text, owner in sorted(p["ports"].items(), key=lambda item: int(item[0])):
        holder = held.get(int(port_text))
        if holder and not holder.startswith(f"{owner} "):
            problems.append(f"port {port_text} is in use by {holder} (needed by {owner})")

    modules = {name: module_state(name) for name in p["modules"]}
    for name, state in modules.items():
        if state.startswith("missing"):
            problems.append(f"kernel module {name} is neither loaded nor installable: {state[9:-1]}")

    pid1 = _read("/proc/1/comm").strip()
    if pid1 != "systemd":
        problems.append(f"cgroup driver mismatch: kubelet and containerd use the systemd cgroup driver, but PID 1 is {pid1 or 'unknown'}, not systemd")

    code, synced, _ = _run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
    if code != 0 or synced != "yes":
        warnings.append("the clock is not NTP-synchronised (timedatectl); certificates and etcd need correct time")

    _, container, _ = _run(["systemd-detect-virt", "--container"])
    return problems, warnings, {
        "os": release.get("PRETTY_NAME", distro), "swap": swaps, "memory_mb": memory_mb, "cpus": cpus,
        "listening": {str(k): v for k, v in held.items()}, "modules": modules, "pid1": pid1,
        "container": container or "none",
    }


def main():
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(argument_spec=PARAMETERS, supports_check_mode=True)
    problems, warnings, facts = look(module.params)
    module.exit_json(changed=False, problems=problems, notes=warnings, facts=facts)


def standalone():
    given = json.loads(sys.argv[1])
    params = {name: given.get(name, spec["default"]) for name, spec in PARAMETERS.items()}
    problems, warnings, facts = look(params)
    print(json.dumps({"problems": problems, "notes": warnings, "facts": facts}))


if __name__ == "__main__":
    standalone() if os.environ.get("KUBEPROV_PREFLIGHT") == "json" else main()
