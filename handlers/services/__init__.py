"""Ready services: protocols to serve as they are, by name with ``reactor serve NAME``.

Role: one module (or package) per service:

* :mod:`.echo` -- :class:`EchoHandler`, every byte sent back, with back-pressure;
* :mod:`.chat` -- :class:`ChatServer`, line-based chat rooms;
* :mod:`.kv` -- :class:`KVServer`, a Redis-protocol key-value store (a package).

They are built on :mod:`handlers.base` and :mod:`handlers.framers`. Must not import
``socket``, ``selectors``, ``threading`` or ``os`` (checked for the whole folder by
``tests/test_layering.py``). The public names are re-exported by :mod:`handlers`; the
command line loads them from here by name (``reactor serve kv``).
"""
