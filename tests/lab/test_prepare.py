"""`kubeprov prepare` on the lab's 3 real systemd hosts, from a bundle that carries the container
runtime and external etcd (real containerd, runc, CNI plugins, etcd); the tools the kubelet calls
come from the lab's apt repository. (tests/lab/test_prepare_sources.py and the molecule scenario take the runtime from Debian.)

Order matters and is the order below: the refusals first (a bad bundle, a taken port), each
proven to leave every host untouched; then one real prepare, checked host by host; then the
re-runs. kubelet, kubectl and crictl do not exist here: the bundle carries STAND-IN scripts that
only prove placement, checksum and unit wiring — none is ever started.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from provision.artifacts.bundle import seal
from provision.config.loader import load_cluster
from provision.pki import PKIStore
from provision.render.cni.bridge import CONFLIST, node_pod_cidrs
from provision.render.containerd import containerd_config
from provision.render.node_os import kernel_modules

pytestmark = [pytest.mark.lab, pytest.mark.integration]

# The container runtime the bundle carries, as a site without package repositories brings it: the
# real binaries, taken from this machine's Debian packages (scripts/setup installs them).
RUNTIME = {
    "bin/containerd": "/usr/bin/containerd", "bin/containerd-shim-runc-v2": "/usr/bin/containerd-shim-runc-v2",
    "bin/ctr": "/usr/bin/ctr", "bin/runc": "/usr/sbin/runc",
    **{f"cni/{plugin}": f"/usr/lib/cni/{plugin}" for plugin in ("bridge", "host-local", "loopback", "portmap")},
    # and external etcd's (Debian's 3.4: see the cluster's kubernetesVersion below)
    "bin/etcd": "/usr/bin/etcd", "bin/etcdctl": "/usr/bin/etcdctl",
}
# Where prepare puts them (provision/artifacts/needs.py).
RUNTIME_DEST = {"bin/containerd": "/usr/bin/containerd", "bin/containerd-shim-runc-v2": "/usr/bin/containerd-shim-runc-v2",
                "bin/ctr": "/usr/bin/ctr", "bin/runc": "/usr/sbin/runc",
                **{f"cni/{plugin}": f"/opt/cni/bin/{plugin}" for plugin in ("bridge", "host-local", "loopback", "portmap")},
                "bin/etcd": "/usr/bin/etcd", "bin/etcdctl": "/usr/bin/etcdctl"}  # every host is an etcd member here
STAND_IN = """#!/bin/sh
# STAND-IN for {name} (kubeprov tests): proves placement, checksum and unit wiring only.
echo "STAND-IN {name}: not the real binary" >&2
exit 3
"""
IMAGE = "kubeprov.local/tiny:1"


def build_tiny_image(out: Path, work: Path) -> None:
    """A busybox-static image built here with umoci, saved as a docker-archive by skopeo."""
    missing = [tool for tool in ("umoci", "skopeo") if shutil.which(tool) is None]
    if missing or not Path("/bin/busybox").exists():
        pytest.skip(f"cannot build the test image: missing {missing or 'busybox-static'} (scripts/setup installs them)")
    run = lambda *args: subprocess.run(args, check=True, capture_output=True, cwd=work)  # noqa: E731
    work.mkdir()
    run("umoci", "init", "--layout", "oci")
    run("umoci", "new", "--image", "oci:tiny")
    run("umoci", "unpack", "--image", "oci:tiny", "bundle")
    bin_dir = work / "bundle/rootfs/bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", bin_dir / "busybox")
    for applet in ("sh", "ip", "cat", "sleep"):
        (bin_dir / applet).symlink_to("busybox")
    run("umoci", "repack", "--image", "oci:tiny", "bundle")
    run("umoci", "config", "--image", "oci:tiny", "--config.cmd", "/bin/sh", "--config.env", "PATH=/bin")
    run("skopeo", "copy", "-q", "oci:oci:tiny", f"docker-archive:{out}:{IMAGE}")


@pytest.fixture(scope="module")
def setup(lab, tmp_path_factory):
    top = tmp_path_factory.mktemp("prepare")
    bundle = top / "bundle"
    (bundle / "bin").mkdir(parents=True)
    (bundle / "images").mkdir()
    for name in ("kubelet", "kubectl", "crictl"):
        (bundle / "bin" / name).write_text(STAND_IN.format(name=name))
        (bundle / "bin" / name).chmod(0o755)
    missing = [path for path in RUNTIME.values() if not Path(path).exists()]
    if missing:
        pytest.skip(f"no container runtime to bundle: {', '.join(missing)} missing (scripts/setup installs them)")
    (bundle / "cni").mkdir()
    for name, path in RUNTIME.items():
        shutil.copy(path, bundle / name)
    build_tiny_image(bundle / "images" / "tiny.tar", top / "image-build")  # built outside the bundle
    seal(bundle)
    first, second, third = lab.hosts
    ssh = {"key": str(lab.key), "knownHosts": str(lab.known_hosts)}
    document = {
        "apiVersion": "kubeprov.io/v1alpha1", "kind": "Cluster", "name": "prep",
        # Debian's etcd is 3.4: the flags kubeadm uses up to 1.33 (etcd 3.5) are the ones it knows.
        "kubernetesVersion": "v1.31.0",
        "clusterDir": str(top / "cluster"),
        "cni": "bridge",
        "etcd": {"topology": "external"},
        "containerd": {"restrict_oom_score_adj": True},  # nspawn lacks CAP_SYS_RESOURCE
        "hosts": [
            {"name": first.name, "address": first.address, "roles": ["control-plane", "etcd"], "ssh": ssh},
            {"name": second.name, "address": second.address, "roles": ["worker", "etcd"], "ssh": ssh},
            {"name": third.name, "address": third.address, "roles": ["worker", "etcd"], "ssh": ssh},
        ],
    }
    cluster_file = top / "cluster.yaml"
    cluster_file.write_text(yaml.safe_dump(document))
    cluster = load_cluster(cluster_file, None)
    PKIStore(cluster).generate()
    return {"lab": lab, "file": cluster_file, "bundle": bundle, "cluster": cluster, "top": top}


def kubeprov(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "provision", *args], capture_output=True, text=True, timeout=timeout)


def prepare_args(setup, bundle: Path | None = None) -> list[str]:
    return ["prepare", "-c", str(setup["file"]), "--bundle", str(bundle or setup["bundle"]), "--lab"]


# What prepare writes or installs, fingerprinted per host (path, mtime, mode, size: a rewrite with
# the same content still moves the mtime). Compared before and after a refused run,
# so the check holds whatever earlier tests (molecule converges the os/containerd roles on these
# same hosts) left there.
_STATE = (
    "find /var/lib/kubeprov /etc/modules-load.d /etc/sysctl.d /etc/containerd /etc/kubernetes /opt/cni"
    " /usr/bin/kubelet /usr/bin/kubectl /usr/lib/systemd/system/kubelet.service /etc/systemd/system/containerd.service"
    " /usr/bin/containerd /usr/bin/ctr /usr/sbin/runc -xdev"
    " \\( -type f -o -type l \\) -printf '%p %T@ %m %s\\n' 2>/dev/null | sort;"
    " dpkg-query -W -f='${Package} ${Version} ${Status}\\n' 2>/dev/null | sha256sum;"
    " systemctl is-enabled kubelet containerd etcd 2>&1"
)


def host_states(lab) -> dict[str, str]:
    return {host.name: lab.ssh(host, _STATE, check=False).stdout for host in lab.hosts}


def untouched(lab, before: dict[str, str]) -> None:
    """No host changed in anything prepare writes or installs."""
    after = host_states(lab)
    for host in lab.hosts:
        assert after[host.name] == before[host.name], f"{host.name} was changed by a refused prepare"


def test_bundle_with_a_wrong_checksum_is_refused_before_anything_is_copied(setup):
    bad = setup["top"] / "bad-bundle"
    shutil.copytree(setup["bundle"], bad)
    kubelet = bad / "bin" / "kubelet"
    kubelet.write_bytes(kubelet.read_bytes() + b"# tampered\n")  # SHA256SUMS still lists the old digest
    before = host_states(setup["lab"])
    proc = kubeprov(*prepare_args(setup, bad))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "bin/kubelet: sha256 mismatch" in proc.stderr and "refusing the bundle" in proc.stderr
    assert "Traceback" not in proc.stderr
    untouched(setup["lab"], before)


def test_preflight_port_taken_fails_naming_host_and_reason_and_changes_nothing(setup):
    lab = setup["lab"]
    worker = lab.hosts[1]
    lab.ssh(worker, "systemd-run --unit kubeprov-test-port python3 -m http.server 10250 && sleep 1")
    before = host_states(lab)
    try:
        proc = kubeprov(*prepare_args(setup))
    finally:
        lab.ssh(worker, "systemctl stop kubeprov-test-port", check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{worker.name}: preflight: refuse a host that cannot run its roles: preflight failed on {worker.name}: " \
           "port 10250 is in use by python3" in proc.stderr.replace("\n", " ")
    assert "needed by kubelet" in proc.stderr
    untouched(lab, before)


@pytest.fixture(scope="module")
def prepared(setup):
    started = time.monotonic()
    proc = kubeprov(*prepare_args(setup))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {**setup, "first_run": time.monotonic() - started, "output": proc.stdout}


def test_kernel_modules_sysctls_and_swap_as_the_lab_allows(prepared):
    lab, cluster = prepared["lab"], prepared["cluster"]
    for host in lab.hosts:
        loaded = lab.ssh(host, "grep -qw overlay /proc/filesystems && test -d /proc/sys/net/bridge && echo yes").stdout
        assert loaded.strip() == "yes"
        listed = lab.ssh(host, "grep -v '^#' /etc/modules-load.d/k8s.conf").stdout.split()
        assert listed == kernel_modules(cluster)
        # Per-namespace sysctls the kubelet's pods need (the lab sets them from outside the host).
        values = lab.ssh(host, "sysctl -n net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables").stdout.split()
        assert values == ["1", "1"]
        assert lab.ssh(host, "sed 1d /proc/swaps").stdout.strip() == ""
    # Kernel-wide values a container cannot set: the lab shows each host the kubelet's (rootfs.py),
    # so the verification finds them right and warns about none.
    from provision.render.node_os import KUBELET_KERNEL_DEFAULTS

    seen = lab.ssh(lab.hosts[0], "sysctl -n " + " ".join(KUBELET_KERNEL_DEFAULTS)).stdout.split()
    assert seen == [str(v) for v in KUBELET_KERNEL_DEFAULTS.values()]
    assert "kernel-wide, not settable in a container" not in prepared["output"]


def test_containerd_runs_the_rendered_config_and_answers(prepared):
    lab, cluster = prepared["lab"], prepared["cluster"]
    expected = hashlib.sha256(containerd_config(cluster).encode()).hexdigest()
    for host in lab.hosts:
        assert lab.ssh(host, "systemctl is-active containerd").stdout.strip() == "active"
        assert lab.ssh(host, "sha256sum < /etc/containerd/config.toml").stdout.split()[0] == expected
        version = lab.ssh(host, "ctr version").stdout
        assert "Server:" in version and "Version:" in version
        dump = lab.ssh(host, "containerd config dump").stdout
        assert "restrict_oom_score_adj = true" in dump and "SystemdCgroup = true" in dump
        # The CRI plugin (what crictl and the kubelet talk to) loaded with that config.
        plugins = lab.ssh(host, "ctr plugins ls").stdout
        assert any(line.split()[:2] == ["io.containerd.grpc.v1", "cri"] and line.split()[-1] == "ok" for line in plugins.splitlines())

def test_the_bundled_runtime_is_what_runs(prepared):
    """containerd, its shim, ctr, runc, the CNI plugins and etcd are the bundle's, under kubeprov's units."""
    lab, bundle = prepared["lab"], prepared["bundle"]
    digest = {dest: hashlib.sha256((bundle / name).read_bytes()).hexdigest() for name, dest in RUNTIME_DEST.items()}
    for host in lab.hosts:
        got = lab.ssh(host, "sha256sum " + " ".join(digest)).stdout.split()
        assert dict(zip(got[1::2], got[0::2])) == digest
        assert lab.ssh(host, "test -L /opt/cni/bin/bridge", check=False).returncode == 1  # a file, not a link to Debian's
        assert lab.ssh(host, "systemctl show -P FragmentPath containerd").stdout.strip() == "/etc/systemd/system/containerd.service"
        assert lab.ssh(host, "readlink /proc/$(systemctl show -P MainPID containerd)/exe").stdout.strip() == "/usr/bin/containerd"
        assert lab.ssh(host, "readlink /proc/$(systemctl show -P MainPID etcd)/exe").stdout.strip() == "/usr/bin/etcd"
    record = json.loads(lab.ssh(lab.hosts[0], "cat /var/lib/kubeprov/applied.json").stdout)
    assert record["sources"]["debian"] == []  # no Debian runtime package was asked for


def test_stand_in_binaries_placed_with_their_checksums_and_kubelet_enabled_not_started(prepared):
    lab, bundle = prepared["lab"], prepared["bundle"]
    digest = {name: hashlib.sha256((bundle / "bin" / name).read_bytes()).hexdigest() for name in ("kubelet", "kubectl", "crictl")}
    for host in lab.hosts:
        got = lab.ssh(host, "sha256sum /usr/bin/kubelet /usr/bin/crictl").stdout.split()  # the artifact plan's paths
        assert got[0::2] == [digest["kubelet"], digest["crictl"]]
        assert lab.ssh(host, "systemctl is-enabled kubelet").stdout.strip() == "enabled"
        assert lab.ssh(host, "systemctl is-active kubelet", check=False).stdout.strip() == "inactive"
        unit = lab.ssh(host, "systemctl cat kubelet").stdout
        assert "10-kubeadm.conf" in unit and "ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS" in unit
    control_plane, worker = lab.hosts[0], lab.hosts[1]
    assert lab.ssh(control_plane, "sha256sum /usr/bin/kubectl").stdout.split()[0] == digest["kubectl"]
    assert lab.ssh(worker, "test -e /usr/bin/kubectl", check=False).returncode == 1  # control planes only


def test_bundled_image_runs_with_ctr_and_gets_a_bridge_cni_address(prepared):
    lab, cluster = prepared["lab"], prepared["cluster"]
    host = lab.hosts[2]
    assert IMAGE in lab.ssh(host, "ctr -n k8s.io images ls -q").stdout.split()
    cni = "CNI_CONTAINERID=kptest CNI_NETNS=/var/run/netns/kptest CNI_IFNAME=eth0 CNI_PATH=/opt/cni/bin"
    # No cnitool in Debian: call the rendered conflist's bridge plugin (with host-local IPAM) directly.
    single = ("python3 -c 'import json; c = json.load(open(\"%s\")); p = c[\"plugins\"][0]; "
              "p.update(cniVersion=c[\"cniVersion\"], name=c[\"name\"]); print(json.dumps(p))'" % CONFLIST)
    try:
        added = lab.ssh(host, f"ip netns add kptest && {single} | {cni} CNI_COMMAND=ADD /opt/cni/bin/bridge").stdout
        address = json.loads(added)["ips"][0]["address"]
        inside = lab.ssh(host, f"ctr -n k8s.io run --rm --with-ns network:/var/run/netns/kptest {IMAGE} kptest ip -4 -o addr show eth0",
                         timeout=120).stdout
    finally:
        lab.ssh(host, f"{single} | {cni} CNI_COMMAND=DEL /opt/cni/bin/bridge; ip netns del kptest", check=False)
    assert f"inet {address}" in inside
    import ipaddress

    assert ipaddress.ip_interface(address).ip in node_pod_cidrs(cluster)[host.name]


ETCDCTL = ("ETCDCTL_API=3 etcdctl --cacert=/etc/kubernetes/pki/etcd/ca.crt --cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt "
           "--key=/etc/kubernetes/pki/etcd/healthcheck-client.key")


def test_external_etcd_three_members_tls_survives_one_killed(prepared):
    lab = prepared["lab"]
    first, _, third = lab.hosts
    endpoints = ",".join(f"https://{h.address}:2379" for h in lab.hosts)
    health = lab.ssh(first, f"{ETCDCTL} --endpoints={endpoints} endpoint health")
    assert health.stderr.count("is healthy") + health.stdout.count("is healthy") == 3
    members = lab.ssh(first, f"{ETCDCTL} --endpoints=https://127.0.0.1:2379 member list").stdout
    assert sorted(line.split(", ")[2] for line in members.splitlines()) == sorted(h.name for h in lab.hosts)
    for host in lab.hosts:
        assert lab.ssh(host, "stat -c '%a %U' /var/lib/etcd").stdout.split() == ["700", "etcd"]
    # Without a client certificate the member refuses the client (client-cert-auth).
    anonymous = lab.ssh(first, "ETCDCTL_API=3 etcdctl --cacert=/etc/kubernetes/pki/etcd/ca.crt "
                               "--endpoints=https://127.0.0.1:2379 --command-timeout=3s get x", check=False)
    assert anonymous.returncode != 0
    lab.ssh(first, f"{ETCDCTL} --endpoints=https://127.0.0.1:2379 put kubeprov/test before")
    try:
        lab.ssh(third, "systemctl kill -s KILL etcd && systemctl stop etcd")
        # If the killed member led, the other two elect a leader first (slower on a loaded machine).
        lab.ssh(first, f"for i in $(seq 30); do {ETCDCTL} --endpoints=https://127.0.0.1:2379 put kubeprov/test after && exit 0; "
                       "sleep 1; done; exit 1", timeout=200)
        got = lab.ssh(first, f"{ETCDCTL} --endpoints=https://{lab.hosts[1].address}:2379 get kubeprov/test --print-value-only")
        assert got.stdout.strip() == "after"
    finally:
        lab.ssh(third, "systemctl start etcd")
    caught_up = lab.ssh(third, f"{ETCDCTL} --endpoints=https://127.0.0.1:2379 get kubeprov/test --print-value-only --consistency=s")
    assert caught_up.stdout.strip() in ("after", "")  # serializable read: may lag a moment, must not fail


def test_second_prepare_skips_ansible_and_forced_run_changes_nothing(prepared):
    started = time.monotonic()
    proc = kubeprov(*prepare_args(prepared))
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "nothing to do: all 3 hosts have this exact state" in proc.stdout
    assert seconds < 15, f"no-op prepare took {seconds:.1f}s"
    # The roles themselves are idempotent: forced through Ansible, every host reports 0 changed.
    from provision.prepare import Options, prepare

    report = prepare(prepared["cluster"], Options(bundle=prepared["bundle"], lab=True, force=True))
    assert report.result.ok
    assert {name: h.changed for name, h in report.result.hosts.items()} == {h.name: 0 for h in prepared["lab"].hosts}
    assert all(h.ok > 10 for h in report.result.hosts.values())


def test_a_changed_rendered_file_is_applied_on_the_next_run(prepared):
    lab = prepared["lab"]
    host = lab.hosts[1]
    lab.ssh(host, "echo '# drift' >> /etc/crictl.yaml")  # not in the fingerprint: the record says all is well
    state = json.loads(lab.ssh(host, "cat /var/lib/kubeprov/applied.json").stdout)
    assert state["files"]["/etc/crictl.yaml"].split()[0] != lab.ssh(host, "sha256sum < /etc/crictl.yaml").stdout.split()[0]
    lab.ssh(host, "rm /var/lib/kubeprov/applied.json")  # a host that lost its record is prepared again
    proc = kubeprov(*prepare_args(prepared))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{host.name} to apply    never prepared" in proc.stdout
    assert re.search(rf"^{host.name} +changed +placed /etc/crictl.yaml$", proc.stdout, re.M)  # the drift was repaired, on that host
    assert "# drift" not in lab.ssh(host, "cat /etc/crictl.yaml").stdout
