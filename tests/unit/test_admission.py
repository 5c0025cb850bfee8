"""What the admission webhook decides for interventions: pure functions of the request, no cluster."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from retcon.engine.model import (
    CANCEL_ANNOTATION,
    INTENTS_ANNOTATION,
    PAUSE_ANNOTATION,
    RESUME_FROM_ANNOTATION,
    SIGNAL_PREFIX,
)
from retcon.kube.admission import (
    ADD_STEP_ANNOTATION,
    MAX_INTENTS,
    derive_intents,
    read_intents,
    run_intents_value,
    step_names,
    validate_injection,
    validate_run_annotations,
)

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
STAMP = "2026-03-04T05:06:07Z"
OPERATOR = "system:serviceaccount:retcon-system:retcon-operator"
SIGNAL = f"{SIGNAL_PREFIX}approval"


def intents_value(
    old: dict[str, str] | None, new: dict[str, str], actor: str = "alice", now: datetime = NOW
) -> str | None:
    return run_intents_value(old, new, actor=actor, now=now, operator_user=OPERATOR)


def stamped(*items: dict[str, Any]) -> str:
    return json.dumps(list(items), separators=(",", ":"))


# --- derive_intents: what an annotation change amounts to ------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param({}, {PAUSE_ANNOTATION: "true"}, [{"type": "pause", "data": {}}], id="pause-added"),
        pytest.param({PAUSE_ANNOTATION: "true"}, {}, [{"type": "resume", "data": {}}], id="pause-removed"),
        pytest.param(
            {PAUSE_ANNOTATION: "true"},
            {RESUME_FROM_ANNOTATION: "step_002"},
            [{"type": "resume", "data": {"fromStep": "step_002"}}],
            id="resume-with-resume-from",
        ),
        pytest.param(
            {},
            {RESUME_FROM_ANNOTATION: "b"},
            [{"type": "resume", "data": {"fromStep": "b"}}],
            id="resume-from-alone",
        ),
        pytest.param({}, {CANCEL_ANNOTATION: "true"}, [{"type": "cancel", "data": {}}], id="cancel"),
        pytest.param(
            {},
            {SIGNAL: '{"approved": true, "by": "ops"}'},
            [{"type": "signal", "data": {"step": "approval", "data": {"approved": True, "by": "ops"}}}],
            id="signal-json",
        ),
        pytest.param(
            {},
            {SIGNAL: "{not json"},
            [{"type": "signal", "data": {"step": "approval", "data": None}}],
            id="signal-invalid-json",
        ),
        pytest.param(
            {},
            {ADD_STEP_ANNOTATION: '{"after": "a", "step": {"name": "x"}}'},
            [{"type": "add-step", "data": {"request": {"after": "a", "step": {"name": "x"}}}}],
            id="add-step",
        ),
        pytest.param(
            {},
            {ADD_STEP_ANNOTATION: "nope"},
            [{"type": "add-step", "data": {"request": None}}],
            id="add-step-invalid-json",
        ),
    ],
)
def test_each_annotation_change_amounts_to_its_intent(
    old: dict[str, str], new: dict[str, str], expected: list[dict[str, Any]]
) -> None:
    assert derive_intents(old, new) == expected


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param({PAUSE_ANNOTATION: "true"}, {PAUSE_ANNOTATION: "true"}, id="pause-unchanged"),
        pytest.param({}, {PAUSE_ANNOTATION: "false"}, id="pause-not-true"),
        pytest.param(
            {RESUME_FROM_ANNOTATION: "b"}, {RESUME_FROM_ANNOTATION: "b"}, id="resume-from-unchanged"
        ),
        pytest.param({CANCEL_ANNOTATION: "true"}, {CANCEL_ANNOTATION: "true"}, id="cancel-unchanged"),
        pytest.param({}, {CANCEL_ANNOTATION: "1"}, id="cancel-not-true"),
        pytest.param({SIGNAL: "{}"}, {SIGNAL: "{}"}, id="signal-unchanged"),
        pytest.param({SIGNAL: "{}"}, {}, id="signal-removed"),
        pytest.param({}, {"team": "payments"}, id="unrelated"),
    ],
)
def test_changes_that_ask_for_nothing_new_amount_to_no_intent(
    old: dict[str, str], new: dict[str, str]
) -> None:
    assert derive_intents(old, new) == []


def test_one_change_can_amount_to_several_intents_in_a_fixed_order() -> None:
    new = {PAUSE_ANNOTATION: "true", CANCEL_ANNOTATION: "true", SIGNAL: '{"ok": 1}'}

    assert [intent["type"] for intent in derive_intents({}, new)] == ["pause", "cancel", "signal"]


def test_a_changed_signal_value_is_a_new_signal() -> None:
    (intent,) = derive_intents({SIGNAL: '{"ok": 1}'}, {SIGNAL: '{"ok": 2}'})

    assert intent == {"type": "signal", "data": {"step": "approval", "data": {"ok": 2}}}


# --- run_intents_value: the annotation only the webhook writes -------------------------------------


def test_intents_are_stamped_with_the_actor_the_time_and_a_sequence() -> None:
    value = intents_value({}, {PAUSE_ANNOTATION: "true", CANCEL_ANNOTATION: "true"}, actor="alice")

    assert value is not None
    assert json.loads(value) == [
        {"type": "pause", "data": {}, "seq": 1, "actor": "alice", "time": STAMP},
        {"type": "cancel", "data": {}, "seq": 2, "actor": "alice", "time": STAMP},
    ]


def test_the_sequence_continues_from_the_old_intents_which_are_kept() -> None:
    earlier = {"type": "pause", "data": {}, "seq": 7, "actor": "alice", "time": "2026-01-01T00:00:00Z"}
    old = {PAUSE_ANNOTATION: "true", INTENTS_ANNOTATION: stamped(earlier)}
    new = {INTENTS_ANNOTATION: stamped(earlier)}

    value = intents_value(old, new, actor="bob")

    assert value is not None
    assert json.loads(value) == [
        earlier,
        {"type": "resume", "data": {}, "seq": 8, "actor": "bob", "time": STAMP},
    ]


def test_what_a_client_writes_into_the_intents_annotation_is_replaced_by_the_true_list() -> None:
    true = {"type": "pause", "data": {}, "seq": 1, "actor": "alice", "time": "2026-01-01T00:00:00Z"}
    forged = [
        {"type": "pause", "data": {}, "seq": 1, "actor": "the-ceo", "time": "2020-01-01T00:00:00Z"},
        {"type": "cancel", "data": {}, "seq": 99, "actor": "the-ceo", "time": "2020-01-01T00:00:00Z"},
    ]
    old = {PAUSE_ANNOTATION: "true", INTENTS_ANNOTATION: stamped(true)}
    new = {PAUSE_ANNOTATION: "true", INTENTS_ANNOTATION: json.dumps(forged)}

    value = intents_value(old, new, actor="mallory")

    assert value == stamped(true)


def test_a_forged_list_on_a_change_that_asks_for_something_gets_only_the_real_intent() -> None:
    forged = [{"type": "cancel", "data": {}, "seq": 5, "actor": "the-ceo", "time": STAMP}]
    new = {PAUSE_ANNOTATION: "true", INTENTS_ANNOTATION: json.dumps(forged)}

    value = intents_value({}, new, actor="mallory")

    assert value is not None
    assert json.loads(value) == [{"type": "pause", "data": {}, "seq": 1, "actor": "mallory", "time": STAMP}]


def test_a_forged_list_where_there_were_no_intents_is_removed() -> None:
    forged = [{"type": "pause", "data": {}, "seq": 1, "actor": "the-ceo", "time": STAMP}]

    assert intents_value({}, {INTENTS_ANNOTATION: json.dumps(forged)}) == ""


def test_a_run_created_with_an_intents_annotation_loses_it() -> None:
    forged = [{"type": "pause", "data": {}, "seq": 1, "actor": "the-ceo", "time": STAMP}]

    assert intents_value(None, {INTENTS_ANNOTATION: json.dumps(forged)}) == ""


def test_the_operators_own_changes_add_no_intent() -> None:
    earlier = {"type": "pause", "data": {}, "seq": 1, "actor": "alice", "time": STAMP}
    old = {PAUSE_ANNOTATION: "true", SIGNAL: "{}", INTENTS_ANNOTATION: stamped(earlier)}
    new = {INTENTS_ANNOTATION: stamped(earlier)}  # consumed the pause and the signal

    assert intents_value(old, new, actor=OPERATOR) is None


def test_the_operators_own_change_still_cannot_forge_the_list() -> None:
    earlier = {"type": "pause", "data": {}, "seq": 1, "actor": "alice", "time": STAMP}
    old = {INTENTS_ANNOTATION: stamped(earlier)}

    assert intents_value(old, {INTENTS_ANNOTATION: "[]"}, actor=OPERATOR) == stamped(earlier)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param({}, {}, id="nothing-at-all"),
        pytest.param({}, {"team": "payments"}, id="unrelated-annotation"),
        pytest.param({PAUSE_ANNOTATION: "true"}, {PAUSE_ANNOTATION: "true", "x": "y"}, id="pause-kept"),
    ],
)
def test_nothing_to_record_leaves_the_annotation_untouched(old: dict[str, str], new: dict[str, str]) -> None:
    assert intents_value(old, new) is None


def test_an_unchanged_list_sent_back_by_the_client_is_left_untouched() -> None:
    earlier = stamped({"type": "pause", "data": {}, "seq": 1, "actor": "alice", "time": STAMP})

    assert intents_value({INTENTS_ANNOTATION: earlier}, {INTENTS_ANNOTATION: earlier, "x": "y"}) is None


def test_a_run_created_with_retcon_annotations_records_no_intent() -> None:
    assert intents_value(None, {PAUSE_ANNOTATION: "true"}) is None


def test_only_the_last_intents_are_kept_and_the_sequence_still_grows() -> None:
    earlier = [
        {
            "type": "signal",
            "data": {"step": "approval", "data": {"n": n}},
            "seq": n,
            "actor": "a",
            "time": STAMP,
        }
        for n in range(1, MAX_INTENTS + 1)
    ]
    old = {INTENTS_ANNOTATION: stamped(*earlier)}

    value = intents_value(old, {**old, PAUSE_ANNOTATION: "true"}, actor="bob")

    assert value is not None
    kept = json.loads(value)
    assert len(kept) == MAX_INTENTS
    assert [item["seq"] for item in kept] == list(range(2, MAX_INTENTS + 2))
    assert kept[-1] == {"type": "pause", "data": {}, "seq": MAX_INTENTS + 1, "actor": "bob", "time": STAMP}


@pytest.mark.parametrize(
    "value", ["", "not json", '{"seq": 1}', '"text"', '[1, "two", {"seq": 3, "type": "pause"}]']
)
def test_read_intents_keeps_only_objects_from_a_list(value: str) -> None:
    intents = read_intents({INTENTS_ANNOTATION: value})

    assert intents == ([{"seq": 3, "type": "pause"}] if value.startswith("[") else [])


# --- validate_run_annotations: one-line refusals ----------------------------------------------------


def run_object(annotations: dict[str, str] | None = None, *, started: bool = True) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Paused"}
    if started:
        status["definition"] = {
            "steps": [
                {"id": "step_001", "name": "fetch", "type": "Standard"},
                {"id": "step_002", "name": "approval", "type": "Wait"},
                {"id": "step_003", "name": "ship", "type": "Standard"},
            ]
        }
        status["steps"] = [{"id": s["id"], "name": s["name"]} for s in status["definition"]["steps"]]
    return {"metadata": {"name": "order-1", "annotations": dict(annotations or {})}, "status": status}


STEPS = "step_001 (fetch), step_002 (approval), step_003 (ship)"


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        pytest.param(
            {PAUSE_ANNOTATION: "yes"},
            'retcon.dev/pause must be "true" to pause the run; remove it (retcon.dev/pause-) to resume',
            id="pause-yes",
        ),
        pytest.param(
            {PAUSE_ANNOTATION: "false"},
            'retcon.dev/pause must be "true" to pause the run; remove it (retcon.dev/pause-) to resume',
            id="pause-false",
        ),
        pytest.param(
            {CANCEL_ANNOTATION: "1"}, 'retcon.dev/cancel must be "true" to cancel the run', id="cancel-1"
        ),
        pytest.param(
            {RESUME_FROM_ANNOTATION: "packing"},
            f"run order-1 has no step 'packing' to resume from; its steps: {STEPS}",
            id="resume-from-unknown",
        ),
        pytest.param(
            {SIGNAL: "{approved: true}"},
            "signal.retcon.dev/approval: the signal's data is not JSON (Expecting property name enclosed"
            " in double quotes: line 1 column 2 (char 1)); give a JSON object",
            id="signal-not-json",
        ),
        pytest.param(
            {SIGNAL: "[true]"},
            "signal.retcon.dev/approval: the signal's data must be a JSON object, not list",
            id="signal-list",
        ),
        pytest.param(
            {SIGNAL: '"yes"'},
            "signal.retcon.dev/approval: the signal's data must be a JSON object, not str",
            id="signal-string",
        ),
        pytest.param(
            {f"{SIGNAL_PREFIX}review": "{}"},
            f"run order-1 has no step 'review' to signal; its steps: {STEPS}",
            id="signal-unknown-step",
        ),
        pytest.param(
            {f"{SIGNAL_PREFIX}ship": "{}"},
            "step ship of run order-1 is a Standard step; only Wait steps take a signal",
            id="signal-standard-step",
        ),
    ],
)
def test_a_wrong_annotation_is_refused_with_a_message_saying_what_to_do(
    annotations: dict[str, str], message: str
) -> None:
    assert validate_run_annotations(run_object(), run_object(annotations)) == message


def test_resume_from_a_step_of_a_run_not_started_lists_no_steps() -> None:
    new = run_object({RESUME_FROM_ANNOTATION: "fetch"}, started=False)

    assert validate_run_annotations(run_object(started=False), new) == (
        "run order-1 has no step 'fetch' to resume from; its steps: none yet"
    )


@pytest.mark.parametrize(
    "annotations",
    [
        pytest.param({PAUSE_ANNOTATION: "true"}, id="pause"),
        pytest.param({CANCEL_ANNOTATION: "true"}, id="cancel"),
        pytest.param({RESUME_FROM_ANNOTATION: "step_002"}, id="resume-from-id"),
        pytest.param({RESUME_FROM_ANNOTATION: "ship"}, id="resume-from-name"),
        pytest.param({SIGNAL: '{"approved": true}'}, id="signal"),
        pytest.param({SIGNAL: "{}"}, id="empty-signal"),
        pytest.param({"team": "payments", INTENTS_ANNOTATION: "anything"}, id="unrelated"),
        pytest.param({}, id="nothing"),
    ],
)
def test_a_valid_annotation_is_accepted(annotations: dict[str, str]) -> None:
    assert validate_run_annotations(run_object(), run_object(annotations)) is None


def test_a_signal_for_a_run_not_started_is_checked_only_for_its_json() -> None:
    new = run_object({f"{SIGNAL_PREFIX}anything": '{"ok": true}'}, started=False)

    assert validate_run_annotations(run_object(started=False), new) is None


@pytest.mark.parametrize(
    "annotations",
    [
        pytest.param({PAUSE_ANNOTATION: "yes"}, id="pause"),
        pytest.param({CANCEL_ANNOTATION: "1"}, id="cancel"),
        pytest.param({RESUME_FROM_ANNOTATION: "gone"}, id="resume-from"),
        pytest.param({SIGNAL: "[1]"}, id="signal"),
    ],
)
def test_a_wrong_annotation_already_there_does_not_block_other_changes(annotations: dict[str, str]) -> None:
    old = run_object(annotations)

    assert validate_run_annotations(old, run_object({**annotations, "team": "payments"})) is None


def test_removing_the_pause_is_accepted() -> None:
    old = run_object({PAUSE_ANNOTATION: "true"})

    assert validate_run_annotations(old, run_object({RESUME_FROM_ANNOTATION: "approval"})) is None


def test_step_names_maps_ids_and_names_to_names() -> None:
    assert step_names(run_object()) == {
        "step_001": "fetch",
        "fetch": "fetch",
        "step_002": "approval",
        "approval": "approval",
        "step_003": "ship",
        "ship": "ship",
    }
    assert step_names({}) == {}


# --- validate_injection: early, friendly refusals ---------------------------------------------------


def injection(step: str = "fetch", output: Any = None) -> dict[str, Any]:
    return {
        "runName": "order-1",
        "step": step,
        "output": {"amount": 5} if output is None else output,
        "reason": "fix",
    }


def run_in(phase: str) -> dict[str, Any]:
    run = run_object()
    run["status"]["phase"] = phase
    return run


@pytest.mark.parametrize(
    ("spec", "run", "message"),
    [
        pytest.param(
            injection(), None, "there is no WorkflowRun order-1 in namespace shop", id="unknown-run"
        ),
        pytest.param(
            injection(),
            run_object(started=False),
            "run order-1 has not started yet: there is no step output to replace",
            id="run-not-started",
        ),
        pytest.param(
            injection("packing"),
            run_object(),
            f"run order-1 has no step 'packing'; its steps: {STEPS}",
            id="unknown-step",
        ),
        pytest.param(
            injection(output=[1, 2]), run_object(), "spec.output must be a JSON object", id="output-list"
        ),
        pytest.param(
            injection(output="text"), run_object(), "spec.output must be a JSON object", id="output-string"
        ),
        pytest.param(
            {"runName": "order-1", "step": "fetch", "reason": "fix"},
            run_object(),
            "spec.output must be a JSON object",
            id="output-missing",
        ),
        pytest.param(
            injection(),
            run_in("Succeeded"),
            "run order-1 is Succeeded: only a Paused or Failed run can be injected into",
            id="run-succeeded",
        ),
        pytest.param(
            injection(),
            run_in("Cancelled"),
            "run order-1 is Cancelled: only a Paused or Failed run can be injected into",
            id="run-cancelled",
        ),
    ],
)
def test_an_injection_that_can_never_apply_is_refused_saying_why(
    spec: dict[str, Any], run: dict[str, Any] | None, message: str
) -> None:
    assert validate_injection(spec, run, "shop") == message


@pytest.mark.parametrize("step", ["step_001", "fetch", "step_003", "ship"])
@pytest.mark.parametrize("phase", ["Paused", "Failed", "Pausing", "Running"])
def test_an_injection_naming_a_step_by_id_or_name_is_accepted(step: str, phase: str) -> None:
    # A Running run may be about to pause: the operator decides when (and whether) it applies.
    assert validate_injection(injection(step), run_in(phase), "shop") is None
