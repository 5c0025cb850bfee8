"""The read-only views a function step receives: state, nested objects and lists."""

from __future__ import annotations

import copy
import json
import keyword
import pickle
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retcon_runner import ReadOnlyList, ReadOnlyState
from retcon_runner._output import check_output
from retcon_runner._state import freeze, thaw

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
identifier_keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
any_keys = st.text(max_size=8) | identifier_keys
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_keys, children, max_size=4),
    max_leaves=25,
)
json_objects = st.dictionaries(any_keys, json_values, max_size=6)


def _attribute_names(value: Any) -> list[str]:
    reserved = set(dir(ReadOnlyState))
    return [
        key
        for key in value
        if key.isidentifier()
        and not keyword.iskeyword(key)
        and not key.startswith("__")
        and key not in reserved
    ]


def _assert_access_agrees(view: Any) -> None:
    if isinstance(view, ReadOnlyState):
        for key in _attribute_names(view):
            assert getattr(view, key) is view[key]
        for key in view:
            _assert_access_agrees(view[key])
    elif isinstance(view, ReadOnlyList):
        for item in view:
            _assert_access_agrees(item)


@given(json_objects)
def test_any_json_object_round_trips_through_the_view(document: dict[str, Any]) -> None:
    view = ReadOnlyState(document)
    assert view == document
    assert view.to_dict() == document
    assert thaw(view) == document
    assert json.loads(json.dumps(view.to_dict())) == json.loads(json.dumps(document))


@given(json_objects)
def test_a_view_returned_as_output_is_the_same_json(document: dict[str, Any]) -> None:
    outcome = check_output(ReadOnlyState(document))
    compact = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    assert outcome.succeeded
    assert outcome.output == json.loads(compact)
    assert outcome.output_bytes == len(compact)


@given(st.dictionaries(identifier_keys, json_values, max_size=8))
def test_attribute_and_item_access_agree_at_every_depth(document: dict[str, Any]) -> None:
    _assert_access_agrees(ReadOnlyState(document))


@given(json_objects)
def test_the_view_does_not_change_when_the_source_does(document: dict[str, Any]) -> None:
    expected = copy.deepcopy(document)
    view = ReadOnlyState(document)
    document.clear()
    assert view == expected


def test_nested_objects_and_lists_of_objects_have_attribute_access() -> None:
    state = ReadOnlyState({"order": {"id": 7, "lines": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 1}]}})
    assert state.order.id == 7
    assert state["order"]["lines"][0].sku == "a"
    assert [line.qty for line in state.order.lines] == [2, 1]
    assert isinstance(state.order, ReadOnlyState)
    assert isinstance(state.order.lines, ReadOnlyList)
    assert state.order.lines == [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 1}]
    assert state.order.lines[:1] == ({"sku": "a", "qty": 2},)


def test_a_missing_attribute_names_the_key_and_the_available_keys() -> None:
    state = ReadOnlyState({"amount": 5, "currency": "EUR"})
    with pytest.raises(AttributeError, match=r"state has no key 'amout'; available keys: amount, currency"):
        _ = state.amout
    assert not hasattr(state, "amout")


def test_a_missing_nested_key_names_its_path() -> None:
    state = ReadOnlyState({"order": {"lines": [{"sku": "a"}]}})
    with pytest.raises(
        AttributeError, match=r"state\.order\.lines\[0\] has no key 'qty'; available keys: sku"
    ):
        _ = state.order.lines[0].qty
    with pytest.raises(KeyError, match=r"state\.order has no key 'id'"):
        _ = state.order["id"]


def test_an_empty_state_says_it_is_empty() -> None:
    with pytest.raises(AttributeError, match="state has no key 'x'; it is empty"):
        _ = ReadOnlyState({}).x


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda s: setattr(s, "amount", 1), id="set attribute"),
        pytest.param(lambda s: setattr(s, "new", 1), id="add attribute"),
        pytest.param(lambda s: delattr(s, "amount"), id="delete attribute"),
        pytest.param(lambda s: s.__setitem__("amount", 1), id="set item"),
        pytest.param(lambda s: s.__delitem__("amount"), id="delete item"),
        pytest.param(lambda s: setattr(s.order, "id", 1), id="nested object"),
        pytest.param(lambda s: s.order.tags.__setitem__(0, "x"), id="list item"),
    ],
)
def test_assignment_is_refused_with_a_hint(mutate: Any) -> None:
    state = ReadOnlyState({"amount": 5, "order": {"id": 1, "tags": ["a"]}})
    with pytest.raises(TypeError, match="is read-only; return the new values from the step instead"):
        mutate(state)
    assert state.to_dict() == {"amount": 5, "order": {"id": 1, "tags": ["a"]}}


@pytest.mark.parametrize("method", ["update", "pop", "setdefault", "clear", "popitem"])
def test_dict_mutators_are_missing_with_a_hint(method: str) -> None:
    with pytest.raises(AttributeError, match=rf"state is read-only \(no {method}\(\)\)"):
        getattr(ReadOnlyState({"a": 1}), method)


@pytest.mark.parametrize(
    "method", ["append", "extend", "insert", "pop", "remove", "clear", "sort", "reverse"]
)
def test_list_mutators_are_missing_with_a_hint(method: str) -> None:
    tags = ReadOnlyState({"tags": ["a"]}).tags
    with pytest.raises(AttributeError, match=rf"state\.tags is read-only \(no {method}\(\)\)"):
        getattr(tags, method)


def test_keys_that_are_mapping_methods_or_not_identifiers_are_read_by_item() -> None:
    state = ReadOnlyState({"items": [1], "fetch-data": {"ok": True}, "class": 3})
    assert callable(state.items)
    assert state["items"] == [1]
    assert state["fetch-data"].ok is True
    assert state["class"] == 3
    assert "fetch-data" not in dir(state)
    assert "class" not in dir(state)


def test_identifier_keys_are_listed_for_completion() -> None:
    assert {"amount", "currency"} <= set(dir(ReadOnlyState({"amount": 1, "currency": "EUR"})))


def test_to_dict_is_a_plain_mutable_copy() -> None:
    state = ReadOnlyState({"order": {"lines": [{"qty": 1}]}})
    plain = state.to_dict()
    assert type(plain["order"]) is dict
    assert type(plain["order"]["lines"]) is list
    plain["order"]["lines"][0]["qty"] = 9
    assert state.order.lines[0].qty == 1
    assert state.order.lines.to_list() == [{"qty": 1}]


def test_views_copy_and_pickle_as_themselves() -> None:
    state = ReadOnlyState({"a": [1, {"b": 2}]}, "input")
    assert copy.copy(state) is state
    assert copy.deepcopy(state) is state
    restored = pickle.loads(pickle.dumps(state))  # noqa: S301  # Our own bytes, made a line above.
    assert restored == state
    assert isinstance(restored.a, ReadOnlyList)
    with pytest.raises(AttributeError, match="input has no key"):
        _ = restored.missing


def test_a_view_is_unpacked_and_compared_like_a_mapping() -> None:
    state = ReadOnlyState({"a": 1, "b": [1, 2]})
    assert {**state, "c": 3} == {"a": 1, "b": [1, 2], "c": 3}
    assert dict(state) == {"a": 1, "b": [1, 2]}
    assert state != {"a": 1}
    assert state.b != [2, 1]
    assert state.b != "12"
    assert repr(state) == "ReadOnlyState({'a': 1, 'b': [1, 2]})"
    assert repr(state.b) == "ReadOnlyList([1, 2])"


def test_only_objects_make_a_state() -> None:
    with pytest.raises(TypeError, match="state must be a JSON object, got list"):
        ReadOnlyState([1, 2])  # type: ignore[arg-type]


def test_freeze_leaves_scalars_and_views_alone() -> None:
    state = ReadOnlyState({"a": 1})
    assert freeze(state) is state
    assert freeze(3) == 3
    assert freeze("text") == "text"
    assert freeze((1, 2)) == [1, 2]
