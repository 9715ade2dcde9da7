"""The lab's one error type: a message an operator can act on, never a traceback."""

from __future__ import annotations

from provision.errors import KubeprovError


class LabError(KubeprovError):
    exit_code = 4
