"""templates/: the jinja2 templates behind the file-shaped artefacts, and how they ship.

That the templates render the same bytes the hand-built Python did is the golden tests' job
(tests/golden*, unchanged) and the real-tool tests' (haproxy -c, keepalived -t, systemd-analyze
verify, containerd, etcd). Here: the environment refuses what would silently render wrong, the
TOML filter agrees with a real TOML parser, and a built wheel carries every template and renders
byte-equal to this checkout.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import jinja2
import pytest
from setuptools import find_namespace_packages
from testkit import hosts

from provision.config.models import Cluster
from provision.render import templates

REPO = Path(__file__).resolve().parent.parent
TEMPLATE_FILES = sorted(p.relative_to(REPO / "templates").as_posix() for p in (REPO / "templates").rglob("*.j2"))


def test_every_template_is_used_by_a_renderer():
    sources = "\n".join(p.read_text() for p in (REPO / "provision").rglob("*.py"))
    assert TEMPLATE_FILES, "templates/ holds no template"
    unused = [name for name in TEMPLATE_FILES if f'"{name}"' not in sources]
    assert not unused, f"templates no renderer names: {unused}"


def test_a_missing_variable_is_an_error_not_an_empty_string():
    with pytest.raises(jinja2.UndefinedError, match="bind"):
        templates.render_template("haproxy.cfg.j2", health_port=8081, serving_port=8082, transparent=False, servers=[])


def test_an_unknown_template_is_named():
    with pytest.raises(jinja2.TemplateNotFound, match="no-such.j2"):
        templates.render_template("systemd/no-such.j2")


@pytest.mark.parametrize(
    "value", ["plain", 'say "hi"', "back\\slash", "tab\there", "line\nbreak", "ünïcödé ✓", "", True, False]
)
def test_toml_filter_round_trips_through_a_real_toml_parser(value):
    source = jinja2.Environment(autoescape=False)
    source.filters["toml"] = templates.toml_value
    text = source.from_string("x = {{ v | toml }}\n").render(v=value)
    assert tomllib.loads(text) == {"x": value}


def test_toml_filter_refuses_what_it_cannot_spell():
    with pytest.raises(TypeError):
        templates.toml_value(3.5)


def test_the_wheel_lists_every_provision_package():
    """pyproject lists packages by hand (find cannot map templates/ into provision); a package
    someone adds under provision/ and forgets there would be missing from every wheel."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = set(find_namespace_packages(where=str(REPO), include=["provision", "provision.*"]))
    on_disk = {name for name in on_disk if not name.endswith("__pycache__") and "__pycache__." not in name}
    templates = {"provision.templates"} | {
        f"provision.templates.{name}" for name in find_namespace_packages(where=str(REPO / "templates")) if "__pycache__" not in name
    }
    # playbooks/ is one package: its roles ship as that package's data (tests/test_packaging.py).
    assert set(config["packages"]) == on_disk | templates | {"provision.playbooks"}, "update [tool.setuptools] packages"
    assert config["package-dir"] == {"provision.templates": "templates", "provision.playbooks": "playbooks"}


# The files rendered on both sides of the wheel comparison: one per template family.
_RENDER_SCRIPT = """
import json, sys
from provision.config.models import Cluster
from provision.render import ha, kubelet, etcd, containerd
from provision.render.addons import coredns
from provision.render.cni import bridge
import provision.templates
cluster = Cluster.model_validate(json.loads(sys.argv[1]))
cp1 = cluster.host("cp1")
print(json.dumps({
    "templates_from": provision.templates.__file__,
    "haproxy.cfg": ha.haproxy_cfg(cluster, "10.0.0.100:6443", foreign=True),
    "keepalived.conf": ha.keepalived_conf(cluster, cp1),
    "kubelet.service": kubelet.kubelet_unit().decode(),
    "10-kubeadm.conf": kubelet.kubeadm_drop_in().decode(),
    "etcd.service": etcd.etcd_unit().decode(),
    "config.toml": containerd.containerd_config(cluster),
    "hosts.toml": containerd.hosts_toml("docker.io", ["https://mirror.example"]),
    "crictl.yaml": containerd.crictl_config(),
    "Corefile": coredns.corefile(cluster),
    "routes": bridge.routes_unit(cluster, cp1).decode(),
}))
"""

_CLUSTER = {
    "apiVersion": "kubeprov.io/v1alpha1",
    "kind": "Cluster",
    "kubernetesVersion": "v1.32.1",
    "hosts": hosts(3, 1),
    "controlPlaneEndpoint": "10.0.0.100:6443",
    "loadBalancer": {"mode": "haproxy-keepalived"},
    "cni": "bridge",
}


def _render_with(python: Path, cwd: Path) -> dict:
    out = subprocess.run(
        [str(python), "-c", _RENDER_SCRIPT, json.dumps(_CLUSTER)], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.integration
def test_a_built_wheel_ships_the_templates_and_renders_the_same_bytes(tmp_path):
    Cluster.model_validate(_CLUSTER)  # a bad test cluster fails here, not inside a subprocess
    # Build from a copy, so the build leaves no build/ or egg-info behind in the checkout.
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for part in ("provision", "templates", "playbooks"):
        shutil.copytree(REPO / part, source / part, ignore=ignore)
    for part in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / part, source / part)
    wheels = tmp_path / "wheels"
    pip = Path(sys.executable).parent / "pip"
    build = subprocess.run(
        [str(pip), "wheel", "--no-deps", "-q", "-w", str(wheels), str(source)], capture_output=True, text=True, timeout=600
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("kubeprov-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    missing = [name for name in TEMPLATE_FILES if f"provision/templates/{name}" not in shipped]
    assert not missing, f"not in the wheel: {missing}"

    # A fresh venv that sees this venv's dependencies through a .pth line but not its editable
    # kubeprov (a path added by a .pth is not scanned for further .pth files, so the editable
    # finder never loads): kubeprov comes from the wheel alone.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [str(pip), "--python", str(python), "install", "--no-deps", "-q", str(wheel)], capture_output=True, text=True, timeout=300
    )
    assert install.returncode == 0, install.stderr

    elsewhere = tmp_path / "cwd"  # not the checkout: its provision/ must not shadow the wheel's
    elsewhere.mkdir()
    from_wheel = _render_with(python, elsewhere)
    from_checkout = _render_with(Path(sys.executable), elsewhere)
    assert Path(from_wheel.pop("templates_from")).is_relative_to(site)
    assert Path(from_checkout.pop("templates_from")).is_relative_to(REPO / "templates")
    assert from_wheel == from_checkout
