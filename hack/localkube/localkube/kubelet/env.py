"""A container's environment and command line, resolved like the kubelet does (pure).

Order of precedence, lowest first: the few variables inherited from the
kubelet's own environment (standing in for the image's ENV), the service
variables, `envFrom`, then `env`. `$(VAR)` references in `env` values, `command`
and `args` expand against the service variables, `envFrom` and earlier `env`
entries only (never the inherited ones, as a real kubelet cannot see an image's
ENV), with Kubernetes' rules: `$$` is a literal `$`, unknown references stay
as written.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Mapping

from localkube.kubelet.downward import resolve_field_ref, resolve_resource_field_ref
from localkube.kubelet.objects import Json, MissingReferenceError, PodSpecError, meta

#: Variables a container inherits from the kubelet: what an image's ENV would provide.
INHERITED = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TZ",
    "PYENV_ROOT",
    "PYENV_VERSION",
    "VIRTUAL_ENV",
    "PYTHONPATH",
)

#: (kind, name) of a ConfigMap or Secret; kind is "configmap" or "secret".
ObjectRef = tuple[str, str]
#: Returns the object, or None when it does not exist.
Lookup = Callable[[str, str], Json | None]


def expand(text: str, mapping: Mapping[str, str]) -> str:
    """Expand `$(VAR)` references (Kubernetes' third_party/forked/golang/expansion)."""
    if "$" not in text:
        return text
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    length = len(text)
    while cursor < length:
        if text[cursor] == "$" and cursor + 1 < length:
            out.append(text[checkpoint:cursor])
            following = text[cursor + 1]
            if following == "$":
                out.append("$")
            elif following == "(":
                close = text.find(")", cursor + 2)
                if close == -1:
                    out.append("$(")
                else:
                    name = text[cursor + 2 : close]
                    out.append(mapping.get(name, f"$({name})"))
                    cursor = close - 1
            else:
                out.append("$" + following)
            cursor += 1
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


def inherited_env(environ: Mapping[str, str], pass_env: Iterable[str] = ()) -> dict[str, str]:
    """The part of the kubelet's environment a container sees."""
    names = (*INHERITED, *pass_env)
    return {name: environ[name] for name in names if name in environ}


def service_env(api_port: int) -> dict[str, str]:
    """What in-cluster clients look for to find the apiserver."""
    return {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api_port)}


def referenced_objects(container: Json) -> set[ObjectRef]:
    """The ConfigMaps and Secrets a container's environment reads."""
    refs: set[ObjectRef] = set()
    for source in container.get("envFrom") or []:
        if source.get("configMapRef"):
            refs.add(("configmap", str(source["configMapRef"].get("name", ""))))
        if source.get("secretRef"):
            refs.add(("secret", str(source["secretRef"].get("name", ""))))
    for var in container.get("env") or []:
        value_from = var.get("valueFrom") or {}
        if value_from.get("configMapKeyRef"):
            refs.add(("configmap", str(value_from["configMapKeyRef"].get("name", ""))))
        if value_from.get("secretKeyRef"):
            refs.add(("secret", str(value_from["secretKeyRef"].get("name", ""))))
    return refs


def object_data(kind: str, obj: Json) -> dict[str, str]:
    """String data of a ConfigMap (`data`) or Secret (`data`, base64-decoded)."""
    if kind == "configmap":
        return {str(k): str(v) for k, v in (obj.get("data") or {}).items()}
    decoded: dict[str, str] = {}
    for key, value in (obj.get("data") or {}).items():
        try:
            raw = base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError) as error:
            raise PodSpecError(f"secret key {key!r} is not valid base64: {error}") from error
        decoded[str(key)] = raw.decode("utf-8", errors="surrogateescape")
    return decoded


def _describe(kind: str) -> str:
    return "ConfigMap" if kind == "configmap" else "Secret"


def _valid_env_name(name: str) -> bool:
    return bool(name) and "=" not in name and name.isprintable() and name.isascii()


def _from_key_ref(kind: str, ref: Json, namespace: str, lookup: Lookup) -> str | None:
    name, key = str(ref.get("name", "")), str(ref.get("key", ""))
    optional = bool(ref.get("optional"))
    obj = lookup(kind, name)
    if obj is None:
        if optional:
            return None
        raise MissingReferenceError(f'{kind} "{name}" not found')
    data = object_data(kind, obj)
    if key not in data:
        if optional:
            return None
        raise MissingReferenceError(f"couldn't find key {key} in {_describe(kind)} {namespace}/{name}")
    return data[key]


def _value_from(
    pod: Json, container: Json, name: str, value_from: Json, *, node_name: str, lookup: Lookup
) -> str | None:
    """One `valueFrom`; None when an optional reference is missing (the variable is not set)."""
    namespace = str(meta(pod).get("namespace", ""))
    if value_from.get("fieldRef"):
        return resolve_field_ref(pod, str(value_from["fieldRef"].get("fieldPath", "")), node_name=node_name)
    if value_from.get("resourceFieldRef"):
        return resolve_resource_field_ref(container, value_from["resourceFieldRef"])
    if value_from.get("configMapKeyRef"):
        return _from_key_ref("configmap", value_from["configMapKeyRef"], namespace, lookup)
    if value_from.get("secretKeyRef"):
        return _from_key_ref("secret", value_from["secretKeyRef"], namespace, lookup)
    raise PodSpecError(f"env {name}: unsupported valueFrom {sorted(value_from)}")


def build_container_env(
    pod: Json,
    container: Json,
    *,
    node_name: str,
    services: Mapping[str, str],
    lookup: Lookup,
) -> dict[str, str]:
    """The variables Kubernetes defines for a container: services, `envFrom`, then `env`."""
    env: dict[str, str] = dict(services)
    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix") or "")
        for kind, field in (("configmap", "configMapRef"), ("secret", "secretRef")):
            ref = source.get(field)
            if not ref:
                continue
            name = str(ref.get("name", ""))
            obj = lookup(kind, name)
            if obj is None:
                if ref.get("optional"):
                    continue
                raise MissingReferenceError(f'{kind} "{name}" not found')
            for key, value in object_data(kind, obj).items():
                if _valid_env_name(prefix + key):
                    env[prefix + key] = value
    for var in container.get("env") or []:
        name = str(var.get("name", ""))
        value_from = var.get("valueFrom")
        if not value_from:
            env[name] = expand(str(var.get("value") or ""), env)
            continue
        resolved = _value_from(pod, container, name, value_from, node_name=node_name, lookup=lookup)
        if resolved is not None:
            env[name] = resolved
    return env


def build_command(container: Json, env: Mapping[str, str]) -> list[str]:
    """`command` + `args` with `$(VAR)` expanded; the image's ENTRYPOINT is unknown here."""
    command = [str(part) for part in container.get("command") or []]
    args = [str(part) for part in container.get("args") or []]
    if not command and not args:
        raise PodSpecError(
            f"container {container.get('name')!r} has neither command nor args: the process "
            "kubelet ignores images, so it cannot run an image's ENTRYPOINT; set command"
        )
    return [expand(part, env) for part in (*command, *args)]


def build_process_env(inherited: Mapping[str, str], container_env: Mapping[str, str]) -> dict[str, str]:
    """The environment the process starts with: inherited variables, overridden by Kubernetes'."""
    return {**inherited, **container_env}
