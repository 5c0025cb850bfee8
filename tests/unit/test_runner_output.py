"""Output rules (a JSON object, finite, at most 1 MiB) and the size of error messages."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retcon_runner import MAX_MESSAGE_BYTES, MAX_OUTPUT_BYTES, Outcome, ReadOnlyState
from retcon_runner._outcome import INVALID_OUTPUT, OUTPUT_TOO_LARGE, compose_message
from retcon_runner._output import MAX_OUTPUT_FILE_BYTES, check_output, parse_output_file


def _compact(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def test_an_object_succeeds_with_its_compact_size() -> None:
    outcome = check_output({"total": 12.5, "name": "café", "items": [1, 2]})
    assert outcome.outcome is Outcome.SUCCEEDED
    assert outcome.output == {"total": 12.5, "name": "café", "items": [1, 2]}
    assert outcome.output_bytes == len(_compact(outcome.output))
    assert outcome.error is None
    assert outcome.exit_code == 0


def test_none_is_an_empty_object() -> None:
    outcome = check_output(None)
    assert outcome.output == {}
    assert outcome.output_bytes == 2


def test_the_output_is_a_plain_json_copy() -> None:
    source = {"when": (1, 2), "nested": ReadOnlyState({"x": [ReadOnlyState({"y": 1})]}), 3: "three"}
    outcome = check_output(source)
    assert outcome.output == {"when": [1, 2], "nested": {"x": [{"y": 1}]}, "3": "three"}
    assert type(outcome.output["nested"]) is dict  # type: ignore[index]


@pytest.mark.parametrize(
    ("value", "kind"),
    [([1, 2], "list"), ("text", "str"), (3, "int"), (2.5, "float"), (True, "bool"), ((1,), "tuple")],
)
def test_anything_but_an_object_is_non_retryable(value: object, kind: str) -> None:
    outcome = check_output(value)
    assert outcome.outcome is Outcome.NON_RETRYABLE
    assert outcome.exit_code == 42
    assert outcome.output is None
    assert outcome.error is not None
    assert outcome.error.type == INVALID_OUTPUT
    assert outcome.error.message == f"step output must be a JSON object, got {kind}"


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"ratio": float("nan")}, "output.ratio is NaN"),
        ({"a": {"b": [1.0, float("inf")]}}, "output.a.b[1] is Infinity"),
        ({"odd key": -float("inf")}, "output['odd key'] is -Infinity"),
    ],
)
def test_non_finite_numbers_are_non_retryable_and_located(value: dict[str, Any], where: str) -> None:
    outcome = check_output(value)
    assert outcome.outcome is Outcome.NON_RETRYABLE
    assert outcome.error is not None
    assert where in outcome.error.message
    assert "JSON has no NaN or Infinity" in outcome.error.message


def test_values_json_cannot_encode_are_non_retryable() -> None:
    outcome = check_output({"at": datetime.date(2024, 1, 1)})
    assert outcome.outcome is Outcome.NON_RETRYABLE
    assert outcome.error is not None
    assert (
        outcome.error.message
        == "step output cannot be encoded as JSON: Object of type date is not JSON serializable"
    )


def test_a_circular_output_is_non_retryable() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    outcome = check_output(loop)
    assert outcome.outcome is Outcome.NON_RETRYABLE
    assert outcome.error is not None
    assert "Circular reference" in outcome.error.message


def test_a_lone_surrogate_is_non_retryable() -> None:
    outcome = check_output({"text": "\ud800"})
    assert outcome.error is not None
    assert "not valid Unicode" in outcome.error.message


def test_exactly_one_mib_is_accepted() -> None:
    padding = MAX_OUTPUT_BYTES - len(_compact({"data": ""}))
    outcome = check_output({"data": "x" * padding})
    assert outcome.succeeded
    assert outcome.output_bytes == MAX_OUTPUT_BYTES


def test_one_byte_over_one_mib_is_refused_with_both_sizes() -> None:
    padding = MAX_OUTPUT_BYTES - len(_compact({"data": ""})) + 1
    outcome = check_output({"data": "x" * padding})
    assert outcome.outcome is Outcome.NON_RETRYABLE
    assert outcome.error is not None
    assert outcome.error.type == OUTPUT_TOO_LARGE
    assert outcome.error.message == (
        "step output is 1.0 MiB (1,048,577 bytes); the limit is 1 MiB — "
        "store large data elsewhere and return a reference"
    )


def test_the_limit_counts_utf8_bytes_of_the_compact_encoding() -> None:
    outcome = check_output({"data": "é" * 700_000})  # 1.4 MB in UTF-8, 700,000 characters
    assert outcome.error is not None
    assert outcome.error.message.startswith("step output is 1.3 MiB (1,400,011 bytes); the limit is 1 MiB")


def test_an_output_file_with_an_object_succeeds() -> None:
    outcome = parse_output_file(b'{\n  "rows": 3,\n  "name": "caf\xc3\xa9"\n}\n')
    assert outcome.succeeded
    assert outcome.output == {"rows": 3, "name": "café"}
    assert outcome.output_bytes == len(b'{"rows":3,"name":"caf\xc3\xa9"}')


def test_an_output_file_may_start_with_a_byte_order_mark() -> None:
    assert parse_output_file(b'\xef\xbb\xbf{"ok": true}').output == {"ok": True}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            b'{"a": 1,}',
            "step output file is not valid JSON: Expecting property name enclosed in double quotes",
        ),
        (b"[1, 2]", "step output must be a JSON object, got an array"),
        (b'"done"', "step output must be a JSON object, got a string"),
        (b"42", "step output must be a JSON object, got a number"),
        (b"true", "step output must be a JSON object, got a boolean"),
        (b"null", "step output must be a JSON object, got null"),
        (b"", "step output file is empty; write a JSON object to it, for example {}"),
        (b" \n", "step output file is empty"),
        (b'{"x": NaN}', "step output file is not valid JSON: NaN is not a JSON number"),
        (b'{"x": -Infinity}', "step output file is not valid JSON: -Infinity is not a JSON number"),
        (b'{"x": "\xff"}', "step output file is not UTF-8 text"),
    ],
)
def test_an_unusable_output_file_is_non_retryable(data: bytes, message: str) -> None:
    outcome = parse_output_file(data)
    assert outcome.outcome is Outcome.NON_RETRYABLE
    assert outcome.error is not None
    assert outcome.error.type == INVALID_OUTPUT
    assert outcome.error.message.startswith(message)


def test_a_json_error_says_where() -> None:
    outcome = parse_output_file(b'{\n  "a": 1\n  "b": 2\n}')
    assert outcome.error is not None
    assert "line 3 column 3" in outcome.error.message


def test_a_pretty_printed_file_is_measured_compact() -> None:
    document = {"data": "x" * (MAX_OUTPUT_BYTES - 20)}
    pretty = json.dumps(document, indent=8).replace('"data"', '\n\n\n"data"').encode()
    outcome = parse_output_file(pretty + b" " * 200)
    assert outcome.succeeded
    assert outcome.output_bytes == len(_compact(document))


def test_an_output_file_over_the_limit_is_too_large() -> None:
    outcome = parse_output_file(_compact({"data": "x" * MAX_OUTPUT_BYTES}))
    assert outcome.error is not None
    assert outcome.error.type == OUTPUT_TOO_LARGE
    assert outcome.error.message.startswith("step output is 1.0 MiB")


def test_a_huge_output_file_is_refused_unparsed() -> None:
    outcome = parse_output_file(b" " * (MAX_OUTPUT_FILE_BYTES + 1))
    assert outcome.error is not None
    assert outcome.error.message.startswith(
        "step output file is 16.0 MiB (16,777,217 bytes); the limit is 1 MiB"
    )


def test_a_short_message_is_kept_whole() -> None:
    assert compose_message("ValueError: bad", "Traceback ...\nValueError: bad") == (
        "ValueError: bad\n\nTraceback ...\nValueError: bad"
    )


def test_a_long_traceback_loses_its_top_lines_and_keeps_its_end() -> None:
    frames = "".join(f'  File "step.py", line {n}, in f{n}\n    call()\n' for n in range(400))
    traceback_text = "Traceback (most recent call last):\n" + frames + "ValueError: bad amount"
    message = compose_message("ValueError: bad amount", traceback_text)
    assert len(message.encode()) <= MAX_MESSAGE_BYTES
    assert message.startswith("ValueError: bad amount\n\n… (earlier lines trimmed)\n  ")
    assert message.endswith("in f399\n    call()\nValueError: bad amount")
    assert "in f0\n" not in message


def test_a_huge_headline_keeps_its_start() -> None:
    message = compose_message("ValueError: " + "é" * 5000)
    assert len(message.encode()) <= MAX_MESSAGE_BYTES
    assert message.startswith("ValueError: éé")
    assert message.endswith(" … (truncated)")


@given(st.text(max_size=6000), st.text(max_size=9000))
def test_every_message_fits_and_keeps_its_headline_start(headline: str, detail: str) -> None:
    message = compose_message(headline, detail)
    assert len(message.encode("utf-8")) <= MAX_MESSAGE_BYTES
    safe_headline = headline.encode("utf-8", "replace").decode("utf-8")
    assert message.startswith(safe_headline[:100]) or message.startswith(safe_headline[:50])
