"""The key-value service's commands on data: strings, keys and lists.

Role: GET, SET and the other string commands; DEL, EXISTS, KEYS, SCAN, EXPIRE, TTL and
the other key commands; LPUSH, LPOP, LRANGE and the other list commands. Each function is
registered in :data:`~handlers.services.kv.table.COMMANDS` by ``@_command`` when this
module is imported; the package imports the command modules in the order ``COMMAND``
lists them.

Must not import ``socket``, ``selectors``, ``threading`` or ``os``; imports the
connection only for type checking.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from typing import TYPE_CHECKING, Final

from handlers.framers.resp import NULL_ARRAY, NULL_RESP3, OK, encode_bulk, encode_integer

from .glob import compile_glob
from .table import (
    _ALL_KEYS,
    _ONE_KEY,
    E_OVERFLOW,
    E_SYNTAX,
    E_WRONGTYPE,
    INT64_MAX,
    INT64_MIN,
    CommandError,
    _arity_error,
    _array,
    _c_string,
    _command,
    _list,
    _parse_int,
    _string,
    _type_name,
)

if TYPE_CHECKING:
    from .connection import KVProtocol

__all__: list[str] = []  # the commands are reached through COMMANDS


# strings


@_command("get", 2, "readonly fast", "string", "Returns the string value of a key.", keys=_ONE_KEY)
def _get(c: KVProtocol, a: list[bytes]) -> bytes:
    value = c.store.get(a[1])
    if value is None:
        return c.null
    if type(value) is not bytes:
        raise CommandError(E_WRONGTYPE)
    return b"$%d\r\n%b\r\n" % (len(value), value)


def _unix_ms() -> int:
    """The Unix time in milliseconds: Redis's base for relative expiry times."""
    return time.time_ns() // 1_000_000


def _expire_seconds(raw: bytes, option: bytes, command: str) -> float:
    """The delay (seconds from now) SET's ``EX``/``PX``/``EXAT``/``PXAT`` ``raw`` asks for.

    Valid as in Redis: positive; in seconds at most INT64_MAX // 1000; and a relative
    time must not overflow a 64-bit count of Unix milliseconds once now is added.

    Raises:
        CommandError: not an integer, or an invalid time.
    """
    value = _parse_int(raw)
    seconds = option[0] == 69  # EX, EXAT
    if value <= 0 or (seconds and value > INT64_MAX // 1000):
        raise CommandError(f"ERR invalid expire time in '{command}' command")
    ms = value * 1000 if seconds else value
    now_ms = _unix_ms()
    if option.endswith(b"AT"):
        return (ms - now_ms) / 1000
    if ms + now_ms > INT64_MAX:
        raise CommandError(f"ERR invalid expire time in '{command}' command")
    return ms / 1000


@_command("set", -3, "write", "string", "Sets the string value of a key.", keys=_ONE_KEY)
def _set(c: KVProtocol, a: list[bytes]) -> bytes:
    store = c.store
    if len(a) == 3:
        store.set(a[1], a[2])
        return OK
    # Redis's rules: all options are parsed before any value is checked; an option may
    # repeat (the last time wins) but not meet a conflicting one (NX/XX, KEEPTTL/EX...)
    condition = expiry = b""
    get = keep_ttl = False
    expire_arg = b""
    i = 3
    while i < len(a):
        option = a[i].upper()
        if option in (b"NX", b"XX") and condition in (b"", option):
            condition = option
        elif option == b"GET":
            get = True
        elif option == b"KEEPTTL" and not expiry:
            keep_ttl = True
        elif option in (b"EX", b"PX", b"EXAT", b"PXAT") and expiry in (b"", option) \
                and not keep_ttl and i + 1 < len(a):
            expiry = option
            i += 1
            expire_arg = a[i]
        else:
            raise CommandError(E_SYNTAX)
        i += 1
    deadline = store.time() + _expire_seconds(expire_arg, expiry, "set") if expiry else None
    key = a[1]
    if get:
        old = _string(c, key)
        exists = old is not None
    else:
        old = None
        exists = store.get(key) is not None
    if (condition == b"NX" and exists) or (condition == b"XX" and not exists):
        return c.null if old is None else encode_bulk(old)
    if deadline is not None and deadline <= store.time():
        store.delete(key)  # EXAT/PXAT in the past: set, and gone at once
        store.touch(key)  # a change even where there was no key (WATCH)
    else:
        store.set(key, a[2], deadline=deadline, keep_ttl=keep_ttl)
    if get:
        return c.null if old is None else encode_bulk(old)
    return OK


@_command("getdel", 2, "write fast", "string",
          "Returns the string value of a key after deleting the key.", keys=_ONE_KEY)
def _getdel(c: KVProtocol, a: list[bytes]) -> bytes:
    value = _string(c, a[1])
    if value is None:
        return c.null
    c.store.delete(a[1])
    return encode_bulk(value)


@_command("mget", -2, "readonly fast", "string",
          "Atomically returns the string values of one or more keys.", keys=_ALL_KEYS)
def _mget(c: KVProtocol, a: list[bytes]) -> bytes:
    get = c.store.get
    null = c.null
    parts = [b"*%d\r\n" % (len(a) - 1)]
    for key in a[1:]:
        value = get(key)
        parts.append(encode_bulk(value) if isinstance(value, bytes) else null)
    return b"".join(parts)


@_command("mset", -3, "write", "string",
          "Atomically creates or modifies the string values of one or more keys.", keys=(1, -1, 2))
def _mset(c: KVProtocol, a: list[bytes]) -> bytes:
    if len(a) % 2 == 0:
        return _arity_error("mset")
    store = c.store
    for i in range(1, len(a), 2):
        store.set(a[i], a[i + 1])
    return OK


@_command("append", 3, "write fast", "string",
          "Appends a string to the value of a key.",
          keys=_ONE_KEY)
def _append(c: KVProtocol, a: list[bytes]) -> bytes:
    old = _string(c, a[1])
    value = a[2] if old is None else old + a[2]
    c.store.set(a[1], value, keep_ttl=True)
    return encode_integer(len(value))


@_command("strlen", 2, "readonly fast", "string",
          "Returns the length of a string value.", keys=_ONE_KEY)
def _strlen(c: KVProtocol, a: list[bytes]) -> bytes:
    value = _string(c, a[1])
    return encode_integer(0 if value is None else len(value))


def _incr_by(c: KVProtocol, key: bytes, delta: int) -> bytes:
    old = _string(c, key)
    current = 0 if old is None else _parse_int(old)
    value = current + delta
    if not INT64_MIN <= value <= INT64_MAX:
        raise CommandError(E_OVERFLOW)
    c.store.set(key, b"%d" % value, keep_ttl=True)
    return b":%d\r\n" % value


@_command("incr", 2, "write fast", "string",
          "Increments the integer value of a key by one.", keys=_ONE_KEY)
def _incr(c: KVProtocol, a: list[bytes]) -> bytes:
    return _incr_by(c, a[1], 1)


@_command("decr", 2, "write fast", "string",
          "Decrements the integer value of a key by one.", keys=_ONE_KEY)
def _decr(c: KVProtocol, a: list[bytes]) -> bytes:
    return _incr_by(c, a[1], -1)


@_command("incrby", 3, "write fast", "string",
          "Increments the integer value of a key by a number.", keys=_ONE_KEY)
def _incrby(c: KVProtocol, a: list[bytes]) -> bytes:
    return _incr_by(c, a[1], _parse_int(a[2]))


@_command("decrby", 3, "write fast", "string",
          "Decrements a number from the integer value of a key.", keys=_ONE_KEY)
def _decrby(c: KVProtocol, a: list[bytes]) -> bytes:
    delta = _parse_int(a[2])
    if delta == INT64_MIN:
        raise CommandError("ERR decrement would overflow")
    return _incr_by(c, a[1], -delta)


# keys


@_command("del", -2, "write", "generic", "Deletes one or more keys.", keys=_ALL_KEYS)
def _del(c: KVProtocol, a: list[bytes]) -> bytes:
    delete = c.store.delete
    return b":%d\r\n" % sum(delete(key) for key in a[1:])


@_command("unlink", -2, "write fast", "generic", "Deletes one or more keys.", keys=_ALL_KEYS)
def _unlink(c: KVProtocol, a: list[bytes]) -> bytes:
    return _del(c, a)


@_command("exists", -2, "readonly fast", "generic",
          "Determines whether one or more keys exist.", keys=_ALL_KEYS)
def _exists(c: KVProtocol, a: list[bytes]) -> bytes:
    get = c.store.get
    return b":%d\r\n" % sum(get(key) is not None for key in a[1:])


@_command("type", 2, "readonly fast", "generic",
          "Determines the type of value stored at a key.", keys=_ONE_KEY)
def _type(c: KVProtocol, a: list[bytes]) -> bytes:
    value = c.store.get(a[1])
    if value is None:
        return b"+none\r\n"
    return b"+%b\r\n" % _type_name(value)


@_command("keys", 2, "readonly", "generic",
          "Returns all key names that match a pattern.")
def _keys(c: KVProtocol, a: list[bytes]) -> bytes:
    return _array(c.store.keys(a[1]))


_UINT64: Final = 2**64
_SPACES: Final = frozenset(b" \t\n\v\f\r")


def _parse_cursor(raw: bytes) -> int:
    """A SCAN cursor, read as redis-server reads one (C's ``strtoul`` in base 10, the
    argument ending at a NUL): an optional sign then digits, nothing before or after
    them, at most 2**64 - 1; ``-N`` wraps around to 2**64 - N; an empty one is 0.

    Raises:
        CommandError: not such a cursor.
    """
    text = _c_string(raw)
    if not text:
        return 0
    negative = text[0] == 45  # -
    digits = text[1:] if text[0] in (43, 45) else text  # + -
    if text[0] in _SPACES or not digits.isdigit():
        raise CommandError("ERR invalid cursor")
    digits = digits.lstrip(b"0")
    if len(digits) > 20 or int(digits or b"0") >= _UINT64:
        raise CommandError("ERR invalid cursor")
    value = int(digits or b"0")
    return (_UINT64 - value) % _UINT64 if negative else value


@_command("scan", -2, "readonly", "generic",
          "Iterates over the key names in the database.")
def _scan(c: KVProtocol, a: list[bytes]) -> bytes:
    cursor = _parse_cursor(a[1])
    count = 10
    match = None
    wanted = None
    for i in range(2, len(a), 2):  # Redis's order: each option checked as it comes
        option = a[i].lower()
        if i + 1 == len(a):
            raise CommandError(E_SYNTAX)
        if option == b"count":
            count = _parse_int(a[i + 1])
            if count < 1:
                raise CommandError(E_SYNTAX)
        elif option == b"match":
            match = None if a[i + 1] == b"*" else compile_glob(a[i + 1])
        elif option == b"type":
            wanted = a[i + 1].lower()
        else:
            raise CommandError(E_SYNTAX)
    store = c.store
    cursor, found = store.scan_index.scan(cursor, count, match)
    keys = []
    for key in found:
        value = store.get(key)  # deletes a key whose time has passed, as Redis does
        if value is not None and (wanted is None or _type_name(value) == wanted):
            keys.append(key)
    return b"*2\r\n" + encode_bulk(b"%d" % cursor) + _array(keys)


def _expire_generic(c: KVProtocol, a: list[bytes], scale: float, name: str) -> bytes:
    # as Redis does: the options first (the first unsupported one named), then the time
    flags = set()
    for raw in a[3:]:
        option = raw.upper()
        if option not in (b"NX", b"XX", b"GT", b"LT"):
            raise CommandError(b"ERR Unsupported option " + _c_string(raw))
        flags.add(option)
    if b"NX" in flags and flags & {b"XX", b"GT", b"LT"}:
        raise CommandError("ERR NX and XX, GT or LT options at the same time are not compatible")
    if b"GT" in flags and b"LT" in flags:
        raise CommandError("ERR GT and LT options at the same time are not compatible")
    amount = _parse_int(a[2])
    ms = amount
    if scale == 1.0:
        if not -(INT64_MAX // 1000) <= amount <= INT64_MAX // 1000:
            raise CommandError(f"ERR invalid expire time in '{name}' command")
        ms = amount * 1000
    if ms > INT64_MAX - _unix_ms():  # now plus the delay in Unix ms would overflow
        raise CommandError(f"ERR invalid expire time in '{name}' command")
    store = c.store
    key = a[1]
    if store.get(key) is None:
        return b":0\r\n"
    current = store.deadline(key)
    when = store.time() + ms / 1000
    if (
        (b"NX" in flags and current is not None)
        or (b"XX" in flags and current is None)
        or (b"GT" in flags and (current is None or when <= current))
        or (b"LT" in flags and current is not None and when >= current)
    ):
        return b":0\r\n"
    if amount <= 0:
        store.delete(key)
    else:
        store.set_deadline(key, when)
    return b":1\r\n"


@_command("expire", -3, "write fast", "generic",
          "Sets the expiration time of a key in seconds.", keys=_ONE_KEY)
def _expire(c: KVProtocol, a: list[bytes]) -> bytes:
    return _expire_generic(c, a, 1.0, "expire")


@_command("pexpire", -3, "write fast", "generic",
          "Sets the expiration time of a key in milliseconds.", keys=_ONE_KEY)
def _pexpire(c: KVProtocol, a: list[bytes]) -> bytes:
    return _expire_generic(c, a, 0.001, "pexpire")


def _ttl_ms(c: KVProtocol, key: bytes) -> int:
    store = c.store
    if store.get(key) is None:
        return -2
    when = store.deadline(key)
    if when is None:
        return -1
    return max(0, round((when - store.time()) * 1000))


@_command("ttl", 2, "readonly fast", "generic",
          "Returns the expiration time in seconds of a key.", keys=_ONE_KEY)
def _ttl(c: KVProtocol, a: list[bytes]) -> bytes:
    ms = _ttl_ms(c, a[1])
    return encode_integer(ms if ms < 0 else (ms + 500) // 1000)


@_command("pttl", 2, "readonly fast", "generic",
          "Returns the expiration time in milliseconds of a key.", keys=_ONE_KEY)
def _pttl(c: KVProtocol, a: list[bytes]) -> bytes:
    return encode_integer(_ttl_ms(c, a[1]))


@_command("persist", 2, "write fast", "generic",
          "Removes the expiration time of a key.", keys=_ONE_KEY)
def _persist(c: KVProtocol, a: list[bytes]) -> bytes:
    if c.store.get(a[1]) is None:
        return b":0\r\n"
    return b":1\r\n" if c.store.persist(a[1]) else b":0\r\n"


# lists


def _push(c: KVProtocol, a: list[bytes], left: bool) -> bytes:
    items = _list(c, a[1])
    if items is None:
        items = deque()
        c.store.set(a[1], items)
    if left:
        items.extendleft(a[2:])
    else:
        items.extend(a[2:])
    c.store.touch(a[1])
    return encode_integer(len(items))


@_command("lpush", -3, "write fast", "list",
          "Prepends one or more elements to a list.", keys=_ONE_KEY)
def _lpush(c: KVProtocol, a: list[bytes]) -> bytes:
    return _push(c, a, True)


@_command("rpush", -3, "write fast", "list",
          "Appends one or more elements to a list.", keys=_ONE_KEY)
def _rpush(c: KVProtocol, a: list[bytes]) -> bytes:
    return _push(c, a, False)


def _pop(c: KVProtocol, a: list[bytes], left: bool) -> bytes:
    if len(a) > 3:
        return _arity_error("lpop" if left else "rpop")
    count = None
    if len(a) == 3:
        try:
            count = _parse_int(a[2])
        except CommandError:
            count = -1  # Redis words a non-integer count the same way
        if count < 0:
            raise CommandError("ERR value is out of range, must be positive")
    items = _list(c, a[1])
    if items is None:
        return (NULL_RESP3 if c.resp3 else NULL_ARRAY) if count is not None else c.null
    popped = [items.popleft() if left else items.pop()
              for _ in range(min(len(items), 1 if count is None else count))]
    c.store.touch(a[1])  # even when none was popped (Redis)
    if not items:
        c.store.delete(a[1])
    if count is None:
        return encode_bulk(popped[0])
    return _array(popped)


@_command("lpop", -2, "write fast", "list",
          "Returns the first elements in a list after removing it.", keys=_ONE_KEY)
def _lpop(c: KVProtocol, a: list[bytes]) -> bytes:
    return _pop(c, a, True)


@_command("rpop", -2, "write fast", "list",
          "Returns and removes the last elements of a list.", keys=_ONE_KEY)
def _rpop(c: KVProtocol, a: list[bytes]) -> bytes:
    return _pop(c, a, False)


@_command("llen", 2, "readonly fast", "list", "Returns the length of a list.", keys=_ONE_KEY)
def _llen(c: KVProtocol, a: list[bytes]) -> bytes:
    items = _list(c, a[1])
    return encode_integer(0 if items is None else len(items))


@_command("lrange", 4, "readonly", "list", "Returns a range of elements from a list.",
          keys=_ONE_KEY)
def _lrange(c: KVProtocol, a: list[bytes]) -> bytes:
    start, stop = _parse_int(a[2]), _parse_int(a[3])
    items = _list(c, a[1])
    if items is None:
        return b"*0\r\n"
    n = len(items)
    start = max(0, start + n if start < 0 else start)
    stop = min(n - 1, stop + n if stop < 0 else stop)
    if start > stop:
        return b"*0\r\n"
    return _array(itertools.islice(items, start, stop + 1))
