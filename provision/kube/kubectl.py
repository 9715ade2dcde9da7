"""The API, reached by running kubectl ON a control plane through the SSH transport.

Why kubectl there, not a Python client with an SSH port-forward: the transport stays the one way
kubeprov reaches hosts (docs/architecture.md), with no tunnel thread per run to keep alive; it works while
the endpoint (a VIP, a load balancer) is not reachable from the workstation, or not up yet; the
control plane has kubectl and its kubeconfigs anyway (prepare's kubectl role, the PKI sync); and
`kubectl apply` gives create-or-update with a per-object verdict (created / configured /
unchanged) that tells a no-op run from a changing one. Objects travel on stdin, never on a
command line, so a token or Secret never shows in a process list.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterable

from provision.config.models import Host
from provision.errors import KubeprovError
from provision.render.addons import k8s
from provision.transport import Transport

KUBECTL = "/usr/bin/kubectl"
ADMIN_CONF = "/etc/kubernetes/admin.conf"
SUPER_ADMIN_CONF = "/etc/kubernetes/super-admin.conf"


class Kubectl:
    def __init__(self, transport: Transport, host: Host, *, kubeconfig: str = ADMIN_CONF, server: str | None = None):
        self.transport = transport
        self.host = host
        self.kubeconfig = kubeconfig
        self.server = server  # e.g. the host's own API server while the endpoint (VIP) is not up

    def command(self, args: Iterable[str]) -> str:
        base = [KUBECTL, f"--kubeconfig={self.kubeconfig}", "--request-timeout=20s"]
        if self.server:
            base.append(f"--server={self.server}")
        return shlex.join([*base, *args])

    def run(self, *args: str, stdin: bytes | None = None, check: bool = True, timeout: float = 120):
        result = self.transport.run(self.host, self.command(args), stdin=stdin, timeout=timeout)
        if check and not result.ok:
            if result.exit_code == 127:
                raise KubeprovError(f"{self.host.name}: {KUBECTL} is missing (prepare installs it from the bundle's bin/kubectl)")
            raise KubeprovError(f"{self.host.name}: kubectl {' '.join(args[:3])} failed (exit {result.exit_code}): {result.summary()}")
        return result

    def apply(self, documents: bytes | list[dict]) -> list[str]:
        """Create or update; one line per object, e.g. 'configmap/cluster-info unchanged'."""
        data = documents if isinstance(documents, bytes) else k8s.yaml_stream(*documents)
        if not data.strip():
            return []
        # --validate=false: strict validation first fetches and parses the whole OpenAPI v2 document
        # (half of a no-op apply's time) only to learn that the server validates fields itself.
        # kubeprov's objects are checked against the schemas when rendered (tests), and the server
        # still refuses anything malformed.
        return [line for line in self.run("apply", "--validate=false", "-f", "-", stdin=data).stdout.splitlines() if line.strip()]

    def run_json(self, *args: str, timeout: float = 120):
        """What `kubectl ARGS` printed, parsed as JSON; output that is not JSON is a KubeprovError
        naming the host and the command."""
        return self.run(*args, timeout=timeout).json(shown=shlex.join(["kubectl", *args]))

    def get_json(self, *args: str) -> dict:
        return self.run_json("get", *args, "-o", "json")

    def ready(self) -> tuple[bool, str]:
        """(answered ok, what it said) for GET /readyz."""
        result = self.run("get", "--raw=/readyz", check=False, timeout=30)
        return result.ok and result.stdout.strip() == "ok", result.summary()

    def wait_ready(self, timeout: float = 300.0, interval: float = 0.5) -> float:
        # Every 0.5 s: an ask costs a kubectl start on the host (~0.1 s), and the whole run waits.
        started = time.monotonic()
        said = ""
        while time.monotonic() - started < timeout:
            ok, said = self.ready()
            if ok:
                return time.monotonic() - started
            time.sleep(interval)
        raise KubeprovError(f"{self.host.name}: the API server did not answer /readyz within {timeout:g} s (last: {said or 'no answer'}); "
                            "see `journalctl -u kubelet` and `crictl ps -a` on the host")


def changed(lines: list[str]) -> list[str]:
    """The apply lines that changed something (everything but 'unchanged')."""
    return [line for line in lines if not line.endswith(" unchanged")]
