"""What can go wrong talking to a host, each as one line that names the host first."""

from __future__ import annotations

from provision.errors import KubeprovError


class TransportError(KubeprovError):
    """Any failure to reach or use a host. `host` is the inventory name."""

    exit_code = 4

    def __init__(self, host: str, message: str):
        self.host = host
        self.message = message
        super().__init__(f"{host}: {message}" if not message.startswith(host) else message)


class HostKeyError(TransportError):
    """The host's key is unknown (strict checking) or differs from the one recorded."""


class UnreachableError(TransportError):
    """No TCP connection, or no SSH answer within the connect timeout."""


class AuthenticationError(TransportError):
    """The host refused our key, or sudo wants a password."""


class CommandTimeout(TransportError):
    """A command ran longer than its timeout; its channel was closed."""


class RemoteCommandError(TransportError):
    """A command kubeprov needed (not one a user asked for) failed on the host."""
