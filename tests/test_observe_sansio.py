"""The observation endpoints' socket-free parts: the bounded HTTP request reader, the
Prometheus text writer and the status page's self-containment."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from reactor.sansio.httpmini import MAX_HEAD, BadRequest, RequestReader, response
from reactor.sansio.promtext import Family, check_name, render
from reactor.sansio.statuspage import PAGE

REQUEST = b"GET /metrics?x=1 HTTP/1.1\r\nHost: localhost:9100\r\nAccept: */*\r\n\r\n"


def feed_all(chunks: list[bytes]) -> object:
    reader = RequestReader()
    result = None
    for chunk in chunks:
        got = reader.feed(chunk)
        if got is not None:
            result = got
    return result


@given(st.lists(st.integers(min_value=0, max_value=len(REQUEST)), max_size=8))
def test_any_split_gives_the_same_request(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [REQUEST[a:b] for a, b in zip([0, *points], [*points, len(REQUEST)], strict=True)]
    request = feed_all(chunks)
    assert request is not None
    assert (request.method, request.path, request.query) == ("GET", "/metrics", "x=1")
    assert request.headers == {"host": "localhost:9100", "accept": "*/*"}


def test_byte_by_byte_and_bare_newlines() -> None:
    assert feed_all([bytes([b]) for b in REQUEST]) is not None
    request = RequestReader().feed(b"HEAD / HTTP/1.0\nHost: x\n\n")
    assert request is not None and request.method == "HEAD" and request.path == "/"


@pytest.mark.parametrize(("head", "status"), [
    (b"GET /metrics\r\n\r\n", 400),
    (b"GET  /metrics HTTP/1.1\r\n\r\n", 400),
    (b"GET http://x/metrics HTTP/1.1\r\n\r\n", 400),
    (b"G(T / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\n\r\n", 505),
    (b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
])
def test_bad_requests_name_their_status(head: bytes, status: int) -> None:
    with pytest.raises(BadRequest) as caught:
        RequestReader().feed(head)
    assert caught.value.status == status


def test_a_request_head_is_bounded() -> None:
    reader = RequestReader()
    reader.feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(BadRequest) as caught:
        reader.feed(b"X-Long: " + b"a" * MAX_HEAD)
    assert caught.value.status == 431


def test_response_shape() -> None:
    reply = response(200, b"hello", head_only=True)
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 5\r\n" in reply and b"Connection: close\r\n" in reply
    assert reply.endswith(b"\r\n\r\n")
    assert b"Allow: GET" in response(405, b"", headers={"Allow": "GET"})


def test_exposition_parses_and_escapes() -> None:
    text = render([
        Family("demo_requests_total", "counter", "Requests.\nTwo lines.").add(
            3, path='a "quoted"\\path\nnext'),
        Family("demo_lag_seconds", "gauge", "Lag.").add(0.25).add(float("inf"), kind="x"),
        Family("demo_empty", "gauge", "No samples."),
    ]).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = families["demo_requests"]  # the parser drops _total from a counter's name
    assert requests.type == "counter"
    assert requests.samples[0].labels == {"path": 'a "quoted"\\path\nnext'}
    assert requests.samples[0].value == 3
    values = [s.value for s in families["demo_lag_seconds"].samples]
    assert values == [0.25, float("inf")]
    assert "demo_empty" in families


@pytest.mark.parametrize(("name", "kind"), [
    ("requests", "counter"), ("bytes_total", "gauge"), ("9lives", "gauge"),
    ("ok_total", "histogram"),
])
def test_names_follow_the_conventions(name: str, kind: str) -> None:
    with pytest.raises(ValueError):
        check_name(name, kind)
    with pytest.raises(ValueError, match="label"):
        Family("x_total", "counter", "x").add(1, **{"__reserved": "1"})


def test_the_page_is_self_contained() -> None:
    html = PAGE.decode()
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=|url\(|@import""", html)
    assert "status.json" in html and "innerHTML" not in html
