"""Artifact errors: one line each, naming the URL or file at fault."""

from __future__ import annotations

from provision.errors import KubeprovError


class ArtifactError(KubeprovError):
    """A download, checksum or bundle problem; nothing was installed from the artifact concerned."""

    exit_code = 5  # lab and transport errors use 4
