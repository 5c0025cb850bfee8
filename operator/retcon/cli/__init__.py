"""`kubectl retcon`: the kubectl plugin for Retcon, built on the `retcon.client` SDK.

Installed as the `kubectl-retcon` console script, so `kubectl retcon ...` finds it.
"""

from retcon.cli._app import cli, main

__all__ = ["cli", "main"]
