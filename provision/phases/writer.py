"""The one writer of host files, as the phases and the rolling mechanism use it: a host's tree
pushed through the transport against the file states its facts hold, and what that push would
change (for plans), from the same facts. Below both `phases/files.py` (sync, finalize) and
`provision/rolling.py`, which each decide when a host's files go."""

from __future__ import annotations

from provision.config.models import Host
from provision.phases.context import UpContext


def push_tree(ctx: UpContext, host: Host, tree: dict) -> list:
    """The one writer: `tree` onto `host`, comparing with the states its facts hold (a changed
    host's facts are read again when next asked)."""
    changes = ctx.transport.push(host, {str(p): (f.content, f.mode) for p, f in tree.items()}, known=ctx.facts(host).files)
    if changes:
        ctx.facts.forget(host)
    return changes


def pending(ctx: UpContext, host: Host, tree: dict) -> list:
    """What push_tree would change on `host` for `tree`, from its facts (no round trip)."""
    from provision.transport.ssh import changes

    return changes({str(p): (f.content, f.mode) for p, f in tree.items()}, ctx.facts(host).files)
