"""Connecting to the cluster the way kubectl does, and turning API errors into one-line RetconErrors."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
from lightkube import ConfigError, KubeConfig
from lightkube.config.kubeconfig import SingleConfig

from retcon.client._errors import InvalidInput, PermissionDenied, RetconError

MISSING_CRDS = (
    "the Retcon CRDs are not installed in this cluster: install them with `kubectl apply -f crds/`"
    " or the Helm chart"
)


def load_config(kubeconfig: str | os.PathLike[str] | None, context: str | None) -> SingleConfig:
    """The kubeconfig context to use: from `kubeconfig`, else as kubectl finds it.

    That is `$KUBECONFIG`, else the in-cluster ServiceAccount, else `~/.kube/config`.
    """
    try:
        if kubeconfig is not None:
            config = KubeConfig.from_file(kubeconfig)
        elif os.pathsep in os.environ.get("KUBECONFIG", ""):
            # kubectl merges a list of files; the first one that exists is the usual case.
            paths = [Path(p).expanduser() for p in os.environ["KUBECONFIG"].split(os.pathsep) if p]
            config = KubeConfig.from_file(next((p for p in paths if p.is_file()), paths[0]))
        else:
            config = KubeConfig.from_env()
        single = config.get(context_name=context)
    except ConfigError as error:
        raise RetconError(f"cannot use the kubeconfig: {error}") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RetconError(f"cannot read the kubeconfig: {error!r}") from None
    if single is None:  # pragma: no cover - get() without a default never returns None
        raise RetconError("the kubeconfig has no current context: pass a context")
    return single


def _body(error: httpx2.HTTPStatusError) -> dict[str, Any]:
    try:
        body = error.response.json()
    except Exception:  # noqa: BLE001 - a streamed or non-JSON body: fall back to the status code
        return {}
    return body if isinstance(body, dict) else {}


@contextmanager
def translated(
    server: str,
    *,
    not_found: Callable[[], RetconError] | None = None,
    conflict: Callable[[], RetconError] | None = None,
    missing_ok: bool = False,
) -> Iterator[None]:
    """Turn what the API server or the network says into a RetconError with one actionable line.

    `not_found` makes the error for a missing object; with `missing_ok` a missing
    object is no error at all (the block just stops).
    """
    try:
        yield
    except httpx2.HTTPStatusError as error:
        code = error.response.status_code
        body = _body(error)
        message = " ".join(str(body.get("message") or error.response.reason_phrase or "").split())
        if code == 404:
            if "could not find the requested resource" in message:
                raise RetconError(MISSING_CRDS) from error
            if missing_ok:
                return
            if not_found is not None:
                raise not_found() from error
            raise RetconError(f"not found: {message}") from error
        if code == 401:
            raise PermissionDenied(
                f"the API server at {server} did not accept your credentials:"
                " log in again or check the kubeconfig"
            ) from error
        if code == 403:
            raise PermissionDenied(f"permission denied: {message}") from error
        if code == 409 and conflict is not None:
            raise conflict() from error
        if code in (400, 422):
            raise InvalidInput(f"the API server refused it: {message}") from error
        raise RetconError(f"the API server answered {code}: {message or 'no message'}") from error
    except httpx2.TransportError as error:
        raise RetconError(
            f"cannot reach the Kubernetes API server at {server}: {error or type(error).__name__}"
        ) from error
