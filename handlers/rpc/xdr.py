"""XDR (RFC 4506): the errors, the reader and writer, and the primitive types.

Each XDR type is an object (an :class:`XDRType`) that encodes a Python value to bytes
and decodes it back:

=========================  ==========================================================
XDR                        Python
=========================  ==========================================================
int, unsigned int          :class:`Int`, :class:`UnsignedInt` -- ``int``
hyper, unsigned hyper      :class:`Hyper`, :class:`UnsignedHyper` -- ``int``
bool                       :class:`Bool` -- ``bool``
enum                       :class:`Enum` -- a member of an ``enum.IntEnum`` (any int
                           naming a member is accepted when encoding)
float, double              :class:`Float`, :class:`Double` -- ``float``
opaque[n], opaque<m>       :class:`FixedOpaque`, :class:`Opaque` -- ``bytes``
string<m>                  :class:`String` -- ``str`` (UTF-8 with surrogateescape, so
                           any bytes survive a round trip; the limit counts bytes)
void                       :class:`Void` -- ``None``
=========================  ==========================================================

Arrays, optional data, structs and unions are in :mod:`handlers.rpc.xdrcompound`.

Choices where RFC 4506 leaves room:

* Every variable length has a maximum: the one declared (``opaque<16>``) or, for an
  unbounded declaration (``opaque<>``), the ``default_max`` given to :func:`decode`
  (:data:`DEFAULT_MAX_LENGTH` unless told). A claimed length is checked against that
  maximum and against the bytes actually left *before* anything is allocated, so a
  length of 2**32 - 1 costs nothing.
* Padding bytes must be zero: a non-zero pad is refused as malformed, like any other
  byte that could not have come from an XDR encoder.
* A bool is 0 or 1 and an enum one of its declared values; anything else is refused.
* Input left over after the value is an error unless the caller asks for it
  (:func:`decode_prefix`).

Every failure is an :class:`XDRError` that names the path of the offending field from
the value's root (``args.items[3].name: string longer than 255``): a
:class:`XDRDecodeError` for bad input, an :class:`XDREncodeError` for a Python value
that does not fit its type. Nothing deeper (IndexError, struct.error) escapes.

Socket-free: must not import socket, selectors, threading or os.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping
from typing import Any, Final

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_LENGTH",
    "Bool",
    "Double",
    "Enum",
    "FixedOpaque",
    "Float",
    "Hyper",
    "Int",
    "Opaque",
    "Reader",
    "String",
    "UnsignedHyper",
    "UnsignedInt",
    "Void",
    "Writer",
    "XDRDecodeError",
    "XDREncodeError",
    "XDRError",
    "XDRType",
    "decode",
    "decode_prefix",
    "encode",
    "padding",
]

DEFAULT_MAX_LENGTH: Final = 1024 * 1024
"""The maximum of an unbounded ``<>`` length (bytes, or elements of an array)."""
DEFAULT_MAX_DEPTH: Final = 128
"""How deeply values may nest (structs in structs, linked lists through ``*``)."""
UINT32_MAX: Final = 0xFFFF_FFFF

_U32: Final = struct.Struct(">I")
_I32: Final = struct.Struct(">i")
_U64: Final = struct.Struct(">Q")
_I64: Final = struct.Struct(">q")
_F32: Final = struct.Struct(">f")
_F64: Final = struct.Struct(">d")
_ZEROS: Final = b"\0\0\0"


def padding(length: int) -> int:
    """The number of zero bytes that follow ``length`` bytes to reach a multiple of 4."""
    return -length % 4


class XDRError(ValueError):
    """A value could not be decoded or encoded.

    Attributes:
        path: where, from the root (``args.items[3].name``).
        reason: what was wrong (``string longer than 255``).
    """

    def __init__(self, reason: str, root: str = "value") -> None:
        super().__init__(reason)
        self.reason = reason
        self._root = root
        self._parts: list[str] = []  # innermost first, pushed while unwinding

    def push(self, part: str) -> None:
        """Prefix the path with ``part`` (``.name`` or ``[3]``) while unwinding."""
        self._parts.append(part)

    def rooted(self, root: str) -> XDRError:
        """Name the root of the path (done once, where the value entered)."""
        self._root = root
        return self

    @property
    def path(self) -> str:
        return self._root + "".join(reversed(self._parts))

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class XDRDecodeError(XDRError):
    """The input is truncated, over-long or not a valid encoding of the type."""


class XDREncodeError(XDRError):
    """A Python value does not fit the XDR type it is encoded as."""


class Reader:
    """Decoding state: the input, the offset, the limits.

    Args:
        data: the input.
        default_max: the maximum of unbounded lengths.
        max_depth: how deeply values may nest.
    """

    __slots__ = ("data", "default_max", "depth", "max_depth", "pos")

    def __init__(self, data: bytes | bytearray | memoryview,
                 default_max: int = DEFAULT_MAX_LENGTH,
                 max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        self.data = bytes(data)
        self.pos = 0
        self.default_max = default_max
        self.max_depth = max_depth
        self.depth = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, size: int, what: str) -> bytes:
        """The next ``size`` bytes; a clear error if fewer are left."""
        if size > len(self.data) - self.pos:
            raise XDRDecodeError(f"truncated: {what} needs {size} bytes at offset "
                                 f"{self.pos}, {self.remaining} left")
        start = self.pos
        self.pos = start + size
        return self.data[start:self.pos]

    def uint32(self, what: str) -> int:
        pos = self.pos
        if len(self.data) - pos < 4:
            raise XDRDecodeError(f"truncated: {what} needs 4 bytes at offset {pos}, "
                                 f"{self.remaining} left")
        self.pos = pos + 4
        value: int = _U32.unpack_from(self.data, pos)[0]
        return value

    def skip_padding(self, length: int) -> None:
        pad = padding(length)
        if pad and self.take(pad, "padding") != _ZEROS[:pad]:
            raise XDRDecodeError(f"non-zero padding at offset {self.pos - pad}")

    def length(self, declared: int | None, noun: str, min_item: int = 1) -> int:
        """Read a length and check it against the maximum and the bytes left."""
        limit = self.default_max if declared is None else declared
        size = self.uint32(f"{noun} length")
        if size > limit:
            raise XDRDecodeError(f"{noun} longer than {limit} (claims {size})")
        if size * min_item > self.remaining:
            raise XDRDecodeError(f"truncated: {noun} claims {size} "
                                 f"{'bytes' if noun != 'array' else 'elements'}, "
                                 f"{self.remaining} bytes left")
        return size

    def enter(self) -> None:
        if self.depth >= self.max_depth:
            raise XDRDecodeError(f"nested deeper than {self.max_depth}")
        self.depth += 1


class Writer:
    """Encoding state: the output and the limits (the same as :class:`Reader`'s)."""

    __slots__ = ("default_max", "depth", "max_depth", "out")

    def __init__(self, default_max: int = DEFAULT_MAX_LENGTH,
                 max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        self.out = bytearray()
        self.default_max = default_max
        self.max_depth = max_depth
        self.depth = 0

    def enter(self) -> None:
        if self.depth >= self.max_depth:
            raise XDREncodeError(f"nested deeper than {self.max_depth}")
        self.depth += 1

    def limit(self, declared: int | None, size: int, noun: str) -> None:
        limit = self.default_max if declared is None else declared
        if size > limit:
            raise XDREncodeError(f"{noun} longer than {limit} ({size})")


class XDRType:
    """The base of every XDR type: :meth:`pack`/:meth:`unpack` do the work.

    Attributes:
        min_size: the fewest bytes an encoding can take (arrays check a claimed element
            count against it before allocating).
    """

    @property
    def min_size(self) -> int:
        return 4

    def pack(self, value: Any, w: Writer) -> None:
        raise NotImplementedError

    def unpack(self, r: Reader) -> Any:
        raise NotImplementedError

    def encode(self, value: Any, name: str = "value", *,
               default_max: int = DEFAULT_MAX_LENGTH,
               max_depth: int = DEFAULT_MAX_DEPTH) -> bytes:
        """``value`` as XDR bytes; see :func:`encode`."""
        return encode(self, value, name, default_max=default_max, max_depth=max_depth)

    def decode(self, data: bytes | bytearray | memoryview, name: str = "value", *,
               default_max: int = DEFAULT_MAX_LENGTH,
               max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
        """The value ``data`` encodes; see :func:`decode`."""
        return decode(self, data, name, default_max=default_max, max_depth=max_depth)


def encode(xdr_type: XDRType, value: Any, name: str = "value", *,
           default_max: int = DEFAULT_MAX_LENGTH,
           max_depth: int = DEFAULT_MAX_DEPTH) -> bytes:
    """Encode ``value`` as ``xdr_type``.

    Raises:
        XDREncodeError: the value does not fit; its path starts with ``name``.
    """
    w = Writer(default_max, max_depth)
    try:
        xdr_type.pack(value, w)
    except XDRError as exc:
        raise exc.rooted(name) from None
    return bytes(w.out)


def decode_prefix(xdr_type: XDRType, r: Reader, name: str = "value") -> Any:
    """Decode one value of ``xdr_type`` from ``r`` at its offset, leaving the rest.

    Raises:
        XDRDecodeError: the input is not a valid encoding; its path starts with ``name``.
    """
    try:
        return xdr_type.unpack(r)
    except XDRError as exc:
        raise exc.rooted(name) from None


def decode(xdr_type: XDRType, data: bytes | bytearray | memoryview, name: str = "value",
           *, default_max: int = DEFAULT_MAX_LENGTH,
           max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Decode ``data``, which must hold exactly one value of ``xdr_type``.

    Raises:
        XDRDecodeError: truncated, over-long or malformed input; its path starts with
            ``name``.
    """
    r = Reader(data, default_max, max_depth)
    value = decode_prefix(xdr_type, r, name)
    if r.remaining:
        raise XDRDecodeError(f"{r.remaining} bytes left over after the value", name)
    return value


def _integer(value: Any, low: int, high: int, noun: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise XDREncodeError(f"{noun} expects an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise XDREncodeError(f"{value} out of range for {noun} ({low}..{high})")
    return value


class Int(XDRType):
    """A signed 32-bit integer."""

    def pack(self, value: Any, w: Writer) -> None:
        w.out += _I32.pack(_integer(value, -2**31, 2**31 - 1, "int"))

    def unpack(self, r: Reader) -> int:
        value: int = _I32.unpack(r.take(4, "int"))[0]
        return value


class UnsignedInt(XDRType):
    """An unsigned 32-bit integer."""

    def pack(self, value: Any, w: Writer) -> None:
        w.out += _U32.pack(_integer(value, 0, UINT32_MAX, "unsigned int"))

    def unpack(self, r: Reader) -> int:
        return r.uint32("unsigned int")


class Hyper(XDRType):
    """A signed 64-bit integer."""

    @property
    def min_size(self) -> int:
        return 8

    def pack(self, value: Any, w: Writer) -> None:
        w.out += _I64.pack(_integer(value, -2**63, 2**63 - 1, "hyper"))

    def unpack(self, r: Reader) -> int:
        value: int = _I64.unpack(r.take(8, "hyper"))[0]
        return value


class UnsignedHyper(XDRType):
    """An unsigned 64-bit integer."""

    @property
    def min_size(self) -> int:
        return 8

    def pack(self, value: Any, w: Writer) -> None:
        w.out += _U64.pack(_integer(value, 0, 2**64 - 1, "unsigned hyper"))

    def unpack(self, r: Reader) -> int:
        value: int = _U64.unpack(r.take(8, "unsigned hyper"))[0]
        return value


class Bool(XDRType):
    """A boolean: 0 or 1 on the wire, nothing else."""

    def pack(self, value: Any, w: Writer) -> None:
        if not isinstance(value, bool):
            raise XDREncodeError(f"bool expects a bool, not {type(value).__name__}")
        w.out += _U32.pack(int(value))

    def unpack(self, r: Reader) -> bool:
        value = r.uint32("bool")
        if value > 1:
            raise XDRDecodeError(f"bool must be 0 or 1, not {value}")
        return value == 1


class Enum(XDRType):
    """An enumeration: a signed 32-bit integer limited to the declared values.

    Args:
        name: the enum's name (that of the ``IntEnum`` made from it).
        members: name -> value, in declaration order.

    Raises:
        ValueError: no members, a value out of the int range.
    """

    def __init__(self, name: str, members: Mapping[str, int]) -> None:
        if not members:
            raise ValueError(f"enum {name} has no members")
        for member, value in members.items():
            if not -2**31 <= value <= 2**31 - 1:
                raise ValueError(f"enum {name}: {member} = {value} is out of the int range")
        self.name = name
        self.members = dict(members)
        self.values: type[enum.IntEnum] = enum.IntEnum(name, self.members)  # type: ignore[misc]

    def rename(self, name: str) -> None:
        """Call the enum (and its ``IntEnum``) ``name``."""
        self.name = name
        self.values = enum.IntEnum(name, self.members)  # type: ignore[misc]

    def pack(self, value: Any, w: Writer) -> None:
        number = _integer(value, -2**31, 2**31 - 1, f"enum {self.name}")
        if number not in self.values._value2member_map_:
            raise XDREncodeError(f"{number} is not a value of enum {self.name}")
        w.out += _I32.pack(number)

    def unpack(self, r: Reader) -> enum.IntEnum:
        number: int = _I32.unpack(r.take(4, f"enum {self.name}"))[0]
        member = self.values._value2member_map_.get(number)
        if member is None:
            raise XDRDecodeError(f"{number} is not a value of enum {self.name}")
        assert isinstance(member, enum.IntEnum)
        return member


def _real(value: Any, layout: struct.Struct, noun: str) -> bytes:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise XDREncodeError(f"{noun} expects a float, not {type(value).__name__}")
    try:
        return layout.pack(float(value))
    except OverflowError:
        raise XDREncodeError(f"{value!r:.40} is too large for a {noun}") from None


class Float(XDRType):
    """An IEEE single-precision float (values that do not fit raise)."""

    def pack(self, value: Any, w: Writer) -> None:
        w.out += _real(value, _F32, "float")

    def unpack(self, r: Reader) -> float:
        value: float = _F32.unpack(r.take(4, "float"))[0]
        return value


class Double(XDRType):
    """An IEEE double-precision float."""

    @property
    def min_size(self) -> int:
        return 8

    def pack(self, value: Any, w: Writer) -> None:
        w.out += _real(value, _F64, "double")

    def unpack(self, r: Reader) -> float:
        value: float = _F64.unpack(r.take(8, "double"))[0]
        return value


def _octets(value: Any, noun: str) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise XDREncodeError(f"{noun} expects bytes, not {type(value).__name__}")
    return bytes(value)


class FixedOpaque(XDRType):
    """``opaque name[n]``: exactly ``n`` bytes, padded to a multiple of 4."""

    def __init__(self, size: int) -> None:
        if not 0 <= size <= UINT32_MAX:
            raise ValueError(f"fixed opaque size must be in 0..{UINT32_MAX}, not {size}")
        self.size = size

    @property
    def min_size(self) -> int:
        return self.size + padding(self.size)

    def pack(self, value: Any, w: Writer) -> None:
        data = _octets(value, f"opaque[{self.size}]")
        if len(data) != self.size:
            raise XDREncodeError(f"opaque[{self.size}] needs {self.size} bytes, "
                                 f"not {len(data)}")
        w.out += data
        w.out += _ZEROS[:padding(self.size)]

    def unpack(self, r: Reader) -> bytes:
        data = r.take(self.size, f"opaque[{self.size}]")
        r.skip_padding(self.size)
        return data


class Opaque(XDRType):
    """``opaque name<m>``: a length, then that many bytes, padded.

    Args:
        max_length: the declared maximum, or None for the reader's default.
    """

    noun = "opaque"

    def __init__(self, max_length: int | None = None) -> None:
        if max_length is not None and not 0 <= max_length <= UINT32_MAX:
            raise ValueError(f"maximum length must be in 0..{UINT32_MAX}, not {max_length}")
        self.max_length = max_length

    def pack(self, value: Any, w: Writer) -> None:
        self._pack_bytes(_octets(value, self.noun), w)

    def _pack_bytes(self, data: bytes, w: Writer) -> None:
        w.limit(self.max_length, len(data), self.noun)
        w.out += _U32.pack(len(data))
        w.out += data
        w.out += _ZEROS[:padding(len(data))]

    def unpack(self, r: Reader) -> Any:
        size = r.length(self.max_length, self.noun)
        data = r.take(size, self.noun)
        r.skip_padding(size)
        return data


class String(Opaque):
    """``string name<m>``: like opaque, as a ``str``; the maximum counts bytes.

    Args:
        max_length: the declared maximum in bytes, or None for the reader's default.
        encoding: how text maps to bytes (UTF-8, with ``surrogateescape`` so that any
            byte string decodes and encodes back unchanged).
    """

    noun = "string"

    def __init__(self, max_length: int | None = None, encoding: str = "utf-8") -> None:
        super().__init__(max_length)
        self.encoding = encoding

    def pack(self, value: Any, w: Writer) -> None:
        if not isinstance(value, str):
            raise XDREncodeError(f"string expects a str, not {type(value).__name__}")
        try:
            data = value.encode(self.encoding, "surrogateescape")
        except UnicodeEncodeError as exc:
            raise XDREncodeError(f"string not encodable as {self.encoding}: {exc.reason}"
                                 ) from None
        self._pack_bytes(data, w)

    def unpack(self, r: Reader) -> str:
        data: bytes = super().unpack(r)
        try:
            return data.decode(self.encoding, "surrogateescape")
        except UnicodeDecodeError as exc:  # only for encodings without the handler's help
            raise XDRDecodeError(f"string not decodable as {self.encoding}: {exc.reason}"
                                 ) from None


class Void(XDRType):
    """No data: ``None``."""

    @property
    def min_size(self) -> int:
        return 0

    def pack(self, value: Any, w: Writer) -> None:
        if value is not None:
            raise XDREncodeError(f"void expects None, not {type(value).__name__}")

    def unpack(self, r: Reader) -> None:
        return None
