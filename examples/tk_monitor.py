"""A Tk window that shows a reactor's connection table live while the reactor serves chat.

The reactor runs inside Tk's own loop (:mod:`reactor.embed.tk`): no thread, and the
window reads the table directly. A ``ttk.Treeview`` lists the rows (peer, state, bytes
in and out, queued output, idle seconds) and a line of counters (open, opened, closed,
bytes, chat members and messages, reactor iterations) is refreshed five times a second.

Run it, then talk to it with any line client (``nc 127.0.0.1 PORT``)::

    python examples/tk_monitor.py --port 0

It prints ``port N`` once it listens; ``--seconds S`` closes the window after S seconds.
"""

from __future__ import annotations

import argparse
import tkinter
from tkinter import ttk

from handlers import ChatServer
from reactor import Reactor
from reactor.embed import tk as reactor_tk

COLUMNS = ("peer", "kind", "state", "in", "out", "queued", "idle")
COUNTERS = ("open", "opened", "closed", "bytes in", "bytes out", "members", "messages",
            "iterations")


def peer_text(peer: object) -> str:
    """``host:port`` for an address pair, the address itself otherwise."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


class Monitor:
    """The window's widgets over one reactor and its chat server.

    Attributes:
        tree: the ``Treeview``, one item per row of the connection table.
        counters: the counters' text variables, by name (:data:`COUNTERS`).
        refreshes: how many times the widgets were brought up to date.
    """

    def __init__(self, root: tkinter.Tk, reactor: Reactor, chat: ChatServer,
                 period: float = 0.2) -> None:
        self.root, self.reactor, self.chat = root, reactor, chat
        self.period_ms = round(period * 1000)
        self.refreshes = 0
        self._items: dict[int, str] = {}  # id(row) -> the tree's item
        root.title("socketreactor: connection table")
        frame = ttk.Frame(root, padding=8)
        frame.pack(fill="both", expand=True)
        ttk.Label(frame, text="Connections", font=("TkDefaultFont", 12, "bold")).pack(
            anchor="w")
        self.tree = ttk.Treeview(frame, columns=COLUMNS, show="headings", height=10)
        for name in COLUMNS:
            self.tree.heading(name, text=name)
            width = 170 if name == "peer" else 80
            self.tree.column(name, width=width, anchor="w" if name == "peer" else "e")
        self.tree.pack(fill="both", expand=True, pady=(4, 8))
        bar = ttk.Frame(frame)
        bar.pack(fill="x")
        self.counters: dict[str, tkinter.StringVar] = {}
        for column, name in enumerate(COUNTERS):
            var = self.counters[name] = tkinter.StringVar(root, "0")
            ttk.Label(bar, text=f"{name}:").grid(row=column // 4, column=(column % 4) * 2,
                                                sticky="e", padx=(8, 2))
            ttk.Label(bar, textvariable=var, width=9).grid(
                row=column // 4, column=(column % 4) * 2 + 1, sticky="w")
        self._after: str | None = None

    def start(self) -> None:
        """Refresh now and every period until :meth:`stop`."""
        self.refresh()
        self._after = self.root.after(self.period_ms, self.start)

    def stop(self) -> None:
        if self._after is not None:
            self.root.after_cancel(self._after)
            self._after = None

    def refresh(self) -> None:
        """Bring the tree and the counters up to date with the table."""
        now = self.reactor.time()
        seen: set[int] = set()
        for row in self.reactor.connections:
            key = id(row)
            seen.add(key)
            values = (peer_text(row.peername), row.kind, row.state.name, row.bytes_in,
                      row.bytes_out, row.write_buffer_size, f"{now - row.last_activity:.1f}")
            item = self._items.get(key)
            if item is None:
                self._items[key] = self.tree.insert("", "end", values=values)
            else:
                self.tree.item(item, values=values)
        for key in [k for k in self._items if k not in seen]:
            self.tree.delete(self._items.pop(key))
        stats = self.reactor.statistics()
        chat = self.chat.statistics()
        values = {
            "open": stats.open, "opened": stats.opened_total, "closed": stats.closed_total,
            "bytes in": stats.bytes_in, "bytes out": stats.bytes_out,
            "members": chat.members, "messages": chat.messages,
            "iterations": stats.iterations,
        }
        for name, value in values.items():
            self.counters[name].set(str(value))
        self.refreshes += 1

    def rows(self) -> list[tuple[str, ...]]:
        """What the tree shows, one tuple of column texts per item."""
        return [tuple(str(v) for v in self.tree.item(item, "values"))
                for item in self.tree.get_children()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=0.0,
                        help="close the window after this long (0: when closed by hand)")
    args = parser.parse_args()

    root = tkinter.Tk()
    reactor = Reactor()
    chat = ChatServer()
    listener = reactor.listen_tcp(args.host, args.port, chat)
    monitor = Monitor(root, reactor, chat)
    monitor.start()
    embedding = reactor_tk.attach(reactor, root)
    if args.seconds > 0:
        root.after(round(args.seconds * 1000), root.quit)
    root.protocol("WM_DELETE_WINDOW", root.quit)
    print(f"port {listener.port}", flush=True)
    root.mainloop()
    monitor.stop()
    embedding.detach()
    listener.close()
    reactor.close()
    root.destroy()


if __name__ == "__main__":
    main()
