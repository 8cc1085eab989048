"""A line-based chat service with rooms: :class:`ChatServer` and :class:`ChatHandler`.

Clients speak UTF-8 lines ending in ``\\n`` (a ``\\r`` before it is ignored, so telnet
and netcat both work). A line starting with ``/`` is a command; any other non-empty
line is a message, sent to every other member of the sender's room as
``<nick> text``. ``//text`` sends a message that starts with ``/``.

Commands and replies (``* `` starts a notice, ``! `` an error; the connection stays
open after an error unless said otherwise)::

    /join ROOM    * you are now in ROOM (N members)      ! usage: /join ROOM
                  ! invalid room name ...                ! you are already in ROOM
    /nick NAME    * you are now known as NAME            ! usage: /nick NAME
                  ! invalid nick ...                     ! nick NAME is taken
    /who          * in ROOM: nick1, nick2, ...
    /quit [TEXT]  * bye   (then the server closes the connection)
    /other        ! unknown command /other; commands: ...
    (long line)   ! line too long (max N bytes); ignored

The room hears ``* NICK joined``, ``* NICK left``, ``* OLD is now known as NEW`` and
``* NICK was disconnected (...)``.

Slow readers: a member whose unsent output (the transport's write buffer) would pass
``max_unsent`` bytes is disconnected at once (queued output dropped), the reason is
logged, and the room is told. Nobody waits for a slow member and the server holds at
most ``max_unsent`` bytes of output per member.

Socket-free: must not import socket, selectors, threading or os.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import ClassVar, Final

from handlers.framers.lines import LineHandler, LineTooLong
from reactor.sansio.words import counted

__all__ = ["ChatHandler", "ChatServer", "ChatStatistics", "default_server"]

# the logger keeps its name from before the move to services/ (log settings use it)
logger = logging.getLogger("handlers.chat")

DEFAULT_ROOM: Final = "lobby"
DEFAULT_MAX_UNSENT: Final = 256 * 1024
DEFAULT_MAX_LINE_LENGTH: Final = 4096
MAX_NAME_LENGTH: Final = 32
_NAME: Final = re.compile(r"[\w-]+")
COMMANDS: Final = "/join ROOM, /nick NAME, /who, /quit"


@dataclass(frozen=True)
class ChatStatistics:
    """A snapshot of a :class:`ChatServer`.

    Attributes:
        members: connected members.
        rooms: rooms with at least one member.
        messages: messages relayed (each counted once, not per recipient).
        slow_disconnects: members disconnected for not reading.
        peak_unsent: the largest write buffer seen right after a delivery, in bytes.
    """

    members: int
    rooms: int
    messages: int
    slow_disconnects: int
    peak_unsent: int


def _valid_name(name: str) -> bool:
    return len(name) <= MAX_NAME_LENGTH and _NAME.fullmatch(name) is not None


class ChatServer:
    """The shared state of one chat service: its rooms and nicknames.

    Call the server to get a new :class:`ChatHandler`, so the server itself is the
    protocol factory: ``reactor.listen_tcp("127.0.0.1", 0, ChatServer())``.

    Args:
        default_room: the room new members join.
        max_unsent: the most bytes of unsent output a member may have queued; past
            that the member is disconnected as too slow.
        max_line_length: the longest line accepted from a member.
        request_timeout: seconds a member has to finish a line once its first bytes
            arrived (None: no limit); a member that trickles a line more slowly is
            disconnected (see :class:`~handlers.lines.LineHandler`).

    Raises:
        ValueError: a bad room name or limit.
    """

    def __init__(
        self,
        *,
        default_room: str = DEFAULT_ROOM,
        max_unsent: int = DEFAULT_MAX_UNSENT,
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
        request_timeout: float | None = None,
    ) -> None:
        if not _valid_name(default_room):
            raise ValueError(f"invalid room name {default_room!r}")
        if max_unsent <= 0 or max_line_length <= 0:
            raise ValueError("max_unsent and max_line_length must be positive")
        if request_timeout is not None and not request_timeout > 0:
            raise ValueError(f"request_timeout must be positive or None, not "
                             f"{request_timeout!r}")
        self.default_room = default_room
        self.max_unsent = max_unsent
        self.max_line_length = max_line_length
        self.request_timeout = request_timeout
        self.rooms: dict[str, dict[ChatHandler, None]] = {}
        self.nicks: dict[str, ChatHandler] = {}
        self._guests = 0
        self._messages = 0
        self._slow = 0
        self._peak_unsent = 0

    def __call__(self) -> ChatHandler:
        return ChatHandler(self)

    def statistics(self) -> ChatStatistics:
        """A snapshot of the server's counters."""
        return ChatStatistics(
            members=len(self.nicks),
            rooms=len(self.rooms),
            messages=self._messages,
            slow_disconnects=self._slow,
            peak_unsent=self._peak_unsent,
        )

    def members(self, room: str) -> list[str]:
        """The nicks in ``room``, in the order they joined."""
        return [member.nick for member in self.rooms.get(room, ())]

    # -- membership -------------------------------------------------------------------

    def _guest_nick(self) -> str:
        while True:
            self._guests += 1
            nick = f"guest{self._guests}"
            if nick.casefold() not in self.nicks:
                return nick

    def _enter(self, member: ChatHandler) -> None:
        member.nick = self._guest_nick()
        self.nicks[member.nick.casefold()] = member
        self._join(member, self.default_room)

    def _join(self, member: ChatHandler, room: str) -> None:
        if member.room is not None:
            self._leave_room(member, f"* {member.nick} left")
        self.broadcast(room, f"* {member.nick} joined")
        self.rooms.setdefault(room, {})[member] = None
        member.room = room

    def _leave_room(self, member: ChatHandler, notice: str) -> None:
        room = member.room
        if room is None:
            return
        member.room = None
        members = self.rooms.get(room)
        if members is not None:
            members.pop(member, None)
            if not members:
                del self.rooms[room]
        self.broadcast(room, notice)

    def _remove(self, member: ChatHandler, notice: str) -> None:
        """Take ``member`` out of its room and the nick table; tell the room."""
        if self.nicks.get(member.nick.casefold()) is member:
            del self.nicks[member.nick.casefold()]
        self._leave_room(member, notice)

    def _rename(self, member: ChatHandler, nick: str) -> str | None:
        key = nick.casefold()
        owner = self.nicks.get(key)
        if owner is not None and owner is not member:
            return f"! nick {nick} is taken"
        old = member.nick
        if nick == old:
            return f"! you are already {nick}"
        del self.nicks[old.casefold()]
        self.nicks[key] = member
        member.nick = nick
        if member.room is not None:
            self.broadcast(member.room, f"* {old} is now known as {nick}", exclude=member)
        return None

    # -- delivery ---------------------------------------------------------------------

    def broadcast(self, room: str, text: str, exclude: ChatHandler | None = None) -> None:
        """Send one line to every member of ``room`` except ``exclude``."""
        members = self.rooms.get(room)
        if not members:
            return
        payload = text.encode("utf-8", "replace") + b"\n"
        for member in tuple(members):
            if member is not exclude and member.room == room:
                self.deliver(member, payload)

    def relay(self, sender: ChatHandler, text: str) -> None:
        """Send ``sender``'s message to the rest of its room."""
        if sender.room is None:
            return
        self._messages += 1
        self.broadcast(sender.room, f"<{sender.nick}> {text}", exclude=sender)

    def deliver(self, member: ChatHandler, payload: bytes) -> None:
        """Queue ``payload`` for ``member``, or disconnect it if it is too far behind."""
        unsent = member.write_buffer_size
        if unsent + len(payload) > self.max_unsent:
            self._slow += 1
            # leave first: some transports call connection_lost at once on abort
            self._remove(member, f"* {member.nick} was disconnected (not reading)")
            member.disconnect(f"too slow: {unsent} bytes unsent, the limit is "
                              f"max_unsent={self.max_unsent}", abort=True)
            return
        if member.send(payload):
            unsent = member.write_buffer_size
            self._peak_unsent = max(self._peak_unsent, unsent)


_default: ChatServer | None = None


def default_server() -> ChatServer:
    """The process-wide :class:`ChatServer` that ``ChatHandler()`` joins when given none.

    So the class itself is a usable protocol factory (``reactor serve chat``); make
    your own :class:`ChatServer` for separate chats or other limits.
    """
    global _default
    if _default is None:
        _default = ChatServer()
    return _default


class ChatHandler(LineHandler):
    """One chat member's connection; made by :class:`ChatServer` (or ``ChatHandler()``,
    which joins :func:`default_server`).

    Attributes:
        server: the shared :class:`ChatServer`.
        nick: the member's nickname (``guestN`` until ``/nick``).
        room: the member's room, or None once it left.
    """

    __slots__ = ("nick", "room", "server")

    logger: ClassVar[logging.Logger] = logger

    def __init__(self, server: ChatServer | None = None) -> None:
        if server is None:
            server = default_server()
        super().__init__(delimiter=b"\n", max_line_length=server.max_line_length,
                         request_timeout=server.request_timeout)
        self.server = server
        self.nick = ""
        self.room: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.server._enter(self)
        room = self.room
        self.reply(f"* welcome, you are {self.nick} in {room}; commands: {COMMANDS}; "
                   f"other lines are messages to the room")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.room is not None:
            self.server._remove(self, f"* {self.nick} left")
        super().connection_lost(exc)

    def reply(self, text: str) -> None:
        """Send one line of text to this member."""
        self.server.deliver(self, text.encode("utf-8", "replace") + b"\n")

    def line_too_long(self, exc: LineTooLong) -> bool:
        self.logger.debug("%s: %s", self.describe(), exc)
        self.reply(f"! line too long (max {exc.limit} bytes); ignored")
        return True

    def line_received(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace")
        if text.endswith("\r"):
            text = text[:-1]
        if not text.strip():
            return
        if text.startswith("//"):
            self.server.relay(self, text[1:])
        elif text.startswith("/"):
            self.command(text[1:])
        else:
            self.server.relay(self, text)

    def command(self, text: str) -> None:
        """Run one command line (without its leading ``/``)."""
        name, _, arg = text.strip().partition(" ")
        arg = arg.strip()
        name = name.lower()
        if name == "join":
            self._join(arg)
        elif name == "nick":
            self._nick(arg)
        elif name == "who":
            members = self.server.members(self.room) if self.room is not None else []
            self.reply(f"* in {self.room}: {', '.join(members)}")
        elif name == "quit":
            self._quit(arg)
        else:
            self.reply(f"! unknown command /{name}; commands: {COMMANDS}")

    def _join(self, room: str) -> None:
        if not room or " " in room:
            self.reply("! usage: /join ROOM")
        elif not _valid_name(room):
            self.reply(f"! invalid room name {room!r}: 1 to {MAX_NAME_LENGTH} letters, "
                       f"digits, '_' or '-'")
        elif room == self.room:
            self.reply(f"! you are already in {room}")
        else:
            self.server._join(self, room)
            members = counted(len(self.server.members(room)), "member")
            self.reply(f"* you are now in {room} ({members})")

    def _nick(self, nick: str) -> None:
        if not nick or " " in nick:
            self.reply("! usage: /nick NAME")
        elif not _valid_name(nick):
            self.reply(f"! invalid nick {nick!r}: 1 to {MAX_NAME_LENGTH} letters, "
                       f"digits, '_' or '-'")
        else:
            error = self.server._rename(self, nick)
            self.reply(error if error is not None else f"* you are now known as {nick}")

    def _quit(self, message: str) -> None:
        notice = f"* {self.nick} left" + (f" ({message})" if message else "")
        self.server._remove(self, notice)
        self.reply("* bye")
        self.close_when_done()
