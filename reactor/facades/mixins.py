"""The mix-ins, where a ready request runs, in one place for importers: put one first in
the bases -- ``class Server(ThreadingMixIn, TCPServer)``:

* :class:`~reactor.facades.threads.ThreadingMixIn` -- a thread per request, or a pool;
* :class:`~reactor.facades.children.ForkingMixIn` -- a child process per request;
* :class:`~reactor.facades.multiplexing.MultiplexingMixIn` -- a non-blocking handler
  per connection, inside the reactor;

and, beside them, :class:`~reactor.facades.proxied.ProxyProtocolMixIn`: the clients
behind a load balancer that sends the PROXY protocol; :class:`~reactor.facades.tls.
TLSMixIn`: TLS, with the handshake in the reactor;
:class:`~reactor.facades.access.AccessControlMixIn`: address allow and deny lists, and
uid/gid lists for Unix peers.

Without one, a server handles each request inline, on the reactor thread.
"""

from __future__ import annotations

from .access import AccessControlMixIn
from .children import ForkingMixIn
from .multiplexing import MultiplexingMixIn
from .proxied import ProxyProtocolMixIn
from .threads import ThreadingMixIn
from .tls import TLSMixIn

__all__ = ["AccessControlMixIn", "ForkingMixIn", "MultiplexingMixIn", "ProxyProtocolMixIn",
           "TLSMixIn", "ThreadingMixIn"]
