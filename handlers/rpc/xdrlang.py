"""The ``.x`` language, read at run time into XDR types and RPC program tables.

One ``.x`` file describes an RPC interface for both sides: ``rpcgen`` turns it into C,
:func:`parse_xdr` (or :func:`load_xdr`) turns it into a :class:`Specification`:

* ``constants`` -- ``const`` definitions, enum members, and (as ``rpcgen`` defines
  them) the program, version and procedure names with their numbers;
* ``types`` -- every named type (typedefs, enums, structs, unions) as an
  :class:`~handlers.rpc.xdr.XDRType`;
* ``programs`` -- ``program``/``version``/procedure definitions (RFC 5531 section 12):
  :class:`ProgramDef` > :class:`VersionDef` > :class:`ProcedureDef`, each procedure
  with its argument and result types.

The grammar is RFC 4506 section 6.3's with RFC 5531's program definitions, plus what
``rpcgen`` users write in practice: ``unsigned`` alone for ``unsigned int``, enum
members without ``=`` (the previous value plus one), ``struct name`` / ``enum name`` /
``union name`` as type names, octal and hexadecimal constants, procedures with several
arguments (encoded one after the other, as ``rpcgen -N`` does; they arrive as a struct
with fields ``arg1``, ``arg2``, ...). Types may be used before they are defined (a
struct may point to itself through ``*``); constants must be defined before use.
``quadruple`` is refused. Every error is an :class:`XDRSyntaxError` with the file, line
and column.

Socket-free: must not import socket, selectors, threading or os.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from .xdr import (
    UINT32_MAX,
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
    XDRType,
)
from .xdrcompound import Array, FixedArray, Optional, Ref, Struct, Union
from .xdrlex import Token, XDRSyntaxError, tokenize

__all__ = [
    "ProcedureDef",
    "ProgramDef",
    "Specification",
    "VersionDef",
    "XDRSyntaxError",
    "load_xdr",
    "parse_xdr",
]

_KEYWORDS: Final = frozenset({
    "bool", "case", "const", "default", "double", "quadruple", "enum", "float", "hyper",
    "int", "opaque", "string", "struct", "switch", "typedef", "union", "unsigned", "void",
    "program", "version",
})

_BUILTIN_CONSTANTS: Final = {"TRUE": 1, "FALSE": 0}  # for unions switched on a bool


@dataclass
class ProcedureDef:
    """A procedure: its number, argument type and result type."""

    name: str
    number: int
    arg: XDRType
    result: XDRType


@dataclass
class VersionDef:
    """A version of a program and its procedures by number."""

    name: str
    number: int
    procedures: dict[int, ProcedureDef] = field(default_factory=dict)


@dataclass
class ProgramDef:
    """A program and its versions by number."""

    name: str
    number: int
    versions: dict[int, VersionDef] = field(default_factory=dict)


@dataclass
class Specification:
    """What a ``.x`` file defines."""

    constants: dict[str, int] = field(default_factory=dict)
    types: dict[str, XDRType] = field(default_factory=dict)
    programs: dict[str, ProgramDef] = field(default_factory=dict)

    def program(self, name: str) -> ProgramDef:
        """The program called ``name``; KeyError names the ones defined."""
        try:
            return self.programs[name]
        except KeyError:
            raise KeyError(f"no program {name!r} (defined: {sorted(self.programs)})"
                           ) from None


class _Parser:
    def __init__(self, text: str, filename: str) -> None:
        self.filename = filename
        self.tokens = tokenize(text, filename)
        self.i = 0
        self.spec = Specification()
        self.refs: list[tuple[Ref, Token]] = []
        self.inline: set[int] = set()  # ids of anonymous types declared in place

    # -- tokens --------------------------------------------------------------------

    def error(self, reason: str, token: Token | None = None) -> XDRSyntaxError:
        token = token or self.tokens[self.i]
        return XDRSyntaxError(reason, token.line, token.column, self.filename)

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def next(self) -> Token:
        token = self.tokens[self.i]
        if token.kind != "eof":
            self.i += 1
        return token

    def accept(self, text: str) -> bool:
        token = self.peek()
        if token.kind != "number" and token.text == text:
            self.i += 1
            return True
        return False

    def expect(self, text: str) -> Token:
        token = self.peek()
        if token.kind == "number" or token.text != text:
            raise self.error(f"expected {text!r}, found {token.text!r}")
        return self.next()

    def identifier(self, what: str) -> Token:
        token = self.peek()
        if token.kind != "ident" or token.text in _KEYWORDS:
            raise self.error(f"expected {what}, found {token.text!r}")
        return self.next()

    # -- values ----------------------------------------------------------------------

    def value(self) -> int:
        token = self.next()
        if token.kind == "number":
            text = token.text
            digits = text.lstrip("-")
            if len(digits) > 1 and digits[0] == "0" and digits[1] not in "xX":
                if any(c not in "01234567" for c in digits):
                    raise self.error(f"bad octal constant {text!r}", token)
                return int(text.replace("0", "0o", 1), 0)
            return int(text, 0)
        if token.kind == "ident":
            if token.text in self.spec.constants:
                return self.spec.constants[token.text]
            if token.text in _BUILTIN_CONSTANTS:
                return _BUILTIN_CONSTANTS[token.text]
            raise self.error(f"unknown constant {token.text!r}", token)
        raise self.error(f"expected a number or a constant, found {token.text!r}", token)

    def size(self, what: str) -> int:
        token = self.peek()
        size = self.value()
        if not 0 <= size <= UINT32_MAX:
            raise self.error(f"{what} {size} is out of range 0..{UINT32_MAX}", token)
        return size

    def define_constant(self, token: Token, value: int) -> None:
        if token.text in self.spec.constants:
            raise self.error(f"constant {token.text!r} is already defined", token)
        self.spec.constants[token.text] = value

    def define_type(self, token: Token, xdr_type: XDRType) -> None:
        if token.text in self.spec.types:
            raise self.error(f"type {token.text!r} is already defined", token)
        self.spec.types[token.text] = xdr_type

    # -- types -----------------------------------------------------------------------

    def named(self, token: Token) -> XDRType:
        known = self.spec.types.get(token.text)
        if known is not None:
            return known
        ref = Ref(token.text)
        self.refs.append((ref, token))
        return ref

    def type_specifier(self, context: str) -> XDRType:
        token = self.next()
        word = token.text
        if token.kind != "ident":
            raise self.error(f"expected a type, found {word!r}", token)
        if word == "unsigned":
            if self.accept("hyper"):
                return UnsignedHyper()
            self.accept("int")
            return UnsignedInt()
        simple = {"int": Int, "hyper": Hyper, "float": Float, "double": Double,
                  "bool": Bool}.get(word)
        if simple is not None:
            return simple()
        if word == "quadruple":
            raise self.error("quadruple is not supported", token)
        if word in ("enum", "struct", "union"):
            if self.peek().kind == "ident" and self.peek().text != "switch":
                return self.named(self.identifier(f"{word} name"))
            if word == "enum":
                inline: XDRType = self.enum_body(context)
            elif word == "struct":
                inline = self.struct_body(Struct(context))
            else:
                inline = self.union_body(context)
            self.inline.add(id(inline))
            return inline
        if word in _KEYWORDS:
            raise self.error(f"expected a type, found {word!r}", token)
        return self.named(token)

    def name_inline(self, xdr_type: XDRType, name: str) -> None:
        """Name an anonymous struct, union or enum after the field it was declared in."""
        if id(xdr_type) not in self.inline:
            return
        if isinstance(xdr_type, Struct):
            xdr_type.name = name
            xdr_type.define([(field, t) for field, _, t in xdr_type.fields])
        elif isinstance(xdr_type, Union):
            xdr_type.name = name
        elif isinstance(xdr_type, Enum):
            xdr_type.rename(name)

    def declaration(self, context: str | None) -> tuple[str | None, XDRType]:
        """One declaration: (name, type); (None, Void) for ``void``.

        An anonymous struct, union or enum declared in it is named ``context_name``
        (just ``name`` in a typedef, where ``context`` is None).
        """
        if self.accept("void"):
            return None, Void()
        if self.peek().text in ("opaque", "string") and self.peek().kind == "ident":
            word = self.next().text
            name = self.identifier("a name").text
            if word == "opaque" and self.accept("["):
                size = self.size("opaque size")
                self.expect("]")
                return name, FixedOpaque(size)
            self.expect("<")
            limit = None if self.peek().text == ">" else self.size("maximum length")
            self.expect(">")
            return name, (Opaque(limit) if word == "opaque" else String(limit))
        element = self.type_specifier(context or "anonymous")
        pointer = self.accept("*")
        name = self.identifier("a name").text
        self.name_inline(element, name if context is None else f"{context}_{name}")
        if pointer:
            return name, Optional(element)
        if self.accept("["):
            size = self.size("array size")
            self.expect("]")
            return name, FixedArray(element, size)
        if self.accept("<"):
            limit = None if self.peek().text == ">" else self.size("maximum length")
            self.expect(">")
            return name, Array(element, limit)
        return name, element

    def enum_body(self, name: str) -> Enum:
        self.expect("{")
        members: dict[str, int] = {}
        value = -1
        while True:
            token = self.identifier("an enum member")
            value = self.value() if self.accept("=") else value + 1
            if token.text in members:
                raise self.error(f"enum member {token.text!r} repeated", token)
            self.define_constant(token, value)
            members[token.text] = value
            if not self.accept(","):
                break
        self.expect("}")
        try:
            return Enum(name, members)
        except ValueError as exc:
            raise self.error(str(exc)) from None

    def struct_body(self, struct: Struct) -> Struct:
        start = self.expect("{")
        fields: list[tuple[str, XDRType]] = []
        while not self.accept("}"):
            token = self.peek()
            name, xdr_type = self.declaration(struct.name)
            if name is None:
                raise self.error("a struct field cannot be void", token)
            if any(name == other for other, _ in fields):
                raise self.error(f"field {name!r} repeated", token)
            fields.append((name, xdr_type))
            self.expect(";")
        if not fields:
            raise self.error(f"struct {struct.name} has no fields", start)
        struct.define(fields)
        return struct

    def union_body(self, name: str) -> Union:
        self.expect("switch")
        self.expect("(")
        token = self.peek()
        _, discriminant = self.declaration(name)
        self.expect(")")
        self.expect("{")
        arms: dict[int, tuple[str | None, XDRType]] = {}
        default = None
        while not self.accept("}"):
            if self.accept("default"):
                self.expect(":")
                default = self.declaration(name)
                self.expect(";")
                if self.peek().text != "}":
                    raise self.error("the default arm must come last")
                continue
            values = []
            self.expect("case")
            while True:
                case = self.peek()
                values.append((self.value(), case))
                self.expect(":")
                if not self.accept("case"):
                    break
            arm = self.declaration(name)
            self.expect(";")
            for value, case in values:
                if value in arms:
                    raise self.error(f"case {value} repeated", case)
                arms[value] = arm
        try:
            return Union(name, discriminant, arms, default)
        except ValueError as exc:
            raise self.error(str(exc), token) from None

    # -- definitions -----------------------------------------------------------------

    def definition(self) -> None:
        token = self.next()
        word = token.text
        if word == "const":
            ident = self.identifier("a constant name")
            self.expect("=")
            self.define_constant(ident, self.value())
        elif word == "typedef":
            first = self.peek()
            name, xdr_type = self.declaration(None)
            if name is None:
                raise self.error("typedef void names nothing", first)
            self.define_type(first._replace(text=name), xdr_type)
        elif word in ("enum", "struct", "union"):
            ident = self.identifier(f"a {word} name")
            if word == "enum":
                self.define_type(ident, self.enum_body(ident.text))
            elif word == "struct":
                struct = Struct(ident.text)
                self.define_type(ident, struct)  # before the body: it may point to itself
                self.struct_body(struct)
            else:
                self.define_type(ident, self.union_body(ident.text))
        elif word == "program":
            self.program()
        else:
            raise self.error(f"expected a definition (const, typedef, enum, struct, union "
                             f"or program), found {word!r}", token)
        self.expect(";")

    def program(self) -> None:
        name = self.identifier("a program name")
        self.expect("{")
        versions: list[tuple[VersionDef, Token]] = []
        while not self.accept("}"):
            self.expect("version")
            vname = self.identifier("a version name")
            version = VersionDef(vname.text, 0)
            self.expect("{")
            while not self.accept("}"):
                self.procedure(version)
            if not version.procedures:
                raise self.error(f"version {vname.text} has no procedures", vname)
            self.expect("=")
            version.number = self.size("version number")
            self.expect(";")
            self.define_constant(vname, version.number)
            versions.append((version, vname))
        if not versions:
            raise self.error(f"program {name.text} has no versions", name)
        self.expect("=")
        program = ProgramDef(name.text, self.size("program number"))
        for version, vname in versions:
            if version.number in program.versions:
                raise self.error(f"version number {version.number} repeated", vname)
            program.versions[version.number] = version
        self.define_constant(name, program.number)
        if name.text in self.spec.programs:
            raise self.error(f"program {name.text!r} is already defined", name)
        self.spec.programs[name.text] = program

    def procedure(self, version: VersionDef) -> None:
        result = Void() if self.accept("void") else self.type_specifier("result")
        pname = self.identifier("a procedure name")
        self.expect("(")
        args: list[XDRType] = []
        if self.accept("void"):
            args.append(Void())
        else:
            while True:
                args.append(self.type_specifier(f"{pname.text}_arg"))
                if not self.accept(","):
                    break
        self.expect(")")
        self.expect("=")
        number = self.size("procedure number")
        self.expect(";")
        arg = args[0] if len(args) == 1 else Struct(
            f"{pname.text.lower()}_args", [(f"arg{i}", t) for i, t in enumerate(args, 1)])
        if number in version.procedures:
            raise self.error(f"procedure number {number} repeated", pname)
        if pname.text not in self.spec.constants:  # several versions share names
            self.define_constant(pname, number)
        version.procedures[number] = ProcedureDef(pname.text, number, arg, result)

    def parse(self) -> Specification:
        while self.peek().kind != "eof":
            self.definition()
        for ref, token in self.refs:
            target = self.spec.types.get(ref.name)
            if target is None:
                raise self.error(f"unknown type {ref.name!r}", token)
            ref.target = target
        for ref, token in self.refs:
            seen: set[int] = set()
            step: XDRType | None = ref
            while isinstance(step, Ref):  # typedef a b; typedef b a;
                if id(step) in seen:
                    raise self.error(f"type {ref.name!r} is defined in terms of itself",
                                     token)
                seen.add(id(step))
                step = step.target
        return self.spec


def parse_xdr(text: str, filename: str = "<xdr>") -> Specification:
    """Read a ``.x`` text.

    Raises:
        XDRSyntaxError: the text is not valid; the message names the line and column.
    """
    return _Parser(text, filename).parse()


def load_xdr(path: str) -> Specification:
    """Read the ``.x`` file at ``path`` (UTF-8).

    Raises:
        XDRSyntaxError: as :func:`parse_xdr`.
        OSError: the file cannot be read.
    """
    with open(path, encoding="utf-8") as f:
        return parse_xdr(f.read(), str(path))
