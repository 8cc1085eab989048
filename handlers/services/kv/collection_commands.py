"""The key-value service's commands on hashes and sets.

Role: HSET, HMSET, HGET, HMGET, HDEL, HGETALL, HINCRBY, HEXISTS, HLEN; SADD, SREM,
SMEMBERS, SISMEMBER, SCARD. A hash is a ``dict`` of fields (it keeps their insertion
order), a set a ``set`` of members; both are changed in place, so each command that
changes one calls :meth:`~handlers.services.kv.store.KVStore.touch` (WATCH), and the
one that empties it deletes the key, as Redis does. Each function is registered in
:data:`~handlers.services.kv.table.COMMANDS` by ``@_command`` when this module is
imported.

Must not import ``socket``, ``selectors``, ``threading`` or ``os``; imports the
connection only for type checking.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from handlers.framers.resp import OK, encode_bulk, encode_integer, encode_map

from .store import Value
from .table import (
    _ONE_KEY,
    E_OVERFLOW,
    E_WRONGTYPE,
    INT64_MAX,
    INT64_MIN,
    CommandError,
    _array,
    _command,
    _parse_int,
)

if TYPE_CHECKING:
    from .connection import KVProtocol

__all__: list[str] = []  # the commands are reached through COMMANDS


def _collection(c: KVProtocol, key: bytes, kind: type) -> Value | None:
    """The value of ``key`` if it is a ``kind`` (dict or set), None if there is none."""
    value = c.store.get(key)
    if value is None or type(value) is kind:
        return value
    raise CommandError(E_WRONGTYPE)


def _has(c: KVProtocol, a: list[bytes], kind: type) -> bytes:
    """HEXISTS, SISMEMBER: whether ``a[2]`` is in the ``kind`` at ``a[1]``."""
    value = _collection(c, a[1], kind)
    return b":1\r\n" if value is not None and a[2] in value else b":0\r\n"


def _size(c: KVProtocol, a: list[bytes], kind: type) -> bytes:
    """HLEN, SCARD: the size of the ``kind`` at ``a[1]`` (0 when there is none)."""
    value = _collection(c, a[1], kind)
    return encode_integer(0 if value is None else len(value))


def _hash(c: KVProtocol, key: bytes) -> dict[bytes, bytes] | None:
    return cast("dict[bytes, bytes] | None", _collection(c, key, dict))


def _members(c: KVProtocol, key: bytes) -> set[bytes] | None:
    return cast("set[bytes] | None", _collection(c, key, set))


# hashes


def _hash_set(c: KVProtocol, a: list[bytes], name: str) -> int:
    """Set the field/value pairs of ``a[2:]``; how many fields are new."""
    if len(a) % 2:
        raise CommandError(f"ERR wrong number of arguments for '{name}' command")
    key = a[1]
    fields = _hash(c, key)
    if fields is None:
        fields = {}
        c.store.set(key, fields)
    before = len(fields)
    for i in range(2, len(a), 2):
        fields[a[i]] = a[i + 1]
    c.store.touch(key)
    return len(fields) - before


@_command("hset", -4, "write fast", "hash",
          "Creates or modifies the value of a field in a hash.", keys=_ONE_KEY)
def _hset(c: KVProtocol, a: list[bytes]) -> bytes:
    return encode_integer(_hash_set(c, a, "hset"))


@_command("hmset", -4, "write fast", "hash",
          "Sets the values of multiple fields.", keys=_ONE_KEY)
def _hmset(c: KVProtocol, a: list[bytes]) -> bytes:
    _hash_set(c, a, "hmset")
    return OK


@_command("hget", 3, "readonly fast", "hash",
          "Returns the value of a field in a hash.", keys=_ONE_KEY)
def _hget(c: KVProtocol, a: list[bytes]) -> bytes:
    fields = _hash(c, a[1])
    value = None if fields is None else fields.get(a[2])
    return c.null if value is None else encode_bulk(value)


@_command("hmget", -3, "readonly fast", "hash",
          "Returns the values of all fields in a hash.", keys=_ONE_KEY)
def _hmget(c: KVProtocol, a: list[bytes]) -> bytes:
    fields = _hash(c, a[1]) or {}
    null = c.null
    parts = [b"*%d\r\n" % (len(a) - 2)]
    for field in a[2:]:
        value = fields.get(field)
        parts.append(null if value is None else encode_bulk(value))
    return b"".join(parts)


@_command("hdel", -3, "write fast", "hash",
          "Deletes one or more fields and their values from a hash.", keys=_ONE_KEY)
def _hdel(c: KVProtocol, a: list[bytes]) -> bytes:
    key = a[1]
    fields = _hash(c, key)
    if fields is None:
        return b":0\r\n"
    deleted = 0
    for field in a[2:]:
        if fields.pop(field, None) is not None:
            deleted += 1
    if deleted:
        c.store.touch(key)
        if not fields:
            c.store.delete(key)
    return encode_integer(deleted)


@_command("hgetall", 2, "readonly", "hash",
          "Returns all fields and values in a hash.", keys=_ONE_KEY)
def _hgetall(c: KVProtocol, a: list[bytes]) -> bytes:
    fields = _hash(c, a[1]) or {}
    return encode_map([(encode_bulk(field), encode_bulk(value))
                       for field, value in fields.items()], resp3=c.resp3)


@_command("hincrby", 4, "write fast", "hash",
          "Increments the integer value of a field in a hash by a number.", keys=_ONE_KEY)
def _hincrby(c: KVProtocol, a: list[bytes]) -> bytes:
    key, field = a[1], a[2]
    delta = _parse_int(a[3])
    fields = _hash(c, key)
    old = None if fields is None else fields.get(field)
    current = 0
    if old is not None:
        try:
            current = _parse_int(old)
        except CommandError:
            raise CommandError("ERR hash value is not an integer") from None
    value = current + delta
    if not INT64_MIN <= value <= INT64_MAX:
        raise CommandError(E_OVERFLOW)
    if fields is None:
        fields = {}
        c.store.set(key, fields)
    fields[field] = b"%d" % value
    c.store.touch(key)
    return encode_integer(value)


@_command("hexists", 3, "readonly fast", "hash",
          "Determines whether a field exists in a hash.", keys=_ONE_KEY)
def _hexists(c: KVProtocol, a: list[bytes]) -> bytes:
    return _has(c, a, dict)


@_command("hlen", 2, "readonly fast", "hash",
          "Returns the number of fields in a hash.", keys=_ONE_KEY)
def _hlen(c: KVProtocol, a: list[bytes]) -> bytes:
    return _size(c, a, dict)


# sets


@_command("sadd", -3, "write fast", "set",
          "Adds one or more members to a set.", keys=_ONE_KEY)
def _sadd(c: KVProtocol, a: list[bytes]) -> bytes:
    key = a[1]
    members = _members(c, key)
    if members is None:
        members = set()
        c.store.set(key, members)
    before = len(members)
    members.update(a[2:])
    added = len(members) - before
    if added:
        c.store.touch(key)
    return encode_integer(added)


@_command("srem", -3, "write fast", "set",
          "Removes one or more members from a set.", keys=_ONE_KEY)
def _srem(c: KVProtocol, a: list[bytes]) -> bytes:
    key = a[1]
    members = _members(c, key)
    if members is None:
        return b":0\r\n"
    before = len(members)
    members.difference_update(a[2:])
    removed = before - len(members)
    if removed:
        c.store.touch(key)
        if not members:
            c.store.delete(key)
    return encode_integer(removed)


@_command("smembers", 2, "readonly", "set",
          "Returns all members of a set.", keys=_ONE_KEY)
def _smembers(c: KVProtocol, a: list[bytes]) -> bytes:
    members = _members(c, a[1]) or set()
    if c.resp3:
        return b"~%d\r\n" % len(members) + b"".join(encode_bulk(m) for m in members)
    return _array(members)


@_command("sismember", 3, "readonly fast", "set",
          "Determines whether a member belongs to a set.", keys=_ONE_KEY)
def _sismember(c: KVProtocol, a: list[bytes]) -> bytes:
    return _has(c, a, set)


@_command("scard", 2, "readonly fast", "set",
          "Returns the number of members in a set.", keys=_ONE_KEY)
def _scard(c: KVProtocol, a: list[bytes]) -> bytes:
    return _size(c, a, set)
