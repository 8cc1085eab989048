"""handlers.rpc.message and dispatch: every reply of RFC 5531, from bytes to bytes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rpckit import Inventory

from handlers.rpc.dispatch import AuthError, Call, Dispatcher, Procedure, Program, Version
from handlers.rpc.message import (
    AUTHSYS_PARMS,
    AcceptStat,
    AuthFlavor,
    AuthStat,
    OpaqueAuth,
    RejectStat,
    Reply,
    ReplyStat,
    decode_auth_sys,
    decode_reply,
    encode_call,
)
from handlers.rpc.xdr import Int, String, UnsignedInt, XDRDecodeError, decode, encode
from handlers.rpc.xdrcompound import Array, Struct
from handlers.rpc.xdrlang import load_xdr

PROG = 0x2000_0001
INVENTORY = Path(__file__).parent / "data" / "inventory.x"
seen: list[Call] = []


def add(call: Call, args: list[int]) -> int:
    seen.append(call)
    return sum(args)


def fail(call: Call, args: None) -> None:
    raise RuntimeError("the procedure broke")


def refuse(call: Call, args: None) -> None:
    raise AuthError(AuthStat.AUTH_TOOWEAK)


def bad_result(call: Call, args: None) -> str:
    return "not an int"


def make_dispatcher() -> Dispatcher:
    v2 = Version(2, {1: Procedure(1, add, Array(Int(), 4), Int(), "ADD"),
                     2: Procedure(2, fail, name="FAIL"),
                     3: Procedure(3, refuse, name="REFUSE"),
                     4: Procedure(4, bad_result, result=Int(), name="BAD_RESULT")})
    v3 = Version(3)
    v5 = Version(5)
    return Dispatcher([Program(PROG, {2: v2, 3: v3, 5: v5}, "TEST")])


# the layout of AUTHSYS_PARMS without its limits, to write credentials that break them
UNBOUNDED_AUTHSYS = Struct("authsys_parms", [
    ("stamp", UnsignedInt()), ("machinename", String()), ("uid", UnsignedInt()),
    ("gid", UnsignedInt()), ("gids", Array(UnsignedInt()))])


def auth_sys(uid: int = 1000, gids: tuple[int, ...] = (4, 24), name: str = "client"
             ) -> OpaqueAuth:
    parms = {"stamp": 7, "machinename": name, "uid": uid, "gid": 100, "gids": list(gids)}
    body = encode(UNBOUNDED_AUTHSYS, parms)
    return OpaqueAuth(AuthFlavor.AUTH_SYS, body)


def ask(dispatcher: Dispatcher, proc: int, args: bytes = b"", *, prog: int = PROG,
        vers: int = 2, **options: Any) -> Reply:
    reply = dispatcher.dispatch(encode_call(0x1234, prog, vers, proc, args, **options),
                                ("127.0.0.1", 999))
    assert reply is not None
    decoded = decode_reply(reply)
    assert decoded.xid == 0x1234
    return decoded


def test_a_null_call_byte_for_byte() -> None:
    call = bytes.fromhex(
        "00000001"  # xid
        "00000000"  # CALL
        "00000002"  # RPC version 2
        "20000001" "00000002" "00000000"  # program, version, procedure 0
        "00000000" "00000000"  # credential AUTH_NONE, empty
        "00000000" "00000000")  # verifier AUTH_NONE, empty
    reply = make_dispatcher().dispatch(call)
    assert reply == bytes.fromhex(
        "00000001"  # xid
        "00000001"  # REPLY
        "00000000"  # MSG_ACCEPTED
        "00000000" "00000000"  # verifier AUTH_NONE, empty
        "00000000")  # SUCCESS, no results


def test_success_returns_the_encoded_result_and_the_call() -> None:
    seen.clear()
    reply = ask(make_dispatcher(), 1, encode(Array(Int(), 4), [1, 2, 3]),
                cred=auth_sys())
    assert (reply.reply_stat, reply.accept_stat) == (ReplyStat.MSG_ACCEPTED,
                                                     AcceptStat.SUCCESS)
    assert decode(Int(), reply.results) == 6
    call = seen[-1]
    assert (call.xid, call.prog, call.vers, call.proc) == (0x1234, PROG, 2, 1)
    assert call.peer == ("127.0.0.1", 999)
    assert call.auth_sys is not None and call.auth_sys.machinename == "client"
    assert call.uid == 1000 and call.gids == (100, 4, 24)


def test_auth_none_gives_no_identity() -> None:
    seen.clear()
    ask(make_dispatcher(), 1, encode(Array(Int(), 4), []))
    assert seen[-1].auth_sys is None and seen[-1].uid is None and seen[-1].gids == ()


def test_null_answers_in_every_version() -> None:
    for vers in (2, 3, 5):
        reply = ask(make_dispatcher(), 0, vers=vers)
        assert reply.accept_stat == AcceptStat.SUCCESS and reply.results == b""


def test_prog_unavail() -> None:
    assert ask(make_dispatcher(), 0, prog=PROG + 1).accept_stat == AcceptStat.PROG_UNAVAIL


def test_prog_mismatch_gives_the_supported_range() -> None:
    reply = ask(make_dispatcher(), 0, vers=4)
    assert reply.accept_stat == AcceptStat.PROG_MISMATCH
    assert (reply.low, reply.high) == (2, 5)


def test_proc_unavail() -> None:
    assert ask(make_dispatcher(), 9).accept_stat == AcceptStat.PROC_UNAVAIL
    assert ask(make_dispatcher(), 1, vers=3).accept_stat == AcceptStat.PROC_UNAVAIL


@pytest.mark.parametrize("args", [
    b"",  # missing
    b"\0\0\0\x05" + b"\0" * 20,  # five ints in an int<4>
    b"\xff\xff\xff\xff",  # a claimed length of 2**32 - 1
    encode(Array(Int(), 4), [1]) + b"\0\0\0\0",  # bytes left over
])
def test_garbage_args(args: bytes) -> None:
    seen.clear()
    assert ask(make_dispatcher(), 1, args).accept_stat == AcceptStat.GARBAGE_ARGS
    assert not seen


def test_system_err_when_the_procedure_raises(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, "handlers.rpc"):
        assert ask(make_dispatcher(), 2).accept_stat == AcceptStat.SYSTEM_ERR
    assert "FAIL" in caplog.text and "the procedure broke" in caplog.text
    assert "127.0.0.1" in caplog.text


def test_system_err_when_the_result_does_not_encode(caplog: pytest.LogCaptureFixture
                                                    ) -> None:
    with caplog.at_level(logging.ERROR, "handlers.rpc"):
        assert ask(make_dispatcher(), 4).accept_stat == AcceptStat.SYSTEM_ERR
    assert "result: int expects an int, not str" in caplog.text


def test_rpc_mismatch() -> None:
    reply = ask(make_dispatcher(), 0, rpcvers=3)
    assert (reply.reply_stat, reply.reject_stat) == (ReplyStat.MSG_DENIED,
                                                     RejectStat.RPC_MISMATCH)
    assert (reply.low, reply.high) == (2, 2)


@pytest.mark.parametrize("cred", [
    OpaqueAuth(AuthFlavor.AUTH_DH, b"\0" * 8),  # a flavour we do not speak
    OpaqueAuth(AuthFlavor.RPCSEC_GSS, b""),
    OpaqueAuth(77, b""),
    auth_sys(name="m" * 256),  # machine name over 255
    auth_sys(gids=tuple(range(17))),  # more than 16 gids
    OpaqueAuth(AuthFlavor.AUTH_SYS, b"\0\0\0\x01"),  # truncated AUTH_SYS body
    OpaqueAuth(AuthFlavor.AUTH_SYS, auth_sys().body + b"\0\0\0\0"),  # bytes left over
])
def test_bad_credentials_get_auth_badcred(cred: OpaqueAuth) -> None:
    seen.clear()
    reply = ask(make_dispatcher(), 1, encode(Array(Int(), 4), []), cred=cred)
    assert (reply.reply_stat, reply.reject_stat, reply.auth_stat) == (
        ReplyStat.MSG_DENIED, RejectStat.AUTH_ERROR, AuthStat.AUTH_BADCRED)
    assert not seen


def test_the_largest_auth_sys_credential_is_accepted() -> None:
    cred = auth_sys(name="m" * 255, gids=tuple(range(16)))
    assert encode(AUTHSYS_PARMS, decode(UNBOUNDED_AUTHSYS, cred.body)) == cred.body
    assert decode_auth_sys(cred.body).gids == tuple(range(16))
    assert ask(make_dispatcher(), 0, cred=cred).accept_stat == AcceptStat.SUCCESS


def test_a_procedure_can_refuse_the_caller() -> None:
    reply = ask(make_dispatcher(), 3, cred=auth_sys())
    assert (reply.reject_stat, reply.auth_stat) == (RejectStat.AUTH_ERROR,
                                                    AuthStat.AUTH_TOOWEAK)


def test_a_program_can_refuse_by_uid() -> None:
    dispatcher = make_dispatcher()

    def only_root(call: Call) -> AuthStat | None:
        return None if call.uid == 0 else AuthStat.AUTH_TOOWEAK

    dispatcher.programs[PROG].authenticate = only_root
    args = encode(Array(Int(), 4), [2])
    assert ask(dispatcher, 1, args, cred=auth_sys(uid=0)).accept_stat == AcceptStat.SUCCESS
    refused = ask(dispatcher, 1, args, cred=auth_sys(uid=5))
    assert refused.auth_stat == AuthStat.AUTH_TOOWEAK
    # NULL answers anyone: it is how clients ping
    assert ask(dispatcher, 0, cred=auth_sys(uid=5)).accept_stat == AcceptStat.SUCCESS


@pytest.mark.parametrize("message", [
    b"",
    b"\0\0\0\x01",  # only an xid
    b"\0\0\0\x01\0\0\0\x01" + b"\0" * 16,  # a REPLY
    b"\0\0\0\x01\0\0\0\x07",  # an unknown message type
    encode_call(1, PROG, 2, 0)[:30],  # a truncated header
    bytes.fromhex("00000001 00000000 00000002 20000001 00000002 00000000"
                  "00000000 ffffffff"),  # a credential claiming 4 GiB
    encode_call(1, PROG, 2, 0, cred=OpaqueAuth(0, b"x" * 400))[:-8]
    + b"\0\0\0\0" + (401).to_bytes(4, "big") + b"\0" * 404,  # a verifier over 400 bytes
])
def test_messages_that_get_no_reply(message: bytes, caplog: pytest.LogCaptureFixture
                                    ) -> None:
    with caplog.at_level(logging.DEBUG, "handlers.rpc"):
        assert make_dispatcher().dispatch(message, "peer") is None
    assert "dropped" in caplog.text


def test_reply_decoding_refuses_garbage() -> None:
    with pytest.raises(XDRDecodeError, match=r"reply: .*not a REPLY"):
        decode_reply(encode_call(1, 2, 3, 4))
    with pytest.raises(XDRDecodeError, match="9 is not a ReplyStat"):
        decode_reply(bytes.fromhex("00000001 00000001 00000009"))


# -- a program from a .x file ------------------------------------------------------------


def test_a_program_from_a_x_file_with_two_versions() -> None:
    spec = load_xdr(str(INVENTORY))
    program = Program.from_spec(spec, Inventory(spec))
    dispatcher = Dispatcher([program])
    number = spec.constants["INVENTORY_PROG"]
    item_type = spec.types["item"]
    item = item_type.cls(name="saw", kind=2, count=1, serial=5, weight=2.5, fragile=True,
                         tags="", sum=bytes(16))
    reply = ask(dispatcher, 1, encode(item_type, item), prog=number, vers=1)
    assert decode(spec.types["status"], reply.results) == 0
    reply = ask(dispatcher, 2, encode(String(), "saw"), prog=number, vers=2)
    assert decode(spec.types["lookup_result"], reply.results).value == item
    reply = ask(dispatcher, 2, encode(String(), "axe"), prog=number, vers=1)
    assert decode(spec.types["lookup_result"], reply.results).discriminant == 1
    reply = ask(dispatcher, 3, prog=number, vers=1)
    assert decode(spec.types["itemlist"], reply.results) == [item]
    reply = ask(dispatcher, 4, encode(Int(), 1), prog=number, vers=2)
    assert decode(spec.types["itemchain"], reply.results).entry == item
    count_args = spec.program("INVENTORY_PROG").versions[2].procedures[5].arg
    reply = ask(dispatcher, 5, encode(count_args, {"arg1": 2, "arg2": True}),
                prog=number, vers=2)
    assert decode(Int(), reply.results) == 1
    assert ask(dispatcher, 3, encode(Int(), 9), prog=number,
               vers=2).accept_stat == AcceptStat.GARBAGE_ARGS  # 9 is no kind
    assert ask(dispatcher, 0, prog=number, vers=7).low == 1


def test_a_missing_method_is_named_unless_partial() -> None:
    spec = load_xdr(str(INVENTORY))

    class Half:
        def add_item(self, call: Call, item: Any) -> int:
            return 0

    with pytest.raises(ValueError, match=r"Half has no method for FIND_ITEM \(version 1\)"):
        Program.from_spec(spec, Half())
    program = Program.from_spec(spec, Half(), "INVENTORY_PROG", partial=True)
    number = spec.constants["INVENTORY_PROG"]
    assert ask(Dispatcher([program]), 2, prog=number,
               vers=1).accept_stat == AcceptStat.PROC_UNAVAIL
    with pytest.raises(KeyError, match="no program 'NOPE'"):
        Program.from_spec(spec, Half(), "NOPE")
    with pytest.raises(ValueError, match="has no versions"):
        Dispatcher([Program(5)])


# -- any input ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.integers(0, 200), st.binary(min_size=1, max_size=8))
def test_any_message_gets_a_well_formed_reply_or_none(noise: bytes, at: int, patch: bytes
                                                      ) -> None:
    good = encode_call(9, PROG, 2, 1, encode(Array(Int(), 4), [1, 2]), cred=auth_sys())
    mutated = good[:at] + patch + good[at + len(patch):]
    for message in (noise, mutated, good[:at]):
        reply = make_dispatcher().dispatch(message)
        if reply is not None:
            assert decode_reply(reply).xid == int.from_bytes(message[:4], "big")
