"""Read-only views of JSON data: the run state, input and step outputs a function step sees.

A view is built once, deeply (nested objects and lists are views too), so a
step cannot change what it was given, and what it was given cannot change
under it. Objects allow ``state.amount`` as well as ``state["amount"]``.
"""

from __future__ import annotations

import keyword
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NoReturn, overload

_READ_ONLY_HINT = "return the new values from the step instead"
_LIST_MUTATORS = frozenset({"append", "extend", "insert", "pop", "remove", "clear", "sort", "reverse"})
_DICT_MUTATORS = frozenset({"update", "pop", "popitem", "setdefault", "clear"})
_MAX_KEYS_SHOWN = 20


def freeze(value: Any, path: str = "state") -> Any:
    """A read-only view of ``value``: objects become ``ReadOnlyState``, lists ``ReadOnlyList``."""
    if isinstance(value, ReadOnlyState | ReadOnlyList):
        return value
    if isinstance(value, Mapping):
        return ReadOnlyState(value, path)
    if isinstance(value, list | tuple):
        return ReadOnlyList(value, path)
    return value


def thaw(value: Any) -> Any:
    """Plain, mutable ``dict``/``list`` copies of a view (any other value is returned as is)."""
    if isinstance(value, Mapping):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, ReadOnlyList | list | tuple):
        return [thaw(item) for item in value]
    return value


class ReadOnlyState(Mapping[str, Any]):
    """A read-only JSON object with attribute access.

    ``state.amount`` and ``state["amount"]`` are the same value; nested objects,
    and objects inside lists, are read-only views too. A key that is also a
    mapping method (``keys``, ``items``, ``values``, ``get``) or not a Python
    identifier (``"fetch-data"``) is read with ``state["items"]``.
    ``to_dict()`` returns a plain, mutable deep copy.
    """

    __slots__ = ("_data", "_path")
    _data: dict[str, Any]
    _path: str

    def __init__(self, data: Mapping[str, Any] | None = None, path: str = "state") -> None:
        source = {} if data is None else data
        if not isinstance(source, Mapping):
            raise TypeError(f"{path} must be a JSON object, got {type(source).__name__}")
        frozen = {key: freeze(item, _child_path(path, key)) for key, item in source.items()}
        object.__setattr__(self, "_data", frozen)
        object.__setattr__(self, "_path", path)

    def __getitem__(self, key: str) -> Any:
        try:
            return self._data[key]
        except KeyError:
            raise KeyError(self._missing_message(key)) from None

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: never for methods or slots.
        if name.startswith("__") or name in ("_data", "_path"):
            raise AttributeError(name)
        data = self._data
        if name in data:
            return data[name]
        if name in _DICT_MUTATORS:
            raise AttributeError(f"{self._path} is read-only (no {name}()); {_READ_ONLY_HINT}")
        raise AttributeError(self._missing_message(name))

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        self._refuse()

    def __delattr__(self, name: str) -> NoReturn:
        self._refuse()

    def __setitem__(self, key: str, value: Any) -> NoReturn:
        self._refuse()

    def __delitem__(self, key: str) -> NoReturn:
        self._refuse()

    def __dir__(self) -> list[str]:
        names = set(super().__dir__())
        names.update(key for key in self._data if key.isidentifier() and not keyword.iskeyword(key))
        return sorted(names)

    def __repr__(self) -> str:
        return f"ReadOnlyState({self.to_dict()!r})"

    def __copy__(self) -> ReadOnlyState:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> ReadOnlyState:
        return self

    def __reduce__(self) -> tuple[type[ReadOnlyState], tuple[dict[str, Any], str]]:
        return (ReadOnlyState, (self.to_dict(), self._path))

    def to_dict(self) -> dict[str, Any]:
        """A plain, mutable deep copy."""
        result: dict[str, Any] = thaw(self)
        return result

    def _refuse(self) -> NoReturn:
        raise TypeError(f"{self._path} is read-only; {_READ_ONLY_HINT}")

    def _missing_message(self, key: object) -> str:
        keys = sorted(str(name) for name in self._data)
        shown = ", ".join(keys[:_MAX_KEYS_SHOWN])
        if len(keys) > _MAX_KEYS_SHOWN:
            shown += f", … ({len(keys) - _MAX_KEYS_SHOWN} more)"
        available = f"available keys: {shown}" if keys else "it is empty"
        return f"{self._path} has no key {key!r}; {available}"


class ReadOnlyList(Sequence[Any]):
    """A read-only JSON list whose objects and lists are read-only views too.

    Compares equal to a ``list`` or ``tuple`` with the same items.
    ``to_list()`` returns a plain, mutable deep copy.
    """

    __slots__ = ("_items", "_path")
    _items: tuple[Any, ...]
    _path: str

    def __init__(self, items: Sequence[Any] = (), path: str = "state") -> None:
        frozen = tuple(freeze(item, f"{path}[{index}]") for index, item in enumerate(items))
        object.__setattr__(self, "_items", frozen)
        object.__setattr__(self, "_path", path)

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> ReadOnlyList: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return ReadOnlyList(self._items[index], self._path)
        return self._items[index]

    def __getattr__(self, name: str) -> Any:
        if name in _LIST_MUTATORS:
            raise AttributeError(f"{self._path} is read-only (no {name}()); {_READ_ONLY_HINT}")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ReadOnlyList):
            return self._items == other._items
        if isinstance(other, list | tuple):
            return len(self._items) == len(other) and all(
                mine == theirs for mine, theirs in zip(self._items, other, strict=True)
            )
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # Equal to lists, which are unhashable.

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        self._refuse()

    def __delattr__(self, name: str) -> NoReturn:
        self._refuse()

    def __setitem__(self, index: int | slice, value: Any) -> NoReturn:
        self._refuse()

    def __delitem__(self, index: int | slice) -> NoReturn:
        self._refuse()

    def __repr__(self) -> str:
        return f"ReadOnlyList({self.to_list()!r})"

    def __copy__(self) -> ReadOnlyList:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> ReadOnlyList:
        return self

    def __reduce__(self) -> tuple[type[ReadOnlyList], tuple[list[Any], str]]:
        return (ReadOnlyList, (self.to_list(), self._path))

    def to_list(self) -> list[Any]:
        """A plain, mutable deep copy."""
        return [thaw(item) for item in self._items]

    def _refuse(self) -> NoReturn:
        raise TypeError(f"{self._path} is read-only; {_READ_ONLY_HINT}")


def _child_path(path: str, key: object) -> str:
    if isinstance(key, str) and key.isidentifier() and not keyword.iskeyword(key):
        return f"{path}.{key}"
    return f"{path}[{key!r}]"
