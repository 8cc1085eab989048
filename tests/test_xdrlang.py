"""handlers.rpc.xdrlang: the .x language read at run time into XDR types and programs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.rpc.xdr import (
    Double,
    Enum,
    FixedOpaque,
    Int,
    String,
    UnsignedInt,
    Void,
    XDRDecodeError,
    decode,
    encode,
)
from handlers.rpc.xdrcompound import Array, Optional, Struct, Union, UnionValue
from handlers.rpc.xdrlang import XDRSyntaxError, load_xdr, parse_xdr

INVENTORY = Path(__file__).parent / "data" / "inventory.x"


@pytest.fixture(scope="module")
def spec() -> Any:
    return load_xdr(str(INVENTORY))


def test_constants_include_enum_members_and_program_numbers(spec: Any) -> None:
    assert spec.constants["MAX_NAME"] == 64
    assert spec.constants["MAX_ITEMS"] == 0x20
    assert spec.constants["MAX_TAGS"] == 8  # written 010: octal
    assert spec.constants["MATERIAL"] == 3
    assert spec.constants["INVENTORY_PROG"] == 0x20000123
    assert spec.constants["INVENTORY_V2"] == 2
    assert spec.constants["COUNT_KIND"] == 5


def test_types(spec: Any) -> None:
    types = spec.types
    assert isinstance(types["item_name"], String) and types["item_name"].max_length == 64
    assert isinstance(types["checksum"], FixedOpaque) and types["checksum"].size == 16
    assert isinstance(types["kind"], Enum) and types["kind"].members["PART"] == 2
    assert isinstance(types["itemlist"], Array) and types["itemlist"].max_length == 32
    assert isinstance(types["itemchain"], Optional)
    assert isinstance(types["lookup_result"], Union)
    item = types["item"]
    assert isinstance(item, Struct)
    assert [name for name, _, _ in item.fields] == [
        "name", "kind", "count", "serial", "weight", "fragile", "tags", "sum"]
    assert isinstance(item.fields[4][2], Double)
    assert item.fields[6][2].max_length == 8


def test_programs_with_two_versions(spec: Any) -> None:
    program = spec.program("INVENTORY_PROG")
    assert program.number == 0x20000123
    assert sorted(program.versions) == [1, 2]
    v1, v2 = program.versions[1], program.versions[2]
    assert sorted(v1.procedures) == [0, 1, 2, 3]
    assert sorted(v2.procedures) == [0, 1, 2, 3, 4, 5]
    assert isinstance(v1.procedures[0].arg, Void)
    assert v1.procedures[1].arg is spec.types["item"]
    assert v2.procedures[3].name == "REPORT"
    count_kind = v2.procedures[5]
    assert [name for name, _, _ in count_kind.arg.fields] == ["arg1", "arg2"]
    with pytest.raises(KeyError, match="INVENTORY_PROG"):
        spec.program("NOPE")


def make_item(spec: Any, name: str = "hammer", **changes: Any) -> Any:
    fields = {"name": name, "kind": 1, "count": 3, "serial": -7, "weight": 1.25,
              "fragile": False, "tags": "red", "sum": bytes(range(16))}
    fields.update(changes)
    return spec.types["item"].cls(**fields)


def test_values_roundtrip_through_the_parsed_types(spec: Any) -> None:
    item = make_item(spec)
    report_type = spec.types["stock_report"]
    report = report_type.cls(total=2**64 - 1, average_weight=0.5, items=[item, item],
                             levels=[1, 2, 3], range={"low": -1, "high": 1})
    back = decode(report_type, encode(report_type, report))
    assert back.items == [item, item]
    assert back.range.low == -1
    chain_type = spec.types["itemchain"]
    chain = {"entry": item, "next": {"entry": make_item(spec, "saw"), "next": None}}
    back = decode(chain_type, encode(chain_type, chain))
    assert back.next.entry.name == "saw" and back.next.next is None
    assert decode(chain_type, encode(chain_type, None)) is None
    result = spec.types["lookup_result"]
    assert decode(result, encode(result, (0, item))) == UnionValue(0, item)
    assert decode(result, encode(result, (1, None))) == UnionValue(1, None)
    assert decode(result, encode(result, (2, "full"))) == UnionValue(2, "full")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=10).filter(lambda s: len(s.encode()) <= 64), max_size=32),
       st.sampled_from([1, 2, 3]), st.booleans())
def test_lists_of_parsed_structs_roundtrip(names: list[str], kind: int, fragile: bool
                                           ) -> None:
    spec = load_xdr(str(INVENTORY))
    items = [make_item(spec, n, kind=kind, fragile=fragile) for n in names]
    itemlist = spec.types["itemlist"]
    assert decode(itemlist, encode(itemlist, items)) == items


def test_declared_limits_hold(spec: Any) -> None:
    with pytest.raises(XDRDecodeError, match=r"items\[0\].name: string longer than 64"):
        bad = bytearray(encode(spec.types["itemlist"], [make_item(spec)]))
        bad[4:8] = (65).to_bytes(4, "big")
        decode(spec.types["itemlist"], bytes(bad), "items")


def test_the_rfc_file_example_parses() -> None:
    spec = parse_xdr("""
        const MAXUSERNAME = 32;     /* max length of a user name */
        const MAXFILELEN = 65535;   /* max length of a file      */
        const MAXNAMELEN = 255;     /* max length of a file name */
        enum filekind { TEXT = 0, DATA = 1, EXEC = 2 };
        union filetype switch (filekind kind) {
        case TEXT: void;                            // no extra information
        case DATA: string creator<MAXNAMELEN>;      // data creator
        case EXEC: string interpretor<MAXNAMELEN>;  // program interpretor
        };
        struct file {
            string filename<MAXNAMELEN>;
            filetype type;
            string owner<MAXUSERNAME>;
            opaque data<MAXFILELEN>;
        };
    """)
    file = spec.types["file"]
    wire = encode(file, {"filename": "sillyprog", "type": (2, "lisp"), "owner": "john",
                         "data": b"(quit)"})
    assert len(wire) == 48 and wire.startswith(b"\0\0\0\x09sillyprog\0\0\0\0\0\0\x02")


def test_forms_rpcgen_users_write() -> None:
    spec = parse_xdr("""
        %#include <stdio.h>
        enum e { A, B, C = 10, D };
        struct pair { unsigned first; unsigned int second; };
        struct holder {
            struct pair p;
            enum e which;
            union switch (bool on) { case TRUE: int value; case FALSE: void; } u;
            struct { int x; } anon;
            unsigned hyper big;
            opaque raw<>;
            pair many<>;
        };
        union either switch (int n) { case 1: case 2: int small; default: void; };
    """)
    assert spec.constants == {"A": 0, "B": 1, "C": 10, "D": 11}
    holder = spec.types["holder"]
    value = {"p": {"first": 1, "second": 2}, "which": 11, "u": (True, 5), "anon": {"x": 1},
             "big": 2**64 - 1, "raw": b"\0", "many": []}
    back = decode(holder, encode(holder, value))
    assert type(back.anon).__name__ == "holder_anon"
    assert back.u == UnionValue(True, 5)
    either = spec.types["either"]
    assert decode(either, encode(either, (2, 7))) == UnionValue(2, 7)
    assert decode(either, encode(either, (9, None))) == UnionValue(9, None)
    assert isinstance(spec.types["pair"].fields[0][2], UnsignedInt)


def test_types_may_be_used_before_their_definition() -> None:
    spec = parse_xdr("typedef later *maybe; struct later { int x; };")
    maybe = spec.types["maybe"]
    assert decode(maybe, encode(maybe, {"x": 4})).x == 4
    spec = parse_xdr("typedef int number; typedef number count; typedef count total[2];")
    assert decode(spec.types["total"], encode(spec.types["total"], [1, 2])) == [1, 2]
    assert isinstance(spec.types["count"], Int)


@pytest.mark.parametrize(("text", "where", "message"), [
    ("const A = 1", "1:12", "expected ';', found 'end of file'"),
    ("const A = B;", "1:11", "unknown constant 'B'"),
    ("const A = 1;\nconst A = 2;", "2:7", "constant 'A' is already defined"),
    ("struct s { int a; int a; };", "1:19", "field 'a' repeated"),
    ("struct s {\n  int a;\n  foo b;\n};", "3:3", "unknown type 'foo'"),
    ("typedef a b; typedef b a;", "1:9", "type 'a' is defined in terms of itself"),
    ("struct s { quadruple q; };", "1:12", "quadruple is not supported"),
    ("#define X 1\n", "1:1", "preprocessor directives are not supported"),
    ("/* unterminated", "1:1", "unterminated comment"),
    ("struct s { int a; } $", "1:21", "unexpected character '$'"),
    ("union u switch (int n) { case 1: int a; case 1: int b; };", "1:46",
     "case 1 repeated"),
    ("union u switch (string s<>) { case 1: int a; };", "1:17",
     "the discriminant must be an int"),
    ("union u switch (int n) { default: void; case 1: int a; };", "1:41",
     "the default arm must come last"),
    ("typedef opaque x[09];", "1:18", "bad octal constant '09'"),
    ("typedef int x[-1];", "1:15", "array size -1 is out of range"),
    ("enum e { A = 1, A = 2 };", "1:17", "enum member 'A' repeated"),
    ("program P { version V { void N(void) = 0; } = 1; version W { void M(void) = 0; }"
     " = 1; } = 9;", "1:58", "version number 1 repeated"),
    ("program P { version V { void N(void) = 0; void M(int) = 0; } = 1; } = 9;", "1:48",
     "procedure number 0 repeated"),
    ("program P { } = 9;", "1:9", "program P has no versions"),
    ("struct s { void; };", "1:12", "a struct field cannot be void"),
    ("int x;", "1:1", "expected a definition"),
])
def test_bad_input_is_reported_with_its_line(text: str, where: str, message: str) -> None:
    with pytest.raises(XDRSyntaxError) as info:
        parse_xdr(text, "bad.x")
    assert str(info.value).startswith(f"bad.x:{where}: ")
    assert message in str(info.value)
    line, column = map(int, where.split(":"))
    assert (info.value.line, info.value.column) == (line, column)
