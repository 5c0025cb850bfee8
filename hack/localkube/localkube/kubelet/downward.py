"""The downward API: what a pod may learn about itself (pure).

Field paths and resource references resolve the way the kubelet resolves them
for environment variables and downwardAPI volume files, with the process
kubelet's fixed answers for the pod and host IPs (both 127.0.0.1).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from fractions import Fraction

from localkube.kubelet.objects import Json, PodSpecError, meta

POD_IP = "127.0.0.1"
HOST_IP = "127.0.0.1"

#: What the node reports as allocatable; a resource reference without a limit sees this.
NODE_ALLOCATABLE: Mapping[str, str] = {
    "cpu": "64",
    "memory": "256Gi",
    "pods": "1000",
    "ephemeral-storage": "1Ti",
}

_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.*)'\]$")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(.*)$")
_EXPONENT = re.compile(r"^[eE]([+-]?\d+)$")
_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def go_quote(text: str) -> str:
    """Go's `%q` for a string: double quotes, backslash escapes, printable Unicode kept."""
    out = ['"']
    for char in text:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    out.append('"')
    return "".join(out)


def format_map(values: Mapping[str, str]) -> str:
    """`key="value"` lines in key order, no trailing newline (the kubelet's FormatMap)."""
    return "\n".join(f"{key}={go_quote(values[key])}" for key in sorted(values))


def resolve_field_ref(pod: Json, field_path: str, *, node_name: str) -> str:
    """The value of a `fieldRef.fieldPath` for this pod."""
    m = meta(pod)
    spec = pod.get("spec") or {}
    simple = {
        "metadata.name": lambda: str(m.get("name", "")),
        "metadata.namespace": lambda: str(m.get("namespace", "")),
        "metadata.uid": lambda: str(m.get("uid", "")),
        "metadata.labels": lambda: format_map(m.get("labels") or {}),
        "metadata.annotations": lambda: format_map(m.get("annotations") or {}),
        "spec.nodeName": lambda: str(spec.get("nodeName") or node_name),
        "spec.serviceAccountName": lambda: str(spec.get("serviceAccountName") or ""),
        "status.podIP": lambda: POD_IP,
        "status.podIPs": lambda: POD_IP,
        "status.hostIP": lambda: HOST_IP,
        "status.hostIPs": lambda: HOST_IP,
    }
    if field_path in simple:
        return simple[field_path]()
    match = _SUBSCRIPT.match(field_path)
    if match:
        mapping = m.get(match.group(1)) or {}
        return str(mapping.get(match.group(2), ""))
    raise PodSpecError(f"unsupported fieldRef fieldPath {field_path!r}")


def parse_quantity(text: str) -> Fraction:
    """A Kubernetes resource quantity ("500m", "1Gi", "2e3") as an exact number."""
    match = _QUANTITY.match(str(text).strip())
    if not match:
        raise PodSpecError(f"invalid resource quantity {text!r}")
    number, suffix = Fraction(match.group(1)), match.group(2)
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    exponent = _EXPONENT.match(suffix)
    if exponent:
        return number * Fraction(10) ** int(exponent.group(1))
    raise PodSpecError(f"invalid resource quantity {text!r}")


def resolve_resource_field_ref(container: Json, ref: Json) -> str:
    """A `resourceFieldRef` value: the container's limit or request, else node allocatable.

    Like the kubelet, an unset limit reads as the node's allocatable amount and
    the result is rounded up to a whole number of `divisor` units.
    """
    resource = str(ref.get("resource", ""))
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or not name:
        raise PodSpecError(f"unsupported resourceFieldRef resource {resource!r}")
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(name)
    if value is None and kind == "limits":
        value = NODE_ALLOCATABLE.get(name)
    if value is None and kind == "requests":
        value = (resources.get("limits") or {}).get(name, "0")
    amount = parse_quantity(str(value if value is not None else "0"))
    divisor = parse_quantity(str(ref.get("divisor") or "1"))
    if divisor <= 0:
        raise PodSpecError(f"resourceFieldRef divisor must be positive, got {ref.get('divisor')!r}")
    if name == "cpu":
        # The kubelet divides milli-values, so "1m" is the finest CPU divisor.
        return str(math.ceil(math.ceil(amount * 1000) / math.ceil(divisor * 1000)))
    return str(math.ceil(amount / divisor))
