"""handlers.services.chat: rooms, commands and slow readers, in memory and over loopback."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from handlerkit import DEADLINE, LOOPS, LineClient, serve_tcp

from handlers.services import chat
from handlers.services.chat import ChatHandler, ChatServer
from reactor.testing import ProtocolPair


class Member(asyncio.Protocol):
    """A client that collects the lines it receives."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.lines: list[str] = []
        self.lost = False

    def data_received(self, data: bytes) -> None:
        self.buf += data
        *lines, rest = self.buf.split(b"\n")
        self.lines += [line.decode() for line in lines]
        self.buf = bytearray(rest)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True

    def take(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


class Chat:
    """Several in-memory members of one ChatServer."""

    def __init__(self, **options: int) -> None:
        self.server = ChatServer(**options)  # type: ignore[arg-type]
        self.pairs: list[ProtocolPair] = []

    def join(self) -> tuple[Member, ProtocolPair]:
        member = Member()
        pair = ProtocolPair(member, self.server())
        self.pairs.append(pair)
        self.pump()
        return member, pair

    def say(self, pair: ProtocolPair, text: str | bytes) -> None:
        data = text if isinstance(text, bytes) else text.encode() + b"\n"
        pair.client_transport.write(data)
        self.pump()

    def pump(self) -> None:
        while any([pair.pump() for pair in self.pairs]):
            pass


@pytest.fixture
def room() -> Chat:
    return Chat()


def test_welcome_and_join_notice(room: Chat) -> None:
    alice, _ = room.join()
    assert alice.take() == [
        "* welcome, you are guest1 in lobby; commands: /join ROOM, /nick NAME, /who, "
        "/quit; other lines are messages to the room"]
    bob, _ = room.join()
    assert bob.take()[0].startswith("* welcome, you are guest2 in lobby")
    assert alice.take() == ["* guest2 joined"]


def test_messages_go_to_the_others_in_the_room(room: Chat) -> None:
    alice, a = room.join()
    bob, _ = room.join()
    carol, c = room.join()
    room.say(c, "/join elsewhere")
    for m in (alice, bob, carol):
        m.take()
    room.say(a, "hello, world")
    assert bob.take() == ["<guest1> hello, world"]
    assert alice.take() == []  # not echoed to the sender
    assert carol.take() == []  # another room
    assert room.server.statistics().messages == 1


def test_nick(room: Chat) -> None:
    alice, a = room.join()
    bob, b = room.join()
    alice.take()
    bob.take()
    room.say(a, "/nick Alice")
    assert alice.take() == ["* you are now known as Alice"]
    assert bob.take() == ["* guest1 is now known as Alice"]
    room.say(b, "/nick alice")
    assert bob.take() == ["! nick alice is taken"]
    room.say(b, "/nick bad!name")
    assert bob.take() == [
        "! invalid nick 'bad!name': 1 to 32 letters, digits, '_' or '-'"]
    room.say(b, "/nick " + "b" * 33)
    assert bob.take()[0].startswith("! invalid nick")
    room.say(b, "/nick")
    room.say(b, "/nick two words")
    assert bob.take() == ["! usage: /nick NAME", "! usage: /nick NAME"]
    room.say(a, "/nick Alice")
    assert alice.take() == ["! you are already Alice"]
    room.say(a, "hi")
    assert bob.take() == ["<Alice> hi"]


def test_join_and_who(room: Chat) -> None:
    alice, a = room.join()
    bob, b = room.join()
    room.say(a, "/nick alice")
    room.say(b, "/nick bob")
    alice.take()
    bob.take()
    room.say(b, "/who")
    assert bob.take() == ["* in lobby: alice, bob"]
    room.say(b, "/join dev")
    assert bob.take() == ["* you are now in dev (1 member)"]
    assert alice.take() == ["* bob left"]
    room.say(a, "/JOIN dev")  # command names are case-insensitive
    assert alice.take() == ["* you are now in dev (2 members)"]
    assert bob.take() == ["* alice joined"]
    room.say(a, "/join dev")
    assert alice.take() == ["! you are already in dev"]
    room.say(a, "/join")
    room.say(a, "/join a b")
    room.say(a, "/join no/slash")
    assert alice.take() == [
        "! usage: /join ROOM", "! usage: /join ROOM",
        "! invalid room name 'no/slash': 1 to 32 letters, digits, '_' or '-'"]
    assert "lobby" not in room.server.rooms  # empty rooms are dropped
    assert room.server.members("dev") == ["bob", "alice"]


def test_quit(room: Chat) -> None:
    alice, a = room.join()
    bob, _ = room.join()
    room.say(a, "/nick alice")
    alice.take()
    bob.take()
    room.say(a, "/quit see you")
    assert alice.take() == ["* bye"]
    assert alice.lost
    assert bob.take() == ["* alice left (see you)"]  # once, not again on connection_lost
    assert "alice" not in room.server.nicks


def test_a_client_that_goes_away_leaves_the_room(room: Chat) -> None:
    _alice, a = room.join()
    bob, b = room.join()
    room.say(b, "/nick bob")
    bob.take()
    a.client_transport.close()
    room.pump()
    assert bob.take() == ["* guest1 left"]
    assert room.server.statistics().members == 1
    _carol, c = room.join()
    room.say(c, "/nick guest1")  # the nick is free again
    assert room.server.members("lobby") == ["bob", "guest1"]


def test_bad_input(room: Chat) -> None:
    alice, a = room.join()
    bob, _ = room.join()
    alice.take()
    bob.take()
    room.say(a, "/frobnicate now")
    assert alice.take() == [
        "! unknown command /frobnicate; commands: /join ROOM, /nick NAME, /who, /quit"]
    room.say(a, "")
    room.say(a, "   ")
    room.say(a, b"crlf line\r\n")
    room.say(a, b"bad utf-8 \xff\n")
    room.say(a, "//slash at the start")
    assert bob.take() == ["<guest1> crlf line", "<guest1> bad utf-8 \ufffd",
                          "<guest1> /slash at the start"]
    assert alice.take() == []


def test_an_over_long_line_is_refused_and_the_member_stays() -> None:
    room = Chat(max_line_length=100)
    alice, a = room.join()
    bob, _ = room.join()
    alice.take()
    bob.take()
    room.say(a, "x" * 500 + "\nafter")
    assert alice.take() == ["! line too long (max 100 bytes); ignored"]
    assert bob.take() == ["<guest1> after"]
    assert not alice.lost


def test_a_slow_reader_is_disconnected_in_memory(caplog: pytest.LogCaptureFixture) -> None:
    room = Chat(max_unsent=10_000)
    _slow, s = room.join()
    fast, _ = room.join()
    talker, t = room.join()
    room.say(s, "/nick slow")
    s.client_transport.pause_reading()  # never reads again
    fast.take()
    talker.take()
    line = "m" * 99
    with caplog.at_level(logging.INFO, logger="handlers"):
        for _ in range(150):
            room.say(t, line)
    got = fast.take()
    assert got.count(f"<guest3> {line}") == 150  # the others got every message
    assert "* slow was disconnected (not reading)" in got
    assert "too slow" in caplog.text and "max_unsent=10000" in caplog.text
    assert s.server_transport.lost and s.server_transport.aborted
    stats = room.server.statistics()
    assert stats.slow_disconnects == 1
    assert stats.members == 2
    assert stats.peak_unsent <= 10_000
    assert talker.take() == ["* slow was disconnected (not reading)"]


def test_chat_handler_alone_joins_the_default_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chat, "_default", None)
    first, second = Member(), Member()
    pairs = [ProtocolPair(first, ChatHandler()), ProtocolPair(second, ChatHandler())]
    for pair in pairs:
        pair.pump()
    assert chat.default_server().members("lobby") == ["guest1", "guest2"]
    assert first.take()[-1] == "* guest2 joined"


@pytest.mark.parametrize("kwargs", [{"default_room": "no room"}, {"max_unsent": 0},
                                    {"max_line_length": 0}])
def test_bad_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ChatServer(**kwargs)  # type: ignore[arg-type]


# -- over loopback ------------------------------------------------------------------------


def session(port: int) -> list[str]:
    """A scripted session between two plain socket clients; returns the transcript.

    Each step sends one line, then reads the lines it causes, so the order is fixed."""
    transcript: list[str] = []
    with LineClient(port) as a, LineClient(port) as b:
        clients = {"a": a, "b": b}
        steps: list[tuple[str | None, str, list[str]]] = [
            (None, "", ["a", "b", "a"]),  # welcomes, then "guest2 joined" for a
            ("a", "/nick ann", ["a", "b"]),
            ("b", "/nick ann", ["b"]),
            ("b", "/nick ben", ["b", "a"]),
            ("a", "/who", ["a"]),
            ("b", "hello ann", ["a"]),
            ("a", "/unknown", ["a"]),
            ("b", "/quit bye all", ["b", "a"]),
        ]
        for actor, line, readers in steps:
            if actor is not None:
                clients[actor].send_line(line)
            transcript += [f"{who}: {clients[who].read_line()}" for who in readers]
        transcript.append(f"b at eof: {b.read_all()!r}")
    return transcript


@pytest.mark.timeout(60)
def test_same_transcript_on_both_loops() -> None:
    transcripts = {}
    for kind in LOOPS:
        with serve_tcp(kind, ChatServer()) as server:
            transcripts[kind] = session(server.port)
    assert transcripts["reactor"] == transcripts["asyncio"]
    assert transcripts["reactor"][-3:] == ["b: * bye", "a: * ben left (bye all)",
                                           "b at eof: b''"]
    assert "b: ! nick ann is taken" in transcripts["reactor"]


@pytest.mark.timeout(120)
def test_a_slow_reader_over_loopback(caplog: pytest.LogCaptureFixture) -> None:
    """A client that never reads while others chat: the others keep getting every
    message, the slow one is disconnected, the server's buffers stay bounded."""
    limit = 64 * 1024
    server_state = ChatServer(max_unsent=limit)
    message = "m" * 1000
    with caplog.at_level(logging.INFO, logger="handlers.chat"), \
            serve_tcp("reactor", server_state) as server, \
            LineClient(server.port, rcvbuf=4096) as slow, \
            LineClient(server.port) as talker, LineClient(server.port) as listener:
        reactor = server.reactor
        assert reactor is not None
        slow.read_line()
        slow.send_line("/nick slow")  # and never reads again
        talker.send_line("/nick talker")
        server.wait_for(lambda: set(server_state.nicks) >= {"slow", "talker"},
                        what="the nicks")
        listener.read_until(lambda line: line == "* talker joined" or
                            line == "* guest2 is now known as talker")
        sent = received = 0
        peak_buffered = 0
        deadline = time.monotonic() + DEADLINE * 3
        kicked = noticed = False
        while not kicked:
            assert time.monotonic() < deadline, "the slow reader was never disconnected"
            assert sent < 20_000, "sent 20 MB and the slow reader is still connected"
            for _ in range(50):
                talker.send_line(message)
            sent += 50
            while received < sent:  # every message reaches the listener
                line = listener.read_line()
                if line == f"<talker> {message}":
                    received += 1
                elif line == "* slow was disconnected (not reading)":
                    noticed = True
            buffered = server.call(lambda: reactor.connections.statistics().write_buffered)
            peak_buffered = max(peak_buffered, buffered)
            kicked = server_state.statistics().slow_disconnects == 1
        if not noticed:
            listener.read_until(lambda line: line == "* slow was disconnected (not reading)")
        assert received == sent
        stats = server_state.statistics()
        assert stats.slow_disconnects == 1
        assert stats.peak_unsent <= limit
        assert peak_buffered <= limit + 3 * 1024  # the slow one's queue, never more
        assert "too slow" in caplog.text
        # the talker and the listener are still served
        talker.send_line("still here?")
        assert listener.read_until(lambda line: "still here?" in line)[-1] == \
            "<talker> still here?"
        # the slow client finds its connection cut (after what the kernel held)
        with pytest.raises((ConnectionResetError, EOFError)):
            while True:
                slow.read_line()
