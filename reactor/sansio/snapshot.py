"""A snapshot of the connection table, row by row, for whoever looks at a live server.

The control socket's ``conns`` command is the first reader; a metrics endpoint or a
status page can take the same snapshot. A snapshot is taken only when someone asks:
nothing here runs on the reactor's per-request path, and rows keep no extra field for
it.

* :class:`ConnSnapshot` -- one row, frozen: its id, kind, addresses, state, age and
  idle time, bytes in and out, queued output, and the TLS and PROXY facts when the row
  has them (from its ``meta``); :meth:`ConnSnapshot.as_dict` for JSON.
* :class:`RowIds` -- small, stable ids for rows. A row has no id of its own (and
  ``id()`` is reused as soon as a row is freed, so an id read from one listing could
  name another connection by the time it is used); ids are handed out in the order
  rows are first seen and never reused.
* :func:`select_rows` -- a ``conns`` query: filter by state and peer network, sort,
  limit.
* :func:`format_address`, :func:`render_table` -- text for people: control characters
  escaped (a Unix path may hold a newline), never an empty line.

Socket-free: no sockets, selectors, threads or ``os``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Final

from .connection import ConnState, Row

__all__ = [
    "SORT_KEYS",
    "ConnSnapshot",
    "RowIds",
    "format_address",
    "parse_state",
    "render_table",
    "select_rows",
    "snapshot_row",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# how ``--sort`` orders rows: the biggest (oldest, longest idle) first
SORT_KEYS: Final[dict[str, Callable[[ConnSnapshot], float]]] = {
    "age": lambda r: r.age,
    "idle": lambda r: r.idle,
    "bytes_in": lambda r: r.bytes_in,
    "bytes_out": lambda r: r.bytes_out,
    "queued": lambda r: r.queued,
}

_ESCAPES: Final = {c: f"\\x{c:02x}" for c in range(32)} | {
    ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", 127: "\\x7f"}


def printable(text: str) -> str:
    """``text`` with control characters escaped, so it stays on one line."""
    return text.translate(_ESCAPES)


def format_address(address: Any) -> str:
    """An address as people write it: ``host:port``, ``[v6]:port``, a Unix path,
    ``@name`` for the abstract namespace, ``-`` when there is none."""
    if address is None or address in ("", b""):
        return "-"
    if isinstance(address, bytes):
        address = address.decode(errors="backslashreplace")
    if isinstance(address, str):
        return printable("@" + address[1:] if address.startswith("\0") else address)
    if isinstance(address, tuple) and len(address) >= 2:
        host = str(address[0])
        return printable(f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}")
    return printable(str(address))


def parse_state(text: str) -> ConnState:
    """A state from its name or value, in any case: ``open``, ``READ_CLOSED``,
    ``read-closed``.

    Raises:
        ValueError: no state has that name.
    """
    wanted = text.strip().lower().replace("_", "-")
    for state in ConnState:
        if state.value == wanted:
            return state
    names = ", ".join(state.value for state in ConnState)
    raise ValueError(f"unknown state '{printable(text)}'; states: {names}")


@dataclass(frozen=True, slots=True)
class ConnSnapshot:
    """One connection-table row as it was when the snapshot was taken.

    Attributes:
        id: the row's id (see :class:`RowIds`).
        kind: the transport kind (``tcp``, ``unix``, ``udp`` ...).
        peer: the peer's address, as text (the client's, behind a PROXY header).
        local: the local address, as text.
        state: the lifecycle state's value (``open``, ``read-closed`` ...).
        age: seconds since the row was made.
        idle: seconds since bytes last moved.
        bytes_in: bytes received.
        bytes_out: bytes sent.
        queued: bytes queued for writing.
        role: ``served``, or ``control`` for a control-socket client.
        listener: the address of the listener that accepted it (``-`` if none).
        tls: the TLS session's description, when the row carries one.
        proxy: the proxy's address and the header's version, when the connection
            came through a PROXY header.
        peer_ip: the peer's IP address for filtering (None for other families).
    """

    id: int
    kind: str
    peer: str
    local: str
    state: str
    age: float
    idle: float
    bytes_in: int
    bytes_out: int
    queued: int
    role: str = "served"
    listener: str = "-"
    tls: str | None = None
    proxy: str | None = None
    peer_ip: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as plain JSON-ready values (times rounded to milliseconds)."""
        data = {name: getattr(self, name) for name in _PUBLIC_FIELDS}
        data["age"] = round(self.age, 3)
        data["idle"] = round(self.idle, 3)
        return data


# what as_dict() shows (a plain loop: dataclasses.asdict deep-copies every value)
_PUBLIC_FIELDS: Final = tuple(f.name for f in fields(ConnSnapshot) if f.name != "peer_ip")


def _ip_of(address: Any) -> str | None:
    if isinstance(address, tuple) and address and isinstance(address[0], str):
        try:
            return str(ipaddress.ip_address(address[0].split("%", 1)[0]))
        except ValueError:
            return None
    return None


def _safe(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except Exception:  # a row tearing down may not answer; the snapshot goes on
        return None


def snapshot_row(row: Row, ident: int, now: float, *, role: str = "served",
                 listener: str = "-") -> ConnSnapshot:
    """Read ``row`` into a :class:`ConnSnapshot` (``now`` on the row's clock)."""
    meta = row.meta or {}
    tls = meta.get("tls")
    header = meta.get("proxy_header")
    proxy = None
    if "proxy" in meta:
        version = getattr(header, "version", None)
        proxy = format_address(meta["proxy"]) + (f" v{version}" if version else "")
    describe = getattr(tls, "describe", None)
    return ConnSnapshot(
        id=ident,
        kind=str(_safe(lambda: row.kind)),
        peer=format_address(row.peername),
        local=format_address(_safe(lambda: row.sockname)),
        state=row.state.value,
        age=max(0.0, now - row.created),
        idle=max(0.0, now - row.last_activity),
        bytes_in=row.bytes_in,
        bytes_out=row.bytes_out,
        queued=int(_safe(lambda: row.write_buffer_size) or 0),
        role=role,
        listener=listener,
        tls=printable(str(describe())) if callable(describe) else None,
        proxy=proxy,
        peer_ip=_ip_of(row.peername),
    )


class RowIds:
    """Ids for rows: 1, 2, 3 ... in the order rows are first seen, never reused.

    Holds the rows it has named until :meth:`retain` drops those that left the table;
    whoever hands out ids calls it with the live rows each time it looks.
    """

    def __init__(self) -> None:
        self._ids: dict[Row, int] = {}
        self._rows: dict[int, Row] = {}
        self._next = 1

    def of(self, row: Row) -> int:
        """The id of ``row`` (a new one the first time)."""
        ident = self._ids.get(row)
        if ident is None:
            ident = self._ids[row] = self._next
            self._rows[ident] = row
            self._next += 1
        return ident

    def find(self, ident: int) -> Row | None:
        """The row named ``ident``, if it was named and not dropped."""
        return self._rows.get(ident)

    def retain(self, live: Iterable[Row]) -> None:
        """Forget every row not in ``live``."""
        keep = set(live)
        for row in [r for r in self._ids if r not in keep]:
            del self._rows[self._ids.pop(row)]

    def __len__(self) -> int:
        return len(self._ids)


def select_rows(
    rows: Iterable[ConnSnapshot], *, state: ConnState | None = None,
    peer: Network | None = None, sort: str | None = None, limit: int | None = None,
) -> list[ConnSnapshot]:
    """The rows a ``conns`` query asks for, in id order unless ``sort`` names a key of
    :data:`SORT_KEYS` (then the biggest first, ties by id).

    Raises:
        ValueError: ``sort`` is not a key of :data:`SORT_KEYS`.
    """
    chosen = [r for r in rows if state is None or r.state == state.value]
    if peer is not None:
        chosen = [r for r in chosen if r.peer_ip is not None and _in(r.peer_ip, peer)]
    chosen.sort(key=lambda r: r.id)
    if sort is not None:
        if sort not in SORT_KEYS:
            raise ValueError(f"unknown sort key {sort!r}; choose {', '.join(SORT_KEYS)}")
        chosen.sort(key=SORT_KEYS[sort], reverse=True)
    return chosen if limit is None else chosen[:limit]


def _in(ip: str, network: Network) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:10.0.0.1 is in 10.0.0.0/8
    if address.version != network.version and mapped is not None:
        address = mapped
    return address.version == network.version and address in network


def _seconds(value: float) -> str:
    if value < 60:
        return f"{value:.1f}s"
    if value < 3600:
        return f"{int(value // 60)}m{int(value % 60):02d}s"
    return f"{int(value // 3600)}h{int(value % 3600 // 60):02d}m"


COLUMNS: Final[Sequence[tuple[str, str]]] = (
    ("ID", "id"), ("KIND", "kind"), ("PEER", "peer"), ("LOCAL", "local"),
    ("STATE", "state"), ("AGE", "age"), ("IDLE", "idle"), ("IN", "bytes_in"),
    ("OUT", "bytes_out"), ("QUEUED", "queued"),
)
_NUMERIC: Final = frozenset({"id", "age", "idle", "bytes_in", "bytes_out", "queued"})


def _cell(key: str, value: Any) -> str:
    if key in ("age", "idle"):
        return _seconds(float(value))
    return printable(str(value))


def render_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Rows (as :meth:`ConnSnapshot.as_dict` gives them) as aligned text lines: a
    header, one line per row, then the TLS, PROXY and role facts where present."""
    cells = [[_cell(key, row.get(key, "")) for _, key in COLUMNS] for row in rows]
    widths = [max([len(title)] + [len(line[i]) for line in cells])
              for i, (title, _) in enumerate(COLUMNS)]

    def line(values: Sequence[str]) -> str:
        out = []
        for (_, key), width, value in zip(COLUMNS, widths, values, strict=True):
            out.append(value.rjust(width) if key in _NUMERIC else value.ljust(width))
        return "  ".join(out).rstrip()

    lines = [line([title for title, _ in COLUMNS])]
    for row, values in zip(rows, cells, strict=True):
        extras = [f"{name}={printable(str(row[name]))}" for name in ("tls", "proxy")
                  if row.get(name)]
        if row.get("role", "served") != "served":
            extras.insert(0, f"role={row['role']}")
        lines.append(line(values) + ("  " + " ".join(extras) if extras else ""))
    if not rows:
        lines.append("(no connections)")
    return lines
