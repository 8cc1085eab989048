"""Helpers for the observation endpoints' tests (not a test module): HTTP over a raw
socket with a deadline, the exposition parsed by ``prometheus_client``."""

from __future__ import annotations

import json
import socket
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from servekit import WAIT, read_until_closed


def http(port: int, request: bytes | str,
         host: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` (a whole head, or ``METHOD PATH``) and read the reply to the
    close: (status, headers lowercased, body)."""
    if isinstance(request, str):
        request = f"{request} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    with socket.create_connection((host, port), timeout=WAIT) as sock:
        sock.sendall(request)
        reply = read_until_closed(sock)
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` parsed: (sample name, sorted labels) -> value."""
    status, headers, body = http(port, "GET /metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def status_json(port: int) -> Any:
    status, headers, body = http(port, "GET /status.json")
    assert status == 200 and headers["content-type"] == "application/json"
    return json.loads(body)
