"""The benchmark's PNG plots: throughput and requests per CPU-second, p99 latency, and
memory per connection, against the connection count (matplotlib, if installed).

Part of ``python -m bench.run``; reads :class:`bench.report.Results` only: must not
import the measuring modules or :mod:`bench.run`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.plan import ECHO_CONNS, SIZE_NAMES, log
from bench.report import Results
from bench.servers import SERVERS

__all__ = ["plot"]


def plot(res: Results, plot_dir: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no plots")
        return []
    plot_dir.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    palette = plt.get_cmap("tab20").colors  # type: ignore[attr-defined]
    color = {name: palette[i % len(palette)] for i, name in enumerate(SERVERS)}
    sizes = [s for s in (64, 1024, 65536)
             if any(w.startswith(f"echo-{SIZE_NAMES[s]}-") for w in res.workloads("echo"))]

    def curve(server: str, size: int, name: str) -> tuple[list[int], list[float],
                                                          list[float], list[float]]:
        xs, ys, lo, hi = [], [], [], []
        for n in ECHO_CONNS:
            s = res.stat(f"echo-{SIZE_NAMES[size]}-c{n}", server, name)
            if s is not None:
                xs.append(n)
                ys.append(s.median)
                lo.append(s.median - s.low)
                hi.append(s.high - s.median)
        return xs, ys, lo, hi

    def echo_figure(filename: str, rows: list[tuple[str, str, float]]) -> None:
        if not sizes:
            return
        fig, axes = plt.subplots(len(rows), len(sizes), figsize=(5 * len(sizes),
                                                                 3.6 * len(rows)),
                                 squeeze=False)
        for ri, (name, label, scale) in enumerate(rows):
            for ci, size in enumerate(sizes):
                ax = axes[ri][ci]
                for server in SERVERS:
                    xs, ys, lo, hi = curve(server, size, name)
                    if len(xs) < 1:
                        continue
                    ax.errorbar(xs, [y * scale for y in ys],
                                yerr=[[v * scale for v in lo], [v * scale for v in hi]],
                                marker="o", capsize=3, label=server, color=color[server],
                                linestyle="-" if SERVERS[server].ours else "--")
                ax.set_xscale("log")
                ax.set_xlabel("connections")
                ax.set_ylabel(label)
                ax.set_title(f"echo {SIZE_NAMES[size]}")
                ax.grid(True, alpha=0.3)
        seen: dict[str, Any] = {}
        for row in axes:
            for ax in row:
                for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
                    seen.setdefault(name, handle)
        handles, labels = list(seen.values()), list(seen)
        if handles:
            fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)))
        fig.tight_layout(rect=(0, 0.08, 1, 1))
        path = plot_dir / filename
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)

    echo_figure("throughput.png", [("rps", "requests/s", 1.0),
                                   ("req_per_cpu_s", "requests per server-CPU-second", 1.0)])
    echo_figure("latency_p99.png", [("p99", "p99 latency (ms)", 1e-3)])

    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for server in SERVERS:
        xs, ys, _lo, _hi = curve(server, 1024, "mem_per_conn")
        if xs:
            ax.plot(xs, ys, marker="o", label=f"{server} (echo 1 KiB, peak)", color=color[server],
                    linestyle="-" if SERVERS[server].ours else "--")
            drawn = True
    for wname in res.workloads("idle"):
        for server in res.servers_for(wname):
            s = res.stat(wname, server, "rss_per_conn")
            ok = res.ok(wname, server)
            if s is not None and ok:
                ax.scatter([ok[0].get("established", 1)], [s.median], marker="*", s=120,
                           label=f"{server} (idle)", zorder=3, color=color[server])
                drawn = True
    if drawn:
        ax.axhline(600, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("connections")
        ax.set_ylabel("server RSS per connection (bytes)")
        ax.set_title("memory per connection (RSS growth / connections)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = plot_dir / "memory_per_conn.png"
        fig.savefig(path, dpi=110)
        made.append(path)
    plt.close(fig)
    return made
