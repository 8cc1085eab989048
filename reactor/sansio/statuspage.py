"""The live status page: one self-contained HTML document (no external assets).

:data:`PAGE` is served at ``/`` by :mod:`reactor.io.observe`. Its script fetches
``status.json`` from the same server every second (``?interval=SECONDS`` changes it)
and redraws:

* counters: connections, opened and closed totals, bytes in and out, loop iterations,
  lag and slow callbacks (when loop health is on);
* two inline SVG charts: connections by state now, and throughput (bytes in and out
  per second) over the last five minutes (or since the page opened), from the
  differences between readings;
* the table of connections: sortable by clicking a column's title (again: the other
  way), filterable by state. Rows carry ``data-id`` and ``data-state``.

Everything is built with DOM calls and ``textContent``: an address or a TLS
description from the table is never parsed as HTML.

Socket-free: no sockets, selectors, threads or ``os``.
"""

from __future__ import annotations

from typing import Final

__all__ = ["PAGE"]

_STYLE: Final = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:10px 18px;display:flex;gap:18px;
 align-items:baseline}
header h1{font-size:17px;margin:0}
#updated{opacity:.75;font-size:12px}
main{padding:14px 18px;display:grid;gap:14px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border:1px solid #dde1e8;border-radius:6px;padding:8px 12px;
 min-width:110px}
.card b{display:block;font-size:19px}
.card span{font-size:12px;color:#5b6475}
.charts{display:grid;grid-template-columns:1fr 2fr;gap:14px}
.panel{background:#fff;border:1px solid #dde1e8;border-radius:6px;padding:10px 12px}
.panel h2{font-size:13px;margin:0 0 6px;color:#5b6475;font-weight:600}
svg{width:100%;height:150px;display:block}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{padding:4px 8px;border-bottom:1px solid #eceff3;text-align:left;white-space:nowrap}
th{cursor:pointer;user-select:none;background:#fafbfc}
th.num,td.num{text-align:right}
th[data-dir=asc]::after{content:" \\25B2"}
th[data-dir=desc]::after{content:" \\25BC"}
.state{border-radius:9px;padding:1px 7px;font-size:12px;background:#e7ecf5}
#error{color:#b3261e}
"""

_SCRIPT: Final = r"""
"use strict";
const COLORS = {"open":"#2f7ed8","read-closed":"#8bbc21","write-closed":"#910000",
  "closing":"#f28f43","ending":"#77a1e5","accepted":"#1aadce","buffering":"#492970",
  "dispatched-inline":"#c42525","dispatched-thread":"#a6c96a","dispatched-child":"#0d233a",
  "proxy-header":"#f45b5b","verified":"#8085e9","finished":"#aaaaaa"};
const COLUMNS = [["id","ID",1],["kind","Kind",0],["peer","Peer",0],["local","Local",0],
  ["state","State",0],["age","Age",1],["idle","Idle",1],["bytes_in","In",1],
  ["bytes_out","Out",1],["queued","Queued",1]];
const HISTORY = 300;
const params = new URLSearchParams(location.search);
const interval = Math.max(0.2, parseFloat(params.get("interval") || "1")) * 1000;
let sortKey = "id", sortDir = 1, last = null, rows = [];
const samples = [];
const $ = (id) => document.getElementById(id);
const svgNS = "http://www.w3.org/2000/svg";

function el(tag, attrs, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(svgNS, tag.slice(4))
                                      : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}
function bytes(n) {
  const units = ["B","KiB","MiB","GiB","TiB"]; let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(Math.round(n))) + " " + units[i];
}
function secs(s) {
  if (s < 60) return s.toFixed(1) + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + String(Math.floor(s % 60)).padStart(2, "0") + "s";
  return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
}
function cards(data) {
  const t = data.totals, box = $("cards"), h = data.health;
  const list = [["conn-count", data.connections.length, "connections"],
    ["opened", t.opened, "opened"], ["closed", t.closed, "closed"],
    ["bytes-in", bytes(t.bytes_in), "received"], ["bytes-out", bytes(t.bytes_out), "sent"],
    ["iterations", t.iterations, "loop iterations"], ["uptime", secs(data.uptime), "uptime"]];
  if (h) {
    list.push(["lag", (h.lag_seconds * 1000).toFixed(1) + " ms", "loop lag"]);
    list.push(["lag-max", (h.lag_max_seconds * 1000).toFixed(1) + " ms", "max lag, 1 min"]);
    if (h.slow_callback_duration !== null) list.push(["slow", h.slow_callbacks, "slow callbacks"]);
  }
  box.replaceChildren(...list.map(([id, value, label]) => {
    const card = el("div", {"class": "card"});
    card.append(el("b", {"id": id}, String(value)), el("span", {}, label));
    return card;
  }));
}
function stateChart(byState) {
  const svg = $("by-state"), entries = Object.entries(byState);
  svg.replaceChildren();
  if (!entries.length) { svg.append(el("svg:text", {x: 4, y: 20}, "no connections")); return; }
  const max = Math.max(...entries.map(e => e[1])), bar = Math.min(26, 150 / entries.length);
  entries.forEach(([state, n], i) => {
    const y = i * bar, w = 60 + 220 * n / max;
    svg.append(el("svg:rect", {x: 0, y: y + 2, width: w - 60, height: bar - 4,
                               fill: COLORS[state] || "#666", transform: "translate(110,0)"}));
    svg.append(el("svg:text", {x: 0, y: y + bar / 2 + 4, "font-size": 12}, state));
    svg.append(el("svg:text", {x: 110 + w - 56, y: y + bar / 2 + 4, "font-size": 12},
                  String(n)));
  });
}
function throughputChart() {
  const svg = $("throughput"), W = 600, H = 150;
  svg.replaceChildren();
  if (samples.length < 2) {
    svg.append(el("svg:text", {x: 4, y: 20}, "collecting...")); return;
  }
  const end = samples[samples.length - 1].t;
  const span = Math.max(10, Math.min(HISTORY, end - samples[0].t));
  const t0 = end - span;
  const max = Math.max(1, ...samples.map(s => Math.max(s.in, s.out)));
  const line = (key, color, dash) => {
    const pts = samples.map(s => [((s.t - t0) / span * W).toFixed(1),
                                   (H - 18 - (H - 28) * s[key] / max).toFixed(1)]);
    svg.append(el("svg:polyline", {points: pts.map(p => p.join(",")).join(" "),
                                   fill: "none", stroke: color, "stroke-width": 2,
                                   "stroke-dasharray": dash}));
  };
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.append(el("svg:line", {x1: 0, y1: H - 18, x2: W, y2: H - 18, stroke: "#ccc"}));
  line("in", "#2f7ed8", "none"); line("out", "#f28f43", "6 4");
  svg.append(el("svg:text", {x: 4, y: 12, "font-size": 11}, "max " + bytes(max) + "/s"));
  svg.append(el("svg:text", {x: 4, y: H - 4, "font-size": 11, fill: "#2f7ed8"}, "in"));
  svg.append(el("svg:text", {x: 30, y: H - 4, "font-size": 11, fill: "#f28f43"}, "out"));
  const ago = span >= 120 ? Math.round(span / 60) + " minutes" : Math.round(span) + " s";
  svg.append(el("svg:text", {x: W - 100, y: H - 4, "font-size": 11}, "last " + ago));
}
function table() {
  const filter = $("filter").value, body = $("rows");
  const shown = rows.filter(r => !filter || r.state === filter);
  shown.sort((a, b) => {
    const x = a[sortKey], y = b[sortKey];
    return (x < y ? -1 : x > y ? 1 : a.id - b.id) * sortDir;
  });
  body.replaceChildren(...shown.map(r => {
    const tr = el("tr", {"data-id": r.id, "data-state": r.state});
    for (const [key, , num] of COLUMNS) {
      let v = r[key];
      if (key === "age" || key === "idle") v = secs(v);
      const td = el("td", num ? {"class": "num"} : {});
      if (key === "state") td.append(el("span", {"class": "state",
        style: "background:" + (COLORS[v] || "#ddd") + "33"}, v));
      else td.textContent = String(v);
      tr.append(td);
    }
    return tr;
  }));
  $("shown").textContent = shown.length + " of " + rows.length + " shown";
}
function filterOptions(byState) {
  const select = $("filter"), keep = select.value;
  const states = Object.keys(byState);
  if (keep && !states.includes(keep)) states.push(keep);
  select.replaceChildren(el("option", {value: ""}, "all states"),
    ...states.sort().map(s => el("option", {value: s}, s + " (" + (byState[s] || 0) + ")")));
  select.value = keep;
}
async function refresh() {
  try {
    const reply = await fetch("status.json", {cache: "no-store"});
    if (!reply.ok) throw new Error("HTTP " + reply.status);
    const data = await reply.json();
    if (last) {
      const dt = Math.max(1e-3, data.uptime - last.uptime);
      samples.push({t: data.uptime,
        in: Math.max(0, data.totals.bytes_in - last.totals.bytes_in) / dt,
        out: Math.max(0, data.totals.bytes_out - last.totals.bytes_out) / dt});
      while (samples.length && samples[0].t < data.uptime - HISTORY) samples.shift();
    }
    last = data; rows = data.connections;
    const server = data.server || {};
    $("title").textContent = "reactor " + (server.service || server.server || "") +
      " - pid " + data.pid;
    document.title = $("title").textContent;
    cards(data); stateChart(data.by_state); throughputChart(); filterOptions(data.by_state);
    table();
    $("error").textContent = "";
    $("updated").textContent = "updated " + new Date(data.time * 1000).toLocaleTimeString();
    document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
  } catch (err) {
    $("error").textContent = "cannot reach the server: " + err.message;
  } finally {
    setTimeout(refresh, interval);
  }
}
function header() {
  const tr = $("head");
  tr.replaceChildren(...COLUMNS.map(([key, title, num]) => {
    const th = el("th", num ? {"class": "num", "data-key": key} : {"data-key": key}, title);
    if (key === sortKey) th.dataset.dir = sortDir > 0 ? "asc" : "desc";
    th.addEventListener("click", () => {
      sortDir = key === sortKey ? -sortDir : (num ? -1 : 1); sortKey = key;
      header(); table();
    });
    return th;
  }));
}
$("filter").addEventListener("change", table);
header();
refresh();
"""

PAGE: Final = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>reactor status</title><style>{_STYLE}</style></head>
<body>
<header><h1 id="title">reactor</h1><span id="updated">loading...</span>
<span id="error"></span></header>
<main>
<section class="cards" id="cards"></section>
<section class="charts">
<div class="panel"><h2>Connections by state</h2><svg id="by-state"></svg></div>
<div class="panel"><h2>Throughput (bytes per second)</h2>
<svg id="throughput" preserveAspectRatio="none"></svg></div>
</section>
<section class="panel"><h2>Connections
<select id="filter"><option value="">all states</option></select>
<span id="shown"></span></h2>
<table id="conns"><thead><tr id="head"></tr></thead><tbody id="rows"></tbody></table>
</section>
</main>
<script>{_SCRIPT}</script>
</body></html>
""".encode()
