"""The key-value service's password: Redis's ``requirepass``, ``AUTH`` and ``HELLO AUTH``.

Role: the replies Redis gives about authentication (byte for byte redis-server 7's) and
:func:`password_matches`, the one place a password is compared. With
``KVServer(requirepass=...)`` a connection starts unauthenticated: every command but
those flagged ``no_auth`` (AUTH, HELLO, QUIT) gets :data:`NOAUTH` until ``AUTH
password``, ``AUTH default password`` or ``HELLO 3 AUTH default password`` succeeds. As
in Redis, an unknown command or a wrong number of arguments is reported before NOAUTH,
and a failed AUTH after a successful one leaves the connection authenticated.

The password is never logged, and never reported by ``CONFIG GET``.

Must not import ``socket``, ``selectors``, ``threading`` or ``os``.
"""

from __future__ import annotations

import hmac
from typing import Final

from handlers.framers.resp import encode_error

__all__ = [
    "DEFAULT_USER",
    "EXECABORT_NOAUTH",
    "E_HELLO_NOAUTH",
    "E_NO_PASSWORD",
    "E_WRONGPASS",
    "NOAUTH",
    "password_matches",
]

NOAUTH: Final = encode_error("NOAUTH Authentication required.")
EXECABORT_NOAUTH: Final = encode_error(
    "EXECABORT Transaction discarded because of: NOAUTH Authentication required.")
E_WRONGPASS: Final = "WRONGPASS invalid username-password pair or user is disabled."
E_NO_PASSWORD: Final = (
    "ERR AUTH <password> called without any password configured for the default user. "
    "Are you sure your configuration is correct?")
E_HELLO_NOAUTH: Final = (
    "NOAUTH HELLO must be called with the client already authenticated, otherwise the "
    "HELLO AUTH <user> <pass> option can be used to authenticate the client and select "
    "the RESP protocol version at the same time")

DEFAULT_USER: Final = b"default"


def password_matches(requirepass: bytes | None, user: bytes, password: bytes) -> bool:
    """Whether ``user`` and ``password`` log in to a server whose password is
    ``requirepass``: the only user is ``default``; with no password configured it
    accepts any password (Redis's ``nopass``). The password is compared in constant
    time (:func:`hmac.compare_digest`)."""
    if requirepass is None:
        return user == DEFAULT_USER
    # compare the password even for a wrong user, so the time tells nothing of either
    same = hmac.compare_digest(password, requirepass)
    return same and user == DEFAULT_USER
