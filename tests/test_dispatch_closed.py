"""A callback that closes another registered socket whose event is in the same batch.

Real sockets on every selector backend: a client's data makes its protocol close the
listener (as a "drain" command or a QUIT that stops a server does) while a connect to
that listener waits in the same batch; the listening socket is closed at once
(``fileno()`` -1). The batch goes on, the closed listener's event is dropped, nothing
raises (the generic path used to look the stale key up by its closed socket object and
die of ``ValueError: Invalid file descriptor: -1``).
"""

from __future__ import annotations

import select
import socket

from netkit import WAIT, Net, Recorder

from reactor import Reactor


def test_closing_a_listener_whose_accept_is_in_the_same_batch(reactor: Reactor,
                                                              net: Net) -> None:
    closing = net.listen_tcp()
    victim = net.listen_tcp()

    def close_the_victim(proto: Recorder, data: bytes) -> None:
        victim.close()

    # the first listener's connection closes the second listener when it reads
    peer, _proto = net.accept(closing)
    closing_protocol = net.protocols[-1]
    closing_protocol.on_data = close_the_victim
    with socket.create_connection(victim.address, timeout=WAIT):
        peer.send_all(b"close it")
        # both events are ready before the next poll: the data and the pending accept
        assert select.select([victim.sock], [], [], WAIT)[0]
        net.wait(lambda: bool(closing_protocol.data))
        assert closing_protocol.data == b"close it"
        assert victim.sock.fileno() == -1
        closing_protocol.on_data = None
        peer.send_all(b" and more")  # the loop goes on serving
        net.wait(lambda: closing_protocol.data == b"close it and more")
