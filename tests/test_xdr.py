"""handlers.rpc.xdr and xdrcompound: XDR (RFC 4506) encoding, decoding and its limits."""

from __future__ import annotations

import math
import struct
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.rpc.xdr import (
    Bool,
    Double,
    Enum,
    FixedOpaque,
    Float,
    Hyper,
    Int,
    Opaque,
    String,
    UnsignedHyper,
    UnsignedInt,
    Void,
    XDRDecodeError,
    XDREncodeError,
    XDRType,
    decode,
    encode,
)
from handlers.rpc.xdrcompound import (
    Array,
    FixedArray,
    Optional,
    Ref,
    Struct,
    Union,
    UnionValue,
)

COLOR = Enum("color", {"RED": 2, "YELLOW": 3, "BLUE": 5})
ITEM = Struct("item", [("name", String(8)), ("count", UnsignedInt())])
ARGS = Struct("args", [("items", Array(ITEM, 10))])
NUMBER = Union("number", Int(), {1: ("small", Int()), 2: ("big", Hyper()), 3: (None, Void())},
               default=("text", String(20)))
NODE = Struct("node")
NODE.define([("value", Int()), ("next", Optional(NODE))])


def roundtrip(xdr_type: XDRType, value: Any) -> Any:
    data = encode(xdr_type, value)
    assert len(data) % 4 == 0
    back = decode(xdr_type, data)
    assert encode(xdr_type, back) == data
    return back


# -- known vectors -----------------------------------------------------------------------


@pytest.mark.parametrize(("xdr_type", "value", "wire"), [
    (Int(), -1, "ffffffff"),
    (Int(), 2**31 - 1, "7fffffff"),
    (UnsignedInt(), 2**32 - 1, "ffffffff"),
    (Hyper(), -2, "fffffffffffffffe"),
    (UnsignedHyper(), 2**64 - 1, "ffffffffffffffff"),
    (Bool(), True, "00000001"),
    (Bool(), False, "00000000"),
    (COLOR, 5, "00000005"),
    (Float(), 1.0, "3f800000"),
    (Double(), -2.0, "c000000000000000"),
    (FixedOpaque(5), b"abcde", "6162636465000000"),
    (FixedOpaque(0), b"", ""),
    (Opaque(), b"ab", "000000026162" "0000"),
    (Opaque(8), b"abcd", "0000000461626364"),
    (String(), "sill", "0000000473696c6c"),
    (String(), "", "00000000"),
    (Void(), None, ""),
    (FixedArray(Int(), 2), [1, -1], "00000001ffffffff"),
    (Array(UnsignedInt()), [7], "0000000100000007"),
    (Optional(Int()), None, "00000000"),
    (Optional(Int()), 9, "0000000100000009"),
    (NUMBER, UnionValue(3, None), "00000003"),
    (NUMBER, UnionValue(1, 4), "0000000100000004"),
])
def test_known_encodings(xdr_type: XDRType, value: Any, wire: str) -> None:
    assert encode(xdr_type, value).hex() == wire
    assert decode(xdr_type, bytes.fromhex(wire)) == value


# RFC 4506 section 7: the "file" example and its 48 bytes on the wire, in the RFC's
# words: "sillyprog", an EXEC file interpreted by "lisp", owned by "john", data "(quit)".
FILEKIND = Enum("filekind", {"TEXT": 0, "DATA": 1, "EXEC": 2})
FILETYPE = Union("filetype", FILEKIND, {0: (None, Void()), 1: ("creator", String(255)),
                                        2: ("interpretor", String(255))})
FILE = Struct("file", [("filename", String(255)), ("type", FILETYPE),
                       ("owner", String(32)), ("data", Opaque(65535))])
RFC_FILE_WIRE = bytes.fromhex(
    "00000009" "73696c6c" "7970726f" "67000000"
    "00000002" "00000004" "6c697370"
    "00000004" "6a6f686e"
    "00000006" "28717569" "74290000")


def test_rfc4506_file_example() -> None:
    value = FILE.cls(filename="sillyprog", type=UnionValue(2, "lisp"), owner="john",
                     data=b"(quit)")
    assert encode(FILE, value) == RFC_FILE_WIRE
    assert decode(FILE, RFC_FILE_WIRE) == value
    assert decode(FILE, RFC_FILE_WIRE).type.discriminant is FILEKIND.values.EXEC


def test_structs_encode_from_mappings_and_objects() -> None:
    as_dict = {"filename": "sillyprog", "type": (2, "lisp"), "owner": "john",
               "data": b"(quit)"}
    assert encode(FILE, as_dict) == RFC_FILE_WIRE

    class Plain:
        filename = "sillyprog"
        type = (2, "lisp")
        owner = "john"
        data = b"(quit)"

    assert encode(FILE, Plain()) == RFC_FILE_WIRE


# -- round trips -------------------------------------------------------------------------

int32 = st.integers(-2**31, 2**31 - 1)
uint32 = st.integers(0, 2**32 - 1)
text = st.text(max_size=8).filter(lambda s: len(s.encode("utf-8", "surrogateescape")) <= 8)


@settings(max_examples=200, deadline=None)
@given(int32, uint32, st.integers(-2**63, 2**63 - 1), st.integers(0, 2**64 - 1),
       st.booleans(), st.sampled_from([2, 3, 5]))
def test_integers_roundtrip(i: int, u: int, h: int, uh: int, b: bool, e: int) -> None:
    assert roundtrip(Int(), i) == i
    assert roundtrip(UnsignedInt(), u) == u
    assert roundtrip(Hyper(), h) == h
    assert roundtrip(UnsignedHyper(), uh) == uh
    assert roundtrip(Bool(), b) is b
    assert roundtrip(COLOR, e) == e


@settings(max_examples=200, deadline=None)
@given(st.floats(width=32), st.floats())
def test_floats_roundtrip(f: float, d: float) -> None:
    for xdr_type, value, fmt in ((Float(), f, ">f"), (Double(), d, ">d")):
        back = roundtrip(xdr_type, value)
        assert struct.pack(fmt, back) == struct.pack(fmt, value)  # NaNs and -0.0 too
        assert back == value or (math.isnan(back) and math.isnan(value))


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=7, max_size=7), st.binary(max_size=40),
       st.binary(max_size=300).map(lambda b: b.decode("utf-8", "surrogateescape")))
def test_opaque_and_strings_roundtrip(fixed: bytes, var: bytes, s: str) -> None:
    assert roundtrip(FixedOpaque(7), fixed) == fixed
    assert roundtrip(Opaque(40), var) == var
    assert roundtrip(String(), s) == s


@settings(max_examples=200, deadline=None)
@given(st.lists(int32, min_size=3, max_size=3), st.lists(uint32, max_size=10),
       st.one_of(st.none(), int32))
def test_arrays_and_optional_roundtrip(fixed: list[int], var: list[int], opt: int | None
                                       ) -> None:
    assert roundtrip(FixedArray(Int(), 3), fixed) == fixed
    assert roundtrip(Array(UnsignedInt(), 10), var) == var
    assert roundtrip(Optional(Int()), opt) == opt


items = st.lists(st.builds(ITEM.cls, name=text, count=uint32), max_size=10)
numbers = st.one_of(
    st.builds(UnionValue, st.just(1), int32),
    st.builds(UnionValue, st.just(2), st.integers(-2**63, 2**63 - 1)),
    st.builds(UnionValue, st.just(3), st.none()),
    st.builds(UnionValue, int32.filter(lambda n: n not in (1, 2, 3)),
              st.text(max_size=5)),
)


@settings(max_examples=200, deadline=None)
@given(items, numbers, st.lists(int32, max_size=20))
def test_structs_unions_and_lists_roundtrip(its: list[Any], number: UnionValue,
                                            chain: list[int]) -> None:
    assert roundtrip(ARGS, ARGS.cls(items=its)) == ARGS.cls(items=its)
    assert roundtrip(NUMBER, number) == number
    linked = None
    for value in reversed(chain):
        linked = NODE.cls(value=value, next=linked)
    assert roundtrip(Optional(NODE), linked) == linked


# -- limits and errors -------------------------------------------------------------------


def test_error_names_the_field_path_when_encoding() -> None:
    items = [{"name": "ok", "count": 1}] * 3 + [{"name": "x" * 9, "count": 1}]
    with pytest.raises(XDREncodeError) as info:
        encode(ARGS, {"items": items}, "args")
    assert str(info.value) == "args.items[3].name: string longer than 8 (9)"
    assert info.value.path == "args.items[3].name"


def test_error_names_the_field_path_when_decoding() -> None:
    good = encode(ARGS, {"items": [{"name": "ab", "count": 1}] * 5})
    bad = bytearray(good)
    bad[4 + 3 * 12 : 4 + 3 * 12 + 4] = (100).to_bytes(4, "big")  # items[3].name's length
    with pytest.raises(XDRDecodeError) as info:
        decode(ARGS, bytes(bad), "args")
    assert str(info.value) == "args.items[3].name: string longer than 8 (claims 100)"


@pytest.mark.parametrize("xdr_type", [Opaque(), String(), Array(Int()), Array(Opaque())])
def test_a_huge_claimed_length_allocates_nothing(xdr_type: XDRType) -> None:
    data = b"\xff\xff\xff\xff" + b"\0" * 64
    tracemalloc.start()
    try:
        with pytest.raises(XDRDecodeError, match="longer than 1048576 "):
            decode(xdr_type, data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_a_claim_within_the_maximum_but_past_the_input_allocates_nothing() -> None:
    data = (1_000_000).to_bytes(4, "big") + b"\0" * 8
    tracemalloc.start()
    try:
        with pytest.raises(XDRDecodeError, match="truncated: array claims 1000000"):
            decode(Array(Hyper()), data, default_max=2_000_000)
        with pytest.raises(XDRDecodeError, match="truncated"):
            decode(Opaque(), data, default_max=2_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_the_default_maximum_is_configurable() -> None:
    data = encode(Opaque(), b"12345")
    with pytest.raises(XDRDecodeError, match="opaque longer than 4"):
        decode(Opaque(), data, default_max=4)
    assert decode(Opaque(), data, default_max=5) == b"12345"
    with pytest.raises(XDREncodeError, match="array longer than 2"):
        encode(Array(Int()), [1, 2, 3], default_max=2)


@pytest.mark.parametrize(("xdr_type", "wire", "message"), [
    (Int(), "0000", "value: truncated: int needs 4 bytes at offset 0, 2 left"),
    (Hyper(), "00000000", "truncated: hyper needs 8 bytes"),
    (Double(), "", "truncated: double needs 8 bytes"),
    (String(), "00000005616263", "truncated: string claims 5 bytes, 3 bytes left"),
    (Opaque(), "000000016100", "truncated: padding needs 3 bytes"),
    (Opaque(), "0000000161000100", "non-zero padding at offset 5"),
    (FixedOpaque(3), "61626301", "non-zero padding at offset 3"),
    (Bool(), "00000002", "bool must be 0 or 1, not 2"),
    (COLOR, "00000004", "4 is not a value of enum color"),
    (Optional(Int()), "00000007", "bool must be 0 or 1, not 7"),
    (NUMBER, "00000001", "value.small: truncated: int needs 4 bytes"),
    (Union("u", Int(), {1: ("a", Int())}), "00000002", "2 selects no arm of union u"),
    (FixedArray(Hyper(), 4), "0000000000000001", "truncated: array[4] needs at least 32"),
    (Int(), "0000000100", "1 bytes left over after the value"),
])
def test_bad_input_is_a_clear_error(xdr_type: XDRType, wire: str, message: str) -> None:
    with pytest.raises(XDRDecodeError, match=message.replace("[", r"\[")):
        decode(xdr_type, bytes.fromhex(wire))


@pytest.mark.parametrize(("xdr_type", "value", "message"), [
    (Int(), 2**31, "out of range for int"),
    (Int(), "1", "int expects an int, not str"),
    (Int(), True, "int expects an int, not bool"),
    (UnsignedInt(), -1, "out of range for unsigned int"),
    (UnsignedHyper(), 2**64, "out of range"),
    (Bool(), 1, "bool expects a bool"),
    (COLOR, 4, "4 is not a value of enum color"),
    (Float(), 1e300, "too large for a float"),
    (Double(), 10**400, "too large for a double"),
    (FixedOpaque(2), b"abc", "needs 2 bytes, not 3"),
    (Opaque(2), b"abc", "opaque longer than 2"),
    (Opaque(), "abc", "opaque expects bytes, not str"),
    (String(), b"abc", "string expects a str, not bytes"),
    (Void(), 0, "void expects None"),
    (FixedArray(Int(), 2), [1], "needs 2 elements, not 1"),
    (Array(Int()), "ab", "array expects a list, not str"),
    (ITEM, {"name": "a"}, "struct item needs the field 'count'"),
    (NUMBER, 5, "union number expects (discriminant, value)"),
    (Union("u", Int(), {1: ("a", Int())}), (2, 0), "2 selects no arm of union u"),
    (NUMBER, (1, "x"), "value.small: int expects an int, not str"),
])
def test_bad_values_are_a_clear_error(xdr_type: XDRType, value: Any, message: str) -> None:
    with pytest.raises(XDREncodeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        encode(xdr_type, value)


TREE = Struct("tree")
TREE.define([("left", Optional(TREE)), ("value", Int()), ("right", Optional(TREE))])


def test_nesting_is_bounded_both_ways() -> None:
    tree = None
    for value in range(20):
        tree = {"left": tree, "value": value, "right": None}
    data = encode(TREE, tree)
    assert decode(TREE, data).left.left.value == 17
    with pytest.raises(XDREncodeError, match="nested deeper than 10"):
        encode(TREE, tree, max_depth=10)
    with pytest.raises(XDRDecodeError, match="nested deeper than 10"):
        decode(TREE, data, max_depth=10)
    # a million "present" flags down the left: refused at the limit, not by RecursionError
    endless = b"\0\0\0\1" * 1_000_000
    with pytest.raises(XDRDecodeError, match="nested deeper than 128"):
        decode(TREE, endless)


def linked(values: list[int]) -> Any:
    head = None
    for value in reversed(values):
        head = NODE.cls(value=value, next=head)
    return head


def test_linked_lists_are_read_node_after_node() -> None:
    values = list(range(5000))  # far deeper than max_depth or Python's recursion limit
    data = encode(NODE, linked(values))
    assert data == b"".join(v.to_bytes(4, "big") + b"\0\0\0" + bytes([v != 4999])
                            for v in values)
    back = decode(Optional(NODE), b"\0\0\0\1" + data)
    for value in values:
        assert back.value == value
        back = back.next
    assert back is None
    with pytest.raises(XDRDecodeError, match=r"^value: list longer than 100"):
        decode(NODE, data, default_max=100)
    with pytest.raises(XDREncodeError, match="list longer than 100"):
        encode(NODE, linked(values), default_max=100)


def test_errors_inside_a_list_name_the_node() -> None:
    data = encode(NODE, linked([1, 2, 3, 4]))
    with pytest.raises(XDRDecodeError, match=r"^value\.next\*2\.next: bool must be 0 or 1"):
        decode(NODE, data[:20] + b"\0\0\0\7" + data[24:])
    with pytest.raises(XDRDecodeError, match=r"^value\.next\*3\.value: truncated"):
        decode(NODE, data[:26])
    bad = {"value": 1, "next": {"value": 2, "next": {"value": "x", "next": None}}}
    with pytest.raises(XDREncodeError, match=r"^value\.next\*2\.value: int expects"):
        encode(NODE, bad)
    cycle: dict[str, Any] = {"value": 1}
    cycle["next"] = cycle
    with pytest.raises(XDREncodeError, match="list longer than 1000"):
        encode(NODE, cycle, default_max=1000)


def test_struct_values_are_dataclasses_with_safe_names() -> None:
    odd = Struct("odd", [("class", Int()), ("from", Int())])
    value = decode(odd, encode(odd, {"class": 1, "from": 2}))
    assert (value.class_, value.from_) == (1, 2)
    assert encode(odd, value) == encode(odd, {"class": 1, "from": 2})


def test_bad_type_definitions_are_refused() -> None:
    with pytest.raises(ValueError, match="has no members"):
        Enum("e", {})
    with pytest.raises(ValueError, match="out of the int range"):
        Enum("e", {"A": 2**31})
    with pytest.raises(ValueError, match="repeats a field name"):
        Struct("s", [("a", Int()), ("a", Int())])
    with pytest.raises(ValueError, match="discriminant must be"):
        Union("u", String(), {})
    with pytest.raises(ValueError):
        Opaque(-1)
    with pytest.raises(XDREncodeError, match="type later is not defined"):
        encode(Ref("later"), 1)


# -- any input ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_a_decode_error(data: bytes) -> None:
    for xdr_type in (ARGS, NUMBER, NODE, FILE, Optional(NODE), Void(), Double()):
        try:
            value = decode(xdr_type, data)
        except XDRDecodeError as exc:
            assert str(exc).startswith("value")
        else:
            assert encode(xdr_type, value) == data  # only a canonical encoding decodes
