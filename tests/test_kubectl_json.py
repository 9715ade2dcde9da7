"""Output of a remote command that should be JSON and is not: the error is one line naming the host
and the command, never a bare "JSONDecodeError: ...".

The transport here is a test double (`FakeTransportReturning`): the point is the wording of the
error for a given stdout, and how stdout gets cut or garbled on a real host does not matter to it.
"""

from __future__ import annotations

import json

import pytest

from provision.config.models import SSH, Host, Role
from provision.errors import KubeprovError
from provision.kube.kubectl import Kubectl
from provision.transport import Result

CP1 = Host(name="cp1", address="192.0.2.10", ssh=SSH(user="root"), roles=[Role.CONTROL_PLANE])
NODES = json.dumps({"kind": "NodeList", "items": [{"metadata": {"name": f"node{i}"}} for i in range(40)]}, indent=4)


class FakeTransportReturning:
    """Test double for Transport: every command "prints" `stdout` and exits 0; commands are recorded."""

    def __init__(self, stdout: str):
        self.stdout = stdout
        self.commands: list[str] = []

    def run(self, host: Host, command: str, *, timeout: float | None = None, stdin: bytes | None = None) -> Result:
        self.commands.append(command)
        return Result(host.name, command, 0, self.stdout, "", 0.01)


def test_get_json_returns_what_kubectl_printed():
    transport = FakeTransportReturning(NODES)
    assert Kubectl(transport, CP1).get_json("nodes") == json.loads(NODES)
    assert transport.commands[0].endswith(" get nodes -o json")


def test_cut_output_names_the_host_and_the_command():
    cut = NODES[:1000]  # what a reader that stopped early would hand over
    with pytest.raises(KubeprovError) as caught:
        Kubectl(FakeTransportReturning(cut), CP1).get_json("nodes")
    message = str(caught.value)
    assert message.startswith("cp1: `kubectl get nodes -o json` printed output that is not JSON (")
    assert "\n" not in message
    assert "JSONDecodeError" not in message
    # The decoder's reason and where it gave up, then the first 80 characters as a literal.
    with pytest.raises(json.JSONDecodeError) as decoder:
        json.loads(cut)
    assert message.endswith(f"({decoder.value.msg}: char {decoder.value.pos} of {len(cut)}; it begins {cut[:80]!r})")


def test_an_error_printed_on_stdout_is_quoted():
    with pytest.raises(KubeprovError) as caught:
        Kubectl(FakeTransportReturning("error: the server doesn't have a resource type \"nodez\"\n"), CP1).get_json(
            "nodez", "-n", "kube-system"
        )
    assert str(caught.value) == (
        "cp1: `kubectl get nodez -n kube-system -o json` printed output that is not JSON "
        "(Expecting value: char 0 of 55; it begins 'error: the server doesn\\'t have a resource type \"nodez\"\\n')"
    )


def test_no_output_at_all():
    with pytest.raises(KubeprovError, match=r"^cp1: `kubectl get nodes -o json` printed output that is not JSON \(it printed nothing\)$"):
        Kubectl(FakeTransportReturning(""), CP1).get_json("nodes")


def test_a_transport_result_names_its_own_command_when_none_is_given():
    result = Result("node2", "etcdctl endpoint health -w json", 0, "[{\"endpoint\": ", "", 0.1)
    with pytest.raises(KubeprovError, match=r"^node2: `etcdctl endpoint health -w json` printed output that is not JSON \("):
        result.json()
    assert Result("node2", "echo []", 0, "[]\n", "", 0.1).json() == []
