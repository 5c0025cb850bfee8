"""The Retcon step runner: runs one step inside its pod and reports the result.

It is installed into step images on its own, without the operator.
"""
