"""The one error type the control plane raises for conditions a user can fix."""

from __future__ import annotations


class LocalkubeError(Exception):
    """A problem the user can act on; the CLI prints it on one line and exits 1."""
