"""XDR (RFC 4506): the compound types, built from other types.

=========================  ==========================================================
XDR                        Python
=========================  ==========================================================
type name[n]               :class:`FixedArray` -- ``list`` of ``n`` values
type name<m>               :class:`Array` -- ``list`` (at most ``m``; the reader's
                           default when unbounded)
type *name                 :class:`Optional` -- the value or ``None``
struct                     :class:`Struct` -- an instance of the struct's dataclass
                           (``Struct.cls``); encoding also takes any object with the
                           fields as attributes, or a mapping with them as keys
union                      :class:`Union` -- a :class:`UnionValue` (discriminant,
                           value); encoding also takes a 2-tuple
=========================  ==========================================================

An array's claimed element count is checked against its maximum and against the bytes
left (each element takes at least its type's ``min_size``) before any list is built.
Errors carry the field path: each compound type adds its part (``.name``, ``[3]``) to
the error while it unwinds, so the happy path pays nothing for the paths.

Socket-free: must not import socket, selectors, threading or os.
"""

from __future__ import annotations

import dataclasses
import keyword
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, NamedTuple

from .xdr import (
    UINT32_MAX,
    Bool,
    Enum,
    Int,
    Reader,
    UnsignedInt,
    Writer,
    XDRDecodeError,
    XDREncodeError,
    XDRError,
    XDRType,
)

__all__ = [
    "Array",
    "FixedArray",
    "Optional",
    "Ref",
    "Struct",
    "Union",
    "UnionValue",
]


def _items(value: Any, noun: str) -> Sequence[Any]:
    if isinstance(value, (str, bytes, bytearray, Mapping)) or not isinstance(
            value, (list, tuple)):
        raise XDREncodeError(f"{noun} expects a list, not {type(value).__name__}")
    return value


def _pack_items(element: XDRType, items: Sequence[Any], w: Writer) -> None:
    for i, item in enumerate(items):
        try:
            element.pack(item, w)
        except XDRError as exc:
            exc.push(f"[{i}]")
            raise


def _unpack_items(element: XDRType, count: int, r: Reader) -> list[Any]:
    values = []
    for i in range(count):
        try:
            values.append(element.unpack(r))
        except XDRError as exc:
            exc.push(f"[{i}]")
            raise
    return values


class FixedArray(XDRType):
    """``type name[n]``: exactly ``n`` elements, no length on the wire."""

    def __init__(self, element: XDRType, size: int) -> None:
        if not 0 <= size <= UINT32_MAX:
            raise ValueError(f"fixed array size must be in 0..{UINT32_MAX}, not {size}")
        self.element = element
        self.size = size

    @property
    def min_size(self) -> int:  # a property: the element may be a Ref resolved later
        return self.size * self.element.min_size

    def pack(self, value: Any, w: Writer) -> None:
        items = _items(value, f"array[{self.size}]")
        if len(items) != self.size:
            raise XDREncodeError(f"array[{self.size}] needs {self.size} elements, "
                                 f"not {len(items)}")
        _pack_items(self.element, items, w)

    def unpack(self, r: Reader) -> list[Any]:
        if self.size * self.element.min_size > r.remaining:
            raise XDRDecodeError(f"truncated: array[{self.size}] needs at least "
                                 f"{self.size * self.element.min_size} bytes, "
                                 f"{r.remaining} left")
        return _unpack_items(self.element, self.size, r)


class Array(XDRType):
    """``type name<m>``: an element count, then the elements.

    Args:
        element: the elements' type.
        max_length: the declared maximum count, or None for the reader's default.
    """

    def __init__(self, element: XDRType, max_length: int | None = None) -> None:
        if max_length is not None and not 0 <= max_length <= UINT32_MAX:
            raise ValueError(f"maximum length must be in 0..{UINT32_MAX}, not {max_length}")
        self.element = element
        self.max_length = max_length

    def pack(self, value: Any, w: Writer) -> None:
        items = _items(value, "array")
        w.limit(self.max_length, len(items), "array")
        UnsignedInt().pack(len(items), w)
        _pack_items(self.element, items, w)

    def unpack(self, r: Reader) -> list[Any]:
        count = r.length(self.max_length, "array", self.element.min_size)
        return _unpack_items(self.element, count, r)


class Optional(XDRType):
    """``type *name``: a bool, then the value when it is TRUE; ``None`` for FALSE."""

    def __init__(self, element: XDRType) -> None:
        self.element = element

    def pack(self, value: Any, w: Writer) -> None:
        if value is None:
            _BOOL.pack(False, w)
            return
        _BOOL.pack(True, w)
        w.enter()
        self.element.pack(value, w)
        w.depth -= 1

    def unpack(self, r: Reader) -> Any:
        if not _BOOL.unpack(r):
            return None
        r.enter()
        value = self.element.unpack(r)
        r.depth -= 1
        return value


_BOOL: Final = Bool()


def _resolve(xdr_type: XDRType) -> XDRType | None:
    while isinstance(xdr_type, Ref):
        if xdr_type.target is None:
            return None
        xdr_type = xdr_type.target
    return xdr_type


def _node_path(node: Struct, index: int) -> str:
    return f".{node.fields[-1][0]}*{index}" if index else ""


def _pack_list(node: Struct, value: Any, w: Writer) -> None:
    count = len(node.fields) - 1
    name, attr, _ = node.fields[-1]
    index = 0
    while True:
        if index >= w.default_max:
            raise XDREncodeError(f"list longer than {w.default_max}")
        try:
            node.pack_fields(value, w, count)
            value = node.field(value, name, attr)
        except XDRError as exc:
            if index:
                exc.push(_node_path(node, index))
            raise
        _BOOL.pack(value is not None, w)
        if value is None:
            return
        index += 1


def _unpack_list(node: Struct, r: Reader) -> Any:
    count = len(node.fields) - 1
    rows: list[list[Any]] = []
    more = True
    while more:
        index = len(rows)
        if index >= r.default_max:
            raise XDRDecodeError(f"list longer than {r.default_max}")
        try:
            rows.append(node.unpack_fields(r, count))
            try:
                more = _BOOL.unpack(r)
            except XDRError as exc:
                exc.push(f".{node.fields[-1][0]}")
                raise
        except XDRError as exc:
            if index:
                exc.push(_node_path(node, index))
            raise
    value = None
    for row in reversed(rows):
        value = node.cls(*row, value)
    return value


def _field_name(name: str) -> str:
    """A Python attribute name for an XDR field (``class`` becomes ``class_``)."""
    return name + "_" if keyword.iskeyword(name) else name


class Struct(XDRType):
    """``struct { ... }``: the fields in order.

    A linked list's node (a struct whose last field points to the same struct, as
    RFC 4506 section 4.19 writes lists) is read and written node after node, not by
    recursion: the list's length is bounded like an array's (``default_max``), not by
    the nesting depth, and an error in the fourth node reads ``value.next*3.name``.

    Args:
        name: the struct's name (its dataclass's name).
        fields: (name, type) pairs in declaration order; may be given later with
            :meth:`define` (a struct that refers to itself through ``*``).

    Attributes:
        cls: the dataclass decoded values are instances of; construct values with it,
            ``Struct.cls(field=...)``, or hand :meth:`pack` any object or mapping.
    """

    def __init__(self, name: str, fields: Iterable[tuple[str, XDRType]] | None = None
                 ) -> None:
        self.name = name
        self.fields: list[tuple[str, str, XDRType]] = []
        self.cls: type = dataclasses.make_dataclass(name, [])
        if fields is not None:
            self.define(fields)

    def define(self, fields: Iterable[tuple[str, XDRType]]) -> None:
        """Set the fields (once)."""
        pairs = list(fields)
        names = [name for name, _ in pairs]
        if len(set(names)) != len(names):
            raise ValueError(f"struct {self.name} repeats a field name: {names}")
        self.fields = [(name, _field_name(name), xdr_type) for name, xdr_type in pairs]
        self.cls = dataclasses.make_dataclass(
            self.name if self.name.isidentifier() else "struct",
            [(attr, Any) for _, attr, _ in self.fields])

    @property
    def min_size(self) -> int:
        return sum(xdr_type.min_size for _, _, xdr_type in self.fields)

    def field(self, value: Any, name: str, attr: str) -> Any:
        """The field ``name`` of ``value`` (a mapping's key, else an attribute)."""
        try:
            if isinstance(value, Mapping):
                return value[name] if name in value else value[attr]
            return getattr(value, attr)
        except (KeyError, AttributeError):
            raise XDREncodeError(f"struct {self.name} needs the field {name!r}; "
                                 f"{type(value).__name__} lacks it") from None

    @property
    def is_list(self) -> bool:
        """True for a linked list's node: the last field points to this struct."""
        if not self.fields:
            return False
        last = _resolve(self.fields[-1][2])
        return isinstance(last, Optional) and _resolve(last.element) is self

    def pack(self, value: Any, w: Writer) -> None:
        w.enter()
        if self.is_list:
            _pack_list(self, value, w)
        else:
            self.pack_fields(value, w, len(self.fields))
        w.depth -= 1

    def pack_fields(self, value: Any, w: Writer, count: int) -> None:
        """Write the first ``count`` fields of ``value``."""
        for name, attr, xdr_type in self.fields[:count]:
            field = self.field(value, name, attr)
            try:
                xdr_type.pack(field, w)
            except XDRError as exc:
                exc.push(f".{name}")
                raise

    def unpack(self, r: Reader) -> Any:
        r.enter()
        if self.is_list:
            value = _unpack_list(self, r)
        else:
            value = self.cls(*self.unpack_fields(r, len(self.fields)))
        r.depth -= 1
        return value

    def unpack_fields(self, r: Reader, count: int) -> list[Any]:
        """Read the first ``count`` fields."""
        values = []
        for name, _, xdr_type in self.fields[:count]:
            try:
                values.append(xdr_type.unpack(r))
            except XDRError as exc:
                exc.push(f".{name}")
                raise
        return values


class UnionValue(NamedTuple):
    """A union's value: which arm (the discriminant) and that arm's value."""

    discriminant: int
    value: Any


Arm = tuple[str | None, XDRType]
"""A union arm: its field name (None for ``void``) and its type."""


class Union(XDRType):
    """``union switch (discriminant) { case ...: ...; default: ...; }``.

    Args:
        name: the union's name (used in errors).
        discriminant: an :class:`Int`, :class:`UnsignedInt`, :class:`Bool` or
            :class:`Enum`.
        arms: discriminant value -> arm.
        default: the ``default:`` arm, or None (then other values are errors).
    """

    def __init__(self, name: str, discriminant: XDRType, arms: Mapping[int, Arm],
                 default: Arm | None = None) -> None:
        if not isinstance(discriminant, (Int, UnsignedInt, Bool, Enum)):
            raise ValueError(f"union {name}: the discriminant must be an int, unsigned "
                             f"int, bool or enum, not {type(discriminant).__name__}")
        self.name = name
        self.discriminant = discriminant
        self.arms = dict(arms)
        self.default = default

    def _arm(self, tag: int, error: type[XDRError]) -> Arm:
        arm = self.arms.get(tag, self.default)
        if arm is None:
            raise error(f"{tag} selects no arm of union {self.name}")
        return arm

    def pack(self, value: Any, w: Writer) -> None:
        try:
            tag, arm_value = value
        except (TypeError, ValueError):
            raise XDREncodeError(f"union {self.name} expects (discriminant, value), "
                                 f"not {type(value).__name__}") from None
        try:
            self.discriminant.pack(tag, w)
        except XDRError as exc:
            exc.push(".discriminant")
            raise
        name, xdr_type = self._arm(int(tag), XDREncodeError)
        w.enter()
        try:
            xdr_type.pack(arm_value, w)
        except XDRError as exc:
            exc.push(f".{name or 'void'}")
            raise
        w.depth -= 1

    def unpack(self, r: Reader) -> UnionValue:
        try:
            tag = self.discriminant.unpack(r)
        except XDRError as exc:
            exc.push(".discriminant")
            raise
        name, xdr_type = self._arm(tag, XDRDecodeError)
        r.enter()
        try:
            value = xdr_type.unpack(r)
        except XDRError as exc:
            exc.push(f".{name or 'void'}")
            raise
        r.depth -= 1
        return UnionValue(tag, value)


class Ref(XDRType):
    """A type known by name before it is defined (``.x`` files refer ahead).

    :attr:`target` is set once the definition is known; until then using it raises.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.target: XDRType | None = None
        self._measuring = False

    def _resolved(self) -> XDRType:
        if self.target is None:
            raise XDREncodeError(f"type {self.name} is not defined")
        return self.target

    @property
    def min_size(self) -> int:
        if self._measuring:  # a type that contains itself: count it once
            return 0
        self._measuring = True
        try:
            return self._resolved().min_size
        finally:
            self._measuring = False

    def pack(self, value: Any, w: Writer) -> None:
        self._resolved().pack(value, w)

    def unpack(self, r: Reader) -> Any:
        return self._resolved().unpack(r)
