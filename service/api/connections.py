"""Who may hold a connection to the API: per-client and total limits that idle clients
cannot fill and that never refuse a health probe.

uvicorn's `limit_concurrency` counts every open connection, idle ones included, and
answers 503 to every request beyond it, /healthz too: 300 idle TCP connections from
one pod made the livenessProbe fail and Kubernetes restart the API. Here instead:

- An idle connection (no request in progress: none sent yet, headers still arriving,
  or kept alive after a response) holds no slot against a new one. When a client
  address already holds `max_per_client` connections, its oldest idle one is closed to
  make room; when the server holds `max_total`, the oldest idle one of the client
  holding the most is. A connection whose first bytes the server has not read yet
  counts as idle: a client opening more than its limit at once loses its own oldest.
- Only when no idle connection can be closed is the new one *over the limit*: it is
  served one request and then closed, and that request gets 503 with Retry-After
  unless it is a probe (`PROBE_PATHS`). Probes are answered on every connection.
- `saturation` is the readiness side: when `max_total` connections have a request in
  progress, /readyz says not ready (a Service stops routing here) while /healthz, the
  liveness, still answers 200, so overload never becomes a restart loop.

A client is its source address: behind a proxy every client shares the proxy's, so
raise `max_per_client` to `max_total` there. The book is plain data, run on the event
loop's thread only (no locks); service.api.server feeds it from uvicorn's protocol.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from service.api.guards import RETRY_AFTER_S

__all__ = ["PROBE_PATHS", "Connection", "ConnectionBook", "limit_connections"]

log = logging.getLogger(__name__)

PROBE_PATHS = frozenset({"/healthz", "/readyz"})
_WARN_EVERY_S = 10.0  # one warning per this while connections are over the limit

Key = tuple[str, int]  # the client's (address, port), as ASGI's scope["client"]


class Connection(Protocol):
    """What the book needs of a connection (service.api.server's protocol)."""

    @property
    def idle(self) -> bool: ...  # no request in progress

    def close(self) -> None: ...


class ConnectionBook:
    """Open connections by client address; decides which idle one to close and which new
    one is over the limit."""

    def __init__(self, max_total: int, max_per_client: int):
        if max_total < 1 or max_per_client < 1:
            raise ValueError(f"connection limits must be >= 1: {max_total}, {max_per_client}")
        self.max_total, self.max_per_client = max_total, max_per_client
        self._all: dict[Key, Connection] = {}
        self._clients: dict[str, dict[Key, Connection]] = {}  # oldest first (dicts keep order)
        self._over: set[Key] = set()
        self._over_unlogged, self._logged_at = 0, -_WARN_EVERY_S

    def __len__(self) -> int:
        return len(self._all)

    def open(self, key: Key, conn: Connection) -> bool:
        """Count a new connection; close idle ones to make room. True: it is over."""
        ip = key[0]
        limit = ""
        if len(self._clients.get(ip, ())) >= self.max_per_client:
            self._evict(self._clients[ip])
            if len(self._clients.get(ip, ())) >= self.max_per_client:
                limit = "--max-client-connections"
        if not limit and len(self._all) >= self.max_total:
            # The client holding the most pays first.
            for conns in sorted(self._clients.values(), key=len, reverse=True):
                if self._evict(conns):
                    break
            if len(self._all) >= self.max_total:
                limit = "--max-connections"
        self._clients.setdefault(ip, {})[key] = conn
        self._all[key] = conn
        if limit:
            self._over.add(key)
            self._note_over(ip, limit)
        return bool(limit)

    def close(self, key: Key, conn: Connection) -> None:
        """Forget a closed connection (a no-op once it was evicted and replaced)."""
        if self._all.get(key) is not conn:
            return
        del self._all[key]
        self._over.discard(key)
        conns = self._clients[key[0]]
        del conns[key]
        if not conns:
            del self._clients[key[0]]

    def is_over(self, key: Key | None) -> bool:
        return key in self._over

    def busy(self, besides: Key | None = None) -> int:
        """Connections with a request in progress, not counting `besides` (the asker)."""
        return sum(not c.idle for k, c in self._all.items() if k != besides)

    def saturation(self, asking: Key | None) -> str | None:
        """Why a new request would be refused now, else None (for /readyz)."""
        busy = self.busy(besides=asking)
        if busy < self.max_total:
            return None
        return (
            f"saturated: {busy} connections have a request in progress, the limit is "
            f"{self.max_total} (--max-connections); new requests get 503"
        )

    def _evict(self, conns: dict[Key, Connection]) -> bool:
        """Close the oldest idle connection of `conns`; False if none is idle."""
        key = next((k for k, c in conns.items() if c.idle), None)
        if key is None:
            return False
        conn = conns[key]
        log.debug("connection limit: closing idle %s:%d", *key)
        self.close(key, conn)
        conn.close()
        return True

    def _note_over(self, ip: str, limit: str) -> None:
        """A warning now and then, not one per connection of a flood."""
        self._over_unlogged += 1
        now = time.monotonic()
        if now - self._logged_at < _WARN_EVERY_S:
            return
        log.warning(
            "%s reached, no connection idle: %d new one(s) since the last warning get one "
            "answer (a probe's, else 503) and are closed; the latest from %s, which holds "
            "%d of %d",
            limit, self._over_unlogged, ip, len(self._clients[ip]), len(self._all),
        )  # fmt: skip
        self._over_unlogged, self._logged_at = 0, now


# -- ASGI: what an over-the-limit connection is answered ------------------------------------

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

_BUSY_BODY = (
    b'{"detail": "too many connections from this address or in all; retry in '
    + str(RETRY_AFTER_S).encode()
    + b' s"}'
)


def limit_connections(app: App, book: ConnectionBook) -> App:
    """Wrap `app`: a connection over the limit gets one answer (a probe's, else 503)
    and is closed after it."""

    async def limited(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not book.is_over(scope.get("client")):
            return await app(scope, receive, send)

        async def send_and_close(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
            await send(message)

        if scope["path"] in PROBE_PATHS:
            return await app(scope, receive, send_and_close)
        headers = [
            (b"content-type", b"application/json"),
            (b"retry-after", str(RETRY_AFTER_S).encode()),
        ]
        await send_and_close({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": _BUSY_BODY})

    return limited
