"""Retcon: run workflows as Kubernetes Jobs, and edit a run's history.

Pause a live run at a step boundary, inspect what the finished steps produced,
replace a step's output with a reason, and resume so that downstream steps see
the new data, with an audit trail of who changed what.
"""

__version__ = "0.1.0.dev0"
