"""The connection book (service.api.connections) without a server: fake connections."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import MutableMapping
from typing import Any

import pytest

from service.api.connections import ConnectionBook, limit_connections


class FakeConn:
    def __init__(self, idle: bool = True) -> None:
        self.idle, self.closed = idle, False

    def close(self) -> None:
        self.closed = True


def _open(book: ConnectionBook, ip: str, port: int, idle: bool = True) -> tuple[FakeConn, bool]:
    conn = FakeConn(idle)
    return conn, book.open((ip, port), conn)


def test_idle_connections_of_one_client_make_room_oldest_first() -> None:
    """The finding: 300 idle connections from one address. It keeps `max_per_client`;
    each new one closes its oldest idle one, and nobody is ever over the limit."""
    book = ConnectionBook(max_total=40, max_per_client=8)
    conns = [_open(book, "10.0.0.9", 1000 + i) for i in range(300)]
    assert not any(over for _, over in conns)
    assert [c.closed for c, _ in conns] == [True] * 292 + [False] * 8
    assert len(book) == 8
    _, over = _open(book, "10.0.0.9", 5000)  # a probe from the same address
    assert not over and conns[292][0].closed and len(book) == 8
    assert book.saturation(None) is None


def test_busy_connections_are_kept_and_the_next_one_is_over() -> None:
    book = ConnectionBook(max_total=40, max_per_client=4)
    busy = [_open(book, "10.0.0.1", i, idle=False) for i in range(4)]
    extra, over = _open(book, "10.0.0.1", 99)
    assert over and book.is_over(("10.0.0.1", 99)) and not any(c.closed for c, _ in busy)
    # Another client is not affected; the extra (idle) one makes room for the next.
    assert not _open(book, "10.0.0.2", 1)[1]
    _, over = _open(book, "10.0.0.1", 100)
    assert over and extra.closed and not book.is_over(("10.0.0.1", 99))


def test_total_limit_closes_the_oldest_idle_of_anyone_then_saturates() -> None:
    book = ConnectionBook(max_total=6, max_per_client=4)
    a = [_open(book, "10.0.0.1", i, idle=False)[0] for i in range(3)]
    b = [_open(book, "10.0.0.2", i)[0] for i in range(3)]  # idle
    c, over = _open(book, "10.0.0.3", 1, idle=False)
    assert not over and b[0].closed and len(book) == 6
    for conn in b[1:]:
        conn.idle = False
    assert book.busy() == 6 and book.saturation(None) is not None
    assert book.saturation(("10.0.0.2", 1)) is None  # the asker's own request: 5 besides
    d, over = _open(book, "10.0.0.4", 1)
    assert over and not any(x.closed for x in [*a, *b[1:], c])
    d.idle = False
    why = book.saturation(("10.0.0.4", 1))
    assert why is not None and "6 connections have a request in progress" in why
    for i in range(3):
        book.close(("10.0.0.1", i), a[i])
    assert book.saturation(None) is None and len(book) == 4


def test_at_the_total_limit_the_client_holding_the_most_loses_an_idle_one() -> None:
    book = ConnectionBook(max_total=6, max_per_client=6)
    small = _open(book, "10.0.0.1", 1)[0]  # idle, and the oldest of all
    big = [_open(book, "10.0.0.2", i)[0] for i in range(5)]
    assert not _open(book, "10.0.0.3", 1)[1]
    assert not small.closed and big[0].closed and not any(c.closed for c in big[1:])


def test_over_the_limit_is_logged_now_and_then(caplog: pytest.LogCaptureFixture) -> None:
    book = ConnectionBook(max_total=1, max_per_client=1)
    book.open(("10.0.0.1", 1), FakeConn(idle=False))
    with caplog.at_level(logging.WARNING, logger="service.api.connections"):
        overs = [book.open((f"10.0.1.{i}", 1), FakeConn(idle=False)) for i in range(100)]
    assert all(overs)
    assert len(caplog.records) == 1 and "--max-connections reached" in caplog.text


def test_close_after_eviction_does_not_forget_a_newer_connection_on_the_same_key() -> None:
    book = ConnectionBook(max_total=1, max_per_client=1)
    old, _ = _open(book, "10.0.0.1", 7)
    new, over = _open(book, "10.0.0.1", 8)
    assert old.closed and not over
    book.close(("10.0.0.1", 7), old)  # uvicorn's connection_lost, later
    again = FakeConn()
    book.open(("10.0.0.1", 7), again)  # the port is reused
    book.close(("10.0.0.1", 7), old)  # a stale close
    assert len(book) == 1 and not again.closed and new.closed


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        ConnectionBook(0, 1)


# -- the ASGI side ---------------------------------------------------------------------------


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def _call(book: ConnectionBook, path: str, client: tuple[str, int]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "path": path, "client": client}
    asyncio.run(limit_connections(_app, book)(scope, receive, send))
    return sent


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_over_connections_still_get_probes_answered_then_closed(path: str) -> None:
    book = ConnectionBook(max_total=1, max_per_client=1)
    book.open(("10.0.0.1", 1), FakeConn(idle=False))
    book.open(("10.0.0.1", 2), FakeConn())
    start, _ = _call(book, path, ("10.0.0.1", 2))
    assert start["status"] == 200 and (b"connection", b"close") in start["headers"]
    start, _ = _call(book, "/v1/sweeps", ("10.0.0.1", 2))
    assert start["status"] == 503 and (b"retry-after", b"2") in start["headers"]
    assert (b"connection", b"close") in start["headers"]
    start, _ = _call(book, "/v1/sweeps", ("10.0.0.1", 1))  # within the limit: the app
    assert start["status"] == 200 and start["headers"] == []


def test_over_body_is_json_naming_the_limit() -> None:
    book = ConnectionBook(max_total=1, max_per_client=1)
    book.open(("10.0.0.1", 1), FakeConn(idle=False))
    book.open(("10.0.0.1", 2), FakeConn())
    _, body = _call(book, "/v1/sweeps", ("10.0.0.1", 2))
    assert "too many connections" in json.loads(body["body"])["detail"]
