"""Function steps through ``run_step``: what the step sees, and the outcome of each way it can end."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from retcon_runner import (
    MAX_MESSAGE_BYTES,
    NON_RETRYABLE_EXIT_CODE,
    RETRYABLE_EXIT_CODE,
    SUCCESS_EXIT_CODE,
    NonRetryableError,
    Outcome,
    ReadOnlyState,
    StepContext,
    run_step,
)
from retcon_runner._function import FunctionLoadError, load_function

DOCUMENT: dict[str, Any] = {
    "run": {"name": "order-42", "namespace": "shop", "uid": "4c6f-uid"},
    "step": {"id": "step_003", "name": "charge", "attempt": 2},
    "input": {"amount": 120, "customer": {"id": "c-1"}},
    "state": {"amount": 120, "customer": {"id": "c-1"}, "quote": {"total": 130.5}, "lines": [{"sku": "a"}]},
    "steps": {
        "quote": {"output": {"quote": {"total": 130.5}}, "phase": "Succeeded"},
        "lines": {"output": {"lines": [{"sku": "a"}]}, "phase": "Succeeded"},
        "audit": {"output": None, "phase": "Failed"},
    },
}


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def write_module(directory: Path, source: str) -> str:
    """A fresh, uniquely named module holding ``source``; returns its name."""
    name = f"retcon_step_{uuid.uuid4().hex[:12]}"
    (directory / f"{name}.py").write_text(textwrap.dedent(source))
    return name


def test_the_step_sees_the_state_with_attribute_and_item_access() -> None:
    seen: dict[str, Any] = {}

    def step(state: ReadOnlyState, context: StepContext) -> dict[str, Any]:
        seen["amount"] = state.amount
        seen["item"] = state["amount"]
        seen["total"] = state.quote.total
        seen["sku"] = state.lines[0].sku
        return {"charged": state.amount}

    outcome = run_step(step, DOCUMENT)
    assert outcome.outcome is Outcome.SUCCEEDED
    assert outcome.output == {"charged": 120}
    assert outcome.exit_code == SUCCESS_EXIT_CODE
    assert seen == {"amount": 120, "item": 120, "total": 130.5, "sku": "a"}


def test_the_context_describes_the_attempt() -> None:
    contexts: list[StepContext] = []
    run_step(lambda state, context: contexts.append(context), DOCUMENT)
    [context] = contexts
    assert (context.run_name, context.run_uid, context.namespace) == ("order-42", "4c6f-uid", "shop")
    assert (context.step_id, context.step_name, context.attempt) == ("step_003", "charge", 2)
    assert context.input == {"amount": 120, "customer": {"id": "c-1"}}
    assert context.input.customer.id == "c-1"
    assert context.steps["audit"].phase == "Failed"
    assert context.steps["audit"].output is None
    assert context.steps["quote"].output.quote.total == 130.5
    assert context.outputs == {"quote": {"quote": {"total": 130.5}}, "lines": {"lines": [{"sku": "a"}]}}
    assert context.logger.name == "retcon.step.charge"


def test_the_context_is_frozen_and_its_data_read_only() -> None:
    contexts: list[StepContext] = []
    run_step(lambda state, context: contexts.append(context), DOCUMENT)
    [context] = contexts
    with pytest.raises(dataclasses.FrozenInstanceError):
        context.attempt = 3  # type: ignore[misc]
    with pytest.raises(TypeError, match="input is read-only"):
        context.input.amount = 1
    with pytest.raises(TypeError, match=r"steps\.quote\.output is read-only"):
        context.steps["quote"].output.quote = {}


def test_the_step_logger_reaches_the_caller_logs(caplog: pytest.LogCaptureFixture) -> None:
    def step(state: ReadOnlyState, context: StepContext) -> None:
        context.logger.info("Charging %s", state.amount)

    with caplog.at_level(logging.INFO, logger="retcon.step"):
        run_step(step, DOCUMENT)
    assert [(r.name, r.getMessage()) for r in caplog.records] == [("retcon.step.charge", "Charging 120")]


def test_a_minimal_document_takes_local_defaults() -> None:
    contexts: list[StepContext] = []
    outcome = run_step(
        lambda state, context: contexts.append(context) or {"n": state.n + 1}, {"state": {"n": 1}}
    )
    assert outcome.output == {"n": 2}
    [context] = contexts
    assert (context.run_name, context.namespace, context.step_name, context.attempt) == (
        "local",
        "default",
        "local",
        1,
    )


def test_without_state_the_step_sees_the_input() -> None:
    outcome = run_step(lambda state, context: {"seen": state.amount}, {"input": {"amount": 3}})
    assert outcome.output == {"seen": 3}


def test_returning_none_is_an_empty_output() -> None:
    outcome = run_step(lambda state, context: None, DOCUMENT)
    assert outcome.succeeded
    assert outcome.output == {}


def test_returning_parts_of_the_state_gives_plain_json() -> None:
    outcome = run_step(lambda state, context: {"customer": state.customer, "lines": state.lines}, DOCUMENT)
    assert outcome.output == {"customer": {"id": "c-1"}, "lines": [{"sku": "a"}]}


def test_an_async_step_is_awaited() -> None:
    async def step(state: ReadOnlyState, context: StepContext) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"doubled": state.amount * 2}

    outcome = run_step(step, DOCUMENT)
    assert outcome.output == {"doubled": 240}


async def test_an_async_step_runs_from_async_code_too() -> None:
    async def step(state: ReadOnlyState, context: StepContext) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"ok": True}

    assert run_step(step, DOCUMENT).output == {"ok": True}


def test_an_exception_is_a_retryable_failure_with_type_message_and_traceback() -> None:
    def step(state: ReadOnlyState, context: StepContext) -> None:
        raise ValueError(f"amount {state.amount} is too high")

    outcome = run_step(step, DOCUMENT)
    assert outcome.outcome is Outcome.FAILED
    assert outcome.exit_code == RETRYABLE_EXIT_CODE
    assert outcome.output is None
    assert outcome.error is not None
    assert outcome.error.type == "ValueError"
    headline, _, traceback_text = outcome.error.message.partition("\n\n")
    assert headline == "ValueError: amount 120 is too high"
    assert traceback_text.startswith("Traceback (most recent call last):\n")
    assert ", in step\n" in traceback_text
    assert "retcon_runner" not in traceback_text
    assert traceback_text.endswith("ValueError: amount 120 is too high")


def test_an_async_exception_has_no_asyncio_frames() -> None:
    async def step(state: ReadOnlyState, context: StepContext) -> None:
        await asyncio.sleep(0)
        raise KeyError("customer")

    outcome = run_step(step, DOCUMENT)
    assert outcome.outcome is Outcome.FAILED
    assert outcome.error is not None
    assert outcome.error.message.startswith("KeyError: 'customer'\n\nTraceback")
    assert "asyncio" not in outcome.error.message
    assert "During handling" not in outcome.error.message


def test_a_missing_state_key_fails_with_the_available_keys() -> None:
    outcome = run_step(lambda state, context: {"x": state.amout}, DOCUMENT)
    assert outcome.error is not None
    assert outcome.error.type == "AttributeError"
    assert outcome.error.message.startswith(
        "AttributeError: state has no key 'amout'; available keys: amount,"
    )


def test_writing_to_the_state_fails_with_the_hint() -> None:
    def step(state: ReadOnlyState, context: StepContext) -> None:
        state.amount = 0

    outcome = run_step(step, DOCUMENT)
    assert outcome.error is not None
    assert outcome.error.message.startswith(
        "TypeError: state is read-only; return the new values from the step instead"
    )


def test_an_exception_of_a_user_module_is_named_with_its_module(module_dir: Path) -> None:
    name = write_module(
        module_dir,
        """
        class PaymentDeclined(Exception):
            pass

        def charge(state, context):
            raise PaymentDeclined("card expired")
        """,
    )
    outcome = run_step(f"{name}:charge", DOCUMENT)
    assert outcome.error is not None
    assert outcome.error.type == f"{name}.PaymentDeclined"
    assert outcome.error.message.startswith(f"{name}.PaymentDeclined: card expired\n\n")


def test_non_retryable_error_is_non_retryable_with_its_message() -> None:
    def step(state: ReadOnlyState, context: StepContext) -> None:
        raise NonRetryableError("customer c-1 does not exist")

    outcome = run_step(step, DOCUMENT)
    assert outcome.outcome is Outcome.NON_RETRYABLE
    assert outcome.exit_code == NON_RETRYABLE_EXIT_CODE == 42
    assert outcome.error is not None
    assert outcome.error.type == "retcon_runner.NonRetryableError"
    assert outcome.error.message == "customer c-1 does not exist"


def test_non_retryable_error_mentions_its_cause() -> None:
    def step(state: ReadOnlyState, context: StepContext) -> None:
        try:
            {}["customer"]
        except KeyError as exc:
            raise NonRetryableError("no customer") from exc

    outcome = run_step(step, DOCUMENT)
    assert outcome.error is not None
    assert outcome.error.message == "no customer\n\ncaused by KeyError: 'customer'"


def test_a_subclass_of_non_retryable_error_is_non_retryable() -> None:
    class Declined(NonRetryableError):
        pass

    def step(state: ReadOnlyState, context: StepContext) -> None:
        raise Declined

    outcome = run_step(step, DOCUMENT)
    assert outcome.outcome is Outcome.NON_RETRYABLE
    assert outcome.error is not None
    assert outcome.error.message == "the step raised Declined"


def test_an_async_non_retryable_error_is_non_retryable() -> None:
    async def step(state: ReadOnlyState, context: StepContext) -> None:
        raise NonRetryableError("nope")

    assert run_step(step, DOCUMENT).outcome is Outcome.NON_RETRYABLE


def test_sys_exit_in_a_step_is_a_retryable_failure_that_says_so() -> None:
    def step(state: ReadOnlyState, context: StepContext) -> None:
        sys.exit(3)

    outcome = run_step(step, DOCUMENT)
    assert outcome.outcome is Outcome.FAILED
    assert outcome.error is not None
    assert outcome.error.message.startswith("SystemExit: the step called sys.exit(3)")


def test_a_deep_traceback_is_trimmed_from_the_top() -> None:
    # Two functions in turn: Python folds runs of one repeated frame, not alternations.
    def ping(depth: int) -> None:
        if depth == 0:
            raise RuntimeError("bottom")
        pong(depth - 1)

    def pong(depth: int) -> None:
        ping(depth)

    outcome = run_step(lambda state, context: ping(100), DOCUMENT)
    assert outcome.error is not None
    message = outcome.error.message
    assert len(message.encode()) <= MAX_MESSAGE_BYTES
    assert message.startswith("RuntimeError: bottom\n\n… (earlier lines trimmed)\n")
    assert message.endswith('raise RuntimeError("bottom")\nRuntimeError: bottom')


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([1, 2], "step output must be a JSON object, got list"),
        ({"x": float("nan")}, "step output is not valid JSON: output.x is NaN"),
        (
            {"blob": "x" * 1_400_000},
            "step output is 1.3 MiB (1,400,011 bytes); the limit is 1 MiB — store large",
        ),
    ],
)
def test_an_unusable_return_value_is_non_retryable(value: object, message: str) -> None:
    outcome = run_step(lambda state, context: value, DOCUMENT)
    assert outcome.outcome is Outcome.NON_RETRYABLE
    assert outcome.exit_code == 42
    assert outcome.error is not None
    assert outcome.error.message.startswith(message)


def test_a_function_is_loaded_by_name(module_dir: Path) -> None:
    name = write_module(
        module_dir,
        """
        def double(state, context):
            return {"amount": state.amount * 2}

        class Steps:
            @staticmethod
            def halve(state, context):
                return {"amount": state.amount / 2}
        """,
    )
    assert run_step(f"{name}:double", DOCUMENT).output == {"amount": 240}
    assert run_step(f"{name}:Steps.halve", DOCUMENT).output == {"amount": 60.0}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("json", "step function 'json' is not of the form 'package.module:callable'"),
        ("json:", "step function 'json:' is not of the form 'package.module:callable'"),
        (":loads", "step function ':loads' is not of the form 'package.module:callable'"),
        (".json:loads", "step function '.json:loads' is not of the form 'package.module:callable'"),
        ("json:load s", "step function 'json:load s' is not of the form 'package.module:callable'"),
        (
            "no_such_pkg_ab12.steps:run",
            "cannot import module 'no_such_pkg_ab12.steps' for step function 'no_such_pkg_ab12.steps:run': "
            "No module named 'no_such_pkg_ab12'",
        ),
        ("json:dumpz", "module 'json' has no attribute 'dumpz' (step function 'json:dumpz')"),
        (
            "json:decoder.Nope",
            "module 'json' has no attribute 'decoder.Nope' (step function 'json:decoder.Nope')",
        ),
        ("json.decoder:NaN", "step function 'json.decoder:NaN' is not callable: it is a float"),
    ],
)
def test_a_bad_function_name_is_non_retryable_and_named(spec: str, message: str) -> None:
    outcome = run_step(spec, DOCUMENT)
    assert outcome.outcome is Outcome.NON_RETRYABLE
    assert outcome.error is not None
    assert outcome.error.type == "InvalidFunction"
    assert outcome.error.message == message


def test_a_module_with_a_broken_import_is_non_retryable(module_dir: Path) -> None:
    name = write_module(module_dir, "import no_such_dependency_zz9\n")
    outcome = run_step(f"{name}:run", DOCUMENT)
    assert outcome.outcome is Outcome.NON_RETRYABLE
    assert outcome.error is not None
    assert outcome.error.message == (
        f"cannot import module {name!r} for step function '{name}:run': "
        "No module named 'no_such_dependency_zz9'"
    )


def test_a_module_with_a_syntax_error_is_non_retryable(module_dir: Path) -> None:
    name = write_module(module_dir, "def run(state, context)\n    return {}\n")
    outcome = run_step(f"{name}:run", DOCUMENT)
    assert outcome.outcome is Outcome.NON_RETRYABLE
    assert outcome.error is not None
    assert outcome.error.message.startswith(
        f"module {name!r} for step function '{name}:run' has a syntax error"
    )


def test_a_module_that_fails_while_importing_is_retryable(module_dir: Path) -> None:
    name = write_module(module_dir, "raise ConnectionError('config service unavailable')\n")
    outcome = run_step(f"{name}:run", DOCUMENT)
    assert outcome.outcome is Outcome.FAILED
    assert outcome.error is not None
    assert outcome.error.type == "ConnectionError"
    assert outcome.error.message.startswith(
        f"importing module {name!r} for step function '{name}:run' failed: "
        "ConnectionError: config service unavailable\n\nTraceback"
    )
    assert "importlib" not in outcome.error.message


def test_load_function_raises_with_the_outcome() -> None:
    with pytest.raises(FunctionLoadError, match="no attribute 'nope'") as caught:
        load_function("json:nope")
    assert caught.value.outcome.outcome is Outcome.NON_RETRYABLE


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "invalid input document: the input document must be a JSON object, got list"),
        ({"state": [1]}, "invalid input document: state must be a JSON object, got list"),
        ({"steps": {"a": 1}}, "invalid input document: steps['a'] must be a JSON object, got int"),
        (
            {"steps": {"a": {"output": [1]}}},
            "invalid input document: steps['a'].output must be a JSON object",
        ),
        ({"run": {"name": 3}}, "invalid input document: run.name must be a string, got int"),
        ({"step": {"attempt": "two"}}, "invalid input document: step.attempt must be an integer, got 'two'"),
        ({"step": {"attempt": True}}, "invalid input document: step.attempt must be an integer, got bool"),
    ],
)
def test_a_malformed_input_document_is_non_retryable(document: Any, message: str) -> None:
    outcome = run_step(lambda state, context: {}, document)
    assert outcome.outcome is Outcome.NON_RETRYABLE
    assert outcome.error is not None
    assert outcome.error.type == "InvalidInput"
    assert outcome.error.message.startswith(message)
