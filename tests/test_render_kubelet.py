"""The kubelet's files: KubeletConfiguration against the v1beta1 schema and kubeadm's rules, the
per-node flags, and the unit + drop-in as systemd itself parses them."""

from __future__ import annotations

import ipaddress
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from provision.config.loader import cluster_from_data
from provision.config.models import SUPPORTED_MINORS
from provision.errors import ConfigError
from provision.pki.store import Material
from provision.render import HOST_RENDERERS
from provision.render.kubelet import kubelet_configuration, render_kubelet

SCHEMA = yaml.safe_load((Path(__file__).parent / "data" / "kubelet-config-v1beta1.schema.yaml").read_text())
NO_PKI = Material(cas={}, sa=(b"", b""), leaves={}, kubeconfigs={})  # these renderers read no PKI


def cluster(version: str = "v1.31.4", **overrides):
    data = {
        "apiVersion": "kubeprov.io/v1alpha1",
        "kind": "Cluster",
        "kubernetesVersion": version,
        "hosts": [
            {"name": "cp1", "address": "192.0.2.11", "internalAddress": "10.0.0.11", "roles": ["control-plane"]},
            {"name": "w1", "address": "192.0.2.21", "internalAddress": "10.0.0.21", "roles": ["worker"]},
        ],
    }
    data.update(overrides)
    return cluster_from_data(data, "cluster.yaml")


def files(c, name: str) -> dict[str, bytes]:
    return {str(p): f.content for p, f in render_kubelet(c, c.host(name), NO_PKI).items()}


def config_of(c, name: str) -> dict:
    return yaml.safe_load(files(c, name)["/var/lib/kubelet/config.yaml"])


def flags_of(c, name: str) -> list[str]:
    line = files(c, name)["/var/lib/kubelet/kubeadm-flags.env"].decode()
    # systemd reads KEY="value" from the env file and splits $KEY on whitespace, as shlex does here.
    key, _, value = line.strip().partition("=")
    assert key == "KUBELET_KUBEADM_ARGS"
    return shlex.split(shlex.split(value)[0])


# --- KubeletConfiguration -------------------------------------------------------------------------


@pytest.mark.parametrize("minor", SUPPORTED_MINORS)
@pytest.mark.parametrize("server_tls_bootstrap", [False, True])
def test_config_is_yaml_that_the_v1beta1_schema_accepts(minor, server_tls_bootstrap):
    c = cluster(f"v1.{minor}.0", kubelet={"serverTLSBootstrap": server_tls_bootstrap, "maxPods": 64})
    config = config_of(c, "w1")
    jsonschema.validate(config, SCHEMA)
    assert config["serverTLSBootstrap"] is server_tls_bootstrap
    assert config["maxPods"] == 64


def test_schema_rejects_what_the_kubelet_would():
    """The transcribed schema has teeth: an unknown field and a wrong type both fail."""
    good = kubelet_configuration(cluster())
    for bad in ({**good, "cgroupDriverr": "systemd"}, {**good, "maxPods": "110"}, {**good, "healthzPort": True}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, SCHEMA)


def test_config_follows_kubeadm_defaults():
    c = cluster(networking={"serviceSubnet": "10.112.0.0/16", "podSubnet": "10.244.0.0/16", "dnsDomain": "k8s.example"})
    config = config_of(c, "cp1")
    # kubeadm's rule: CoreDNS takes the tenth address of the service range.
    assert config["clusterDNS"] == [str(ipaddress.ip_address("10.112.0.0") + 10)] == ["10.112.0.10"]
    assert config["clusterDomain"] == "k8s.example"
    assert config["staticPodPath"] == "/etc/kubernetes/manifests"
    assert config["cgroupDriver"] == "systemd"
    assert config["authentication"] == {
        "anonymous": {"enabled": False},
        "webhook": {"enabled": True},
        "x509": {"clientCAFile": "/etc/kubernetes/pki/ca.crt"},
    }
    assert config["authorization"] == {"mode": "Webhook"}
    assert config["rotateCertificates"] is True
    assert (config["healthzBindAddress"], config["healthzPort"]) == ("127.0.0.1", 10248)
    assert config["containerRuntimeEndpoint"] == "unix:///run/containerd/containerd.sock"
    # CIS 4.2.4; 4.2.6 (protectKernelDefaults) is opt-in, off like kubeadm's
    assert config["readOnlyPort"] == 0
    assert config["protectKernelDefaults"] is False


def test_protect_kernel_defaults_is_opt_in():
    assert config_of(cluster(kubelet={"protectKernelDefaults": True}), "w1")["protectKernelDefaults"] is True


def test_every_node_gets_the_cluster_wide_configuration():
    c = cluster()
    expected = kubelet_configuration(c)
    assert config_of(c, "cp1") == config_of(c, "w1") == expected


def test_ipv6_cluster_dns():
    c = cluster(
        networking={"serviceSubnet": "fd00:10:96::/112", "podSubnet": "fd00:10:244::/56"},
        hosts=[{"name": "cp1", "address": "fd00::11", "roles": ["control-plane"]}],
    )
    assert config_of(c, "cp1")["clusterDNS"] == ["fd00:10:96::a"]


def test_etcd_only_host_gets_no_kubelet():
    c = cluster(
        etcd={"topology": "external"},
        hosts=[
            {"name": "cp1", "address": "10.0.0.11", "roles": ["control-plane"]},
            {"name": "e1", "address": "10.0.0.31", "roles": ["etcd"]},
        ],
    )
    assert render_kubelet(c, c.host("e1"), NO_PKI) == {}
    assert render_kubelet in HOST_RENDERERS  # and so `kubeprov render` writes these files


# --- per-node flags -------------------------------------------------------------------------------


def test_flags_are_sorted_and_name_the_node():
    flags = flags_of(cluster(), "w1")
    assert flags == sorted(flags)
    assert "--node-ip=10.0.0.21" in flags  # internalAddress, not the SSH address
    assert "--hostname-override=w1" in flags


@pytest.mark.parametrize(
    ("minor", "cri_flag", "pause_flag"),
    # kubeadm passes the CRI socket as a flag until NodeLocalCRISocket (on by default in 1.34);
    # the kubelet removed --pod-infra-container-image in 1.35.
    [(28, True, True), (33, True, True), (34, False, True), (35, False, False)],
)
def test_version_dependent_flags(minor, cri_flag, pause_flag):
    flags = flags_of(cluster(f"v1.{minor}.1"), "cp1")
    names = {f.split("=", 1)[0] for f in flags}
    assert ("--container-runtime-endpoint" in names) is cri_flag
    assert ("--pod-infra-container-image" in names) is pause_flag
    if pause_flag:
        tag = {28: "3.9", 33: "3.10", 34: "3.10.1"}[minor]  # kubeadm's PauseVersion per minor
        assert f"--pod-infra-container-image=registry.k8s.io/pause:{tag}" in flags


def test_extra_args_replace_ours_and_add_new_ones():
    c = cluster(kubelet={"extraArgs": {"node-ip": "10.0.0.99", "v": "2", "node-labels": "zone=a"}})
    flags = flags_of(c, "w1")
    assert "--node-ip=10.0.0.99" in flags and "--node-ip=10.0.0.21" not in flags
    assert {"--v=2", "--node-labels=zone=a"} <= set(flags)
    assert flags == sorted(flags)


@pytest.mark.parametrize(
    ("args", "version", "message"),
    [
        ({"--v": "2"}, "v1.31.0", "not a kubelet flag name"),
        ({"node-labels": "a=b c=d"}, "v1.31.0", "whitespace"),
        ({"node-labels": 'a="b"'}, "v1.31.0", "quote"),
        ({"pod-infra-container-image": "r/pause:3"}, "v1.35.0", "removed this flag in v1.35"),
    ],
)
def test_bad_extra_args_are_refused_by_the_model(args, version, message):
    """The model refuses them (so `config validate` does); the renderer relies on it.
    tests/test_config_gate.py walks these through the CLI."""
    with pytest.raises(ConfigError) as err:
        cluster(version, kubelet={"extraArgs": args})
    assert err.value.field == f"kubelet.extraArgs.{next(iter(args))}"
    assert message in err.value.message


def test_host_known_by_name_only_leaves_node_ip_to_the_kubelet():
    c = cluster(hosts=[{"name": "cp1", "address": "cp1.example.net", "roles": ["control-plane"]}])
    assert not any(f.startswith("--node-ip=") for f in flags_of(c, "cp1"))


# --- systemd unit and drop-in ---------------------------------------------------------------------


def _lay_out(tree: dict[str, bytes], root: Path) -> Path:
    for path, content in tree.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return root / "usr/lib/systemd/system"


def _verify(unit_dir: Path) -> list[str]:
    run = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit_dir / "kubelet.service")],
        capture_output=True,
        text=True,
        # The unit's own directory (and so kubelet.service.d/) first, then systemd's defaults.
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_dir}:"},
        timeout=60,
    )
    # No kubelet binary exists on this machine: that one complaint is expected and says nothing
    # about the files; anything else is a real problem with them.
    return [
        line
        for line in (run.stdout + run.stderr).splitlines()
        if line.strip() and "Command /usr/bin/kubelet is not executable" not in line
    ]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze (Debian's systemd) not installed")
def test_systemd_accepts_unit_and_drop_in(tmp_path):
    unit_dir = _lay_out(files(cluster(), "cp1"), tmp_path / "good")
    assert _verify(unit_dir) == []

    # Control: the same check does read the drop-in, so a broken one is reported.
    broken = dict(files(cluster(), "cp1"))
    drop_in = "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf"
    broken[drop_in] = broken[drop_in].replace(b"EnvironmentFile=", b"EnvironmentFil=", 1)
    problems = _verify(_lay_out(broken, tmp_path / "broken"))
    assert any("EnvironmentFil" in line for line in problems), problems


def test_exec_start_uses_only_variables_something_defines():
    drop_in = files(cluster(), "cp1")["/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf"].decode()
    lines = drop_in.splitlines()
    exec_starts = [line.partition("=")[2] for line in lines if line.startswith("ExecStart=")]
    assert exec_starts[0] == "", "the packaged ExecStart must be reset before the new one"
    used = {word[1:] for word in exec_starts[-1].split() if word.startswith("$")}
    defined = {
        line.partition("=")[2].strip('"').partition("=")[0] for line in lines if line.startswith("Environment=")
    }
    env_files = [line.partition("=")[2].lstrip("-") for line in lines if line.startswith("EnvironmentFile=")]
    assert "/var/lib/kubelet/kubeadm-flags.env" in env_files and "/etc/default/kubelet" in env_files
    # KUBELET_KUBEADM_ARGS comes from the flags file we render; KUBELET_EXTRA_ARGS from the
    # administrator's /etc/default/kubelet (optional, so it may expand to nothing).
    assert used == defined | {"KUBELET_KUBEADM_ARGS", "KUBELET_EXTRA_ARGS"}
    assert "--config=/var/lib/kubelet/config.yaml" in drop_in
    assert "--kubeconfig=/etc/kubernetes/kubelet.conf" in drop_in
    assert "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf" in drop_in
