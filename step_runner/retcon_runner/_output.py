"""Step output rules: a JSON object, finite numbers only, at most ``MAX_OUTPUT_BYTES`` compact.

``check_output`` judges what a function returned; ``parse_output_file``
judges the bytes an image step wrote to ``$RETCON_OUTPUT``. Both are pure and
return a ``StepOutcome``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from retcon_runner._outcome import (
    INVALID_OUTPUT,
    MAX_OUTPUT_BYTES,
    OUTPUT_TOO_LARGE,
    StepOutcome,
)
from retcon_runner._state import ReadOnlyList, thaw

MAX_OUTPUT_FILE_BYTES = 16 * MAX_OUTPUT_BYTES
"""Output files larger than this are refused unread (pretty-printed JSON shrinks, but not 16-fold)."""

_MIB = 1024 * 1024
_STORE_ELSEWHERE = "store large data elsewhere and return a reference"


def check_output(value: object) -> StepOutcome:
    """The outcome for a step that returned ``value`` (``None`` counts as ``{}``)."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        return _invalid(f"step output must be a JSON object, got {type(value).__name__}")
    encoded = _encode(value)
    if isinstance(encoded, str):
        return _invalid(encoded)
    if len(encoded) > MAX_OUTPUT_BYTES:
        return _too_large(len(encoded), what="step output")
    output: dict[str, Any] = json.loads(encoded)
    return StepOutcome.success(output, len(encoded))


def parse_output_file(data: bytes) -> StepOutcome:
    """The outcome for an image step whose ``$RETCON_OUTPUT`` file holds ``data``."""
    if len(data) > MAX_OUTPUT_FILE_BYTES:
        return output_file_too_large(len(data))
    value, problem = _decode(data)
    if problem is not None:
        return _invalid(problem)
    if not isinstance(value, dict):
        return _invalid(f"step output must be a JSON object, got {_json_type(value)}")
    return check_output(value)


def output_file_too_large(size: int) -> StepOutcome:
    """The outcome for an output file of ``size`` bytes, too large to be worth reading."""
    return _too_large(size, what="step output file")


def find_non_finite(value: Any, path: str = "output") -> tuple[str, float] | None:
    """The first NaN or infinite float inside ``value``, with where it is."""
    return _find_non_finite(value, path, set())


def _find_non_finite(value: Any, path: str, open_containers: set[int]) -> tuple[str, float] | None:
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value)
    if id(value) in open_containers:  # A circular reference: json.dumps names it.
        return None
    if isinstance(value, Mapping):
        children = [(_child(path, key), item) for key, item in value.items()]
    elif isinstance(value, list | tuple | ReadOnlyList):
        children = [(f"{path}[{index}]", item) for index, item in enumerate(value)]
    else:
        return None
    open_containers.add(id(value))
    try:
        for child_path, item in children:
            found = _find_non_finite(item, child_path, open_containers)
            if found is not None:
                return found
    finally:
        open_containers.discard(id(value))
    return None


def format_size(size: int) -> str:
    """``1.3 MiB (1,363,149 bytes)``: rounded for reading, exact for comparing with the limit."""
    if size >= _MIB:
        return f"{size / _MIB:.1f} MiB ({size:,} bytes)"
    return f"{size:,} bytes"


class _NonFiniteConstant(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NonFiniteConstant(name)


def _plain_json(value: object) -> Any:
    # Views handed to the step (state, context.outputs) may be returned as part of the output.
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, ReadOnlyList):
        return thaw(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _encode(value: Mapping[str, Any]) -> bytes | str:
    """The compact UTF-8 JSON encoding of ``value``, or why there is none."""
    try:
        text = json.dumps(
            value, allow_nan=False, ensure_ascii=False, separators=(",", ":"), default=_plain_json
        )
        return text.encode("utf-8")
    except UnicodeEncodeError:  # Before ValueError, its base class.
        return "step output holds a string that is not valid Unicode (a lone surrogate)"
    except ValueError as exc:
        where = find_non_finite(value)
        if where is None:
            return f"step output cannot be encoded as JSON: {exc}"
        path, number = where
        return (
            f"step output is not valid JSON: {path} is {_float_name(number)}, "
            "and JSON has no NaN or Infinity; "
            "use null or a string instead"
        )
    except TypeError as exc:
        return f"step output cannot be encoded as JSON: {exc}"
    except RecursionError:
        return "step output is nested too deeply to encode as JSON"


def _decode(data: bytes) -> tuple[Any, str | None]:
    """The JSON value in an output file, or why there is none."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return None, f"step output file is not UTF-8 text: {exc}"
    if not text.strip():
        return None, "step output file is empty; write a JSON object to it, for example {}"
    try:
        return json.loads(text, parse_constant=_refuse_constant), None
    except _NonFiniteConstant as exc:
        return None, f"step output file is not valid JSON: {exc} is not a JSON number; use null or a string"
    except json.JSONDecodeError as exc:
        return None, f"step output file is not valid JSON: {exc}"
    except RecursionError:
        return None, "step output file is nested too deeply to parse"


def _too_large(size: int, *, what: str) -> StepOutcome:
    return StepOutcome.failure(
        OUTPUT_TOO_LARGE,
        f"{what} is {format_size(size)}; the limit is 1 MiB — {_STORE_ELSEWHERE}",
        retryable=False,
    )


def _invalid(message: str) -> StepOutcome:
    return StepOutcome.failure(INVALID_OUTPUT, message, retryable=False)


def _float_name(number: float) -> str:
    if math.isnan(number):
        return "NaN"
    return "Infinity" if number > 0 else "-Infinity"


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null"


def _child(path: str, key: object) -> str:
    if isinstance(key, str) and key.isidentifier():
        return f"{path}.{key}"
    return f"{path}[{key!r}]"
