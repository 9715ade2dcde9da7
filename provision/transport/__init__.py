"""The only code that talks to hosts: SSH with strict host keys, run / read / put-if-different,
bounded parallel fan-out with per-host outcomes, and sync of rendered trees."""

import sys

# paramiko imports `invoke` (and with it asyncio, ssl and unittest.mock: ~0.1 s of every command)
# only to run the `Match exec` lines of an ssh_config file, which kubeprov never reads. Marked
# absent (unless something imported it already), paramiko takes its own path without it.
sys.modules.setdefault("invoke", None)


from provision.transport.errors import (  # noqa: E402
    AuthenticationError,
    CommandTimeout,
    HostKeyError,
    RemoteCommandError,
    TransportError,
    UnreachableError,
)
from provision.transport.fanout import DEFAULT_PARALLEL, Outcome, fan_out
from provision.transport.hostkeys import KnownHosts
from provision.transport.ssh import DEFAULT_KNOWN_HOSTS, Change, Options, Result, Transport
from provision.transport.sync import read_rendered, sync_rendered

__all__ = [
    "AuthenticationError", "Change", "CommandTimeout", "DEFAULT_KNOWN_HOSTS", "DEFAULT_PARALLEL", "HostKeyError",
    "KnownHosts", "Options", "Outcome", "RemoteCommandError", "Result", "Transport", "TransportError",
    "UnreachableError", "fan_out", "read_rendered", "sync_rendered",
]
