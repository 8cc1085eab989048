"""Framers: socket-free state machines that cut a byte stream into messages.

Role: one module per framing, each a framer (bytes in, messages out, fed whole, byte by
byte or in any chunks) and, where it has one, the :class:`~handlers.base.StreamHandler`
users subclass:

* :mod:`.lines` -- lines with a maximum length (:class:`LineFramer`, :class:`LineHandler`);
* :mod:`.terminator` -- asynchat-style terminators and counts
  (:class:`TerminatorFramer`, :class:`TerminatorHandler`);
* :mod:`.records` -- length-prefixed records (:class:`RecordFramer`,
  :class:`RecordHandler`);
* :mod:`.rpcrecord` -- ONC RPC record marking (:class:`RecordMarkingFramer`,
  :class:`RPCRecordHandler`);
* :mod:`.resp` -- the Redis protocol's requests and replies (:class:`RespParser`).

Must not import ``socket``, ``selectors``, ``threading`` or ``os`` (checked for the whole
folder by ``tests/test_layering.py``), nor :mod:`handlers.services`. The public names are
re-exported by :mod:`handlers`.
"""
