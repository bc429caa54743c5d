"""uvicorn for `cpsweep serve`, with the timeouts and connection limits uvicorn lacks.

uvicorn closes idle keep-alive connections, but a client that opens a connection and
sends its request headers slowly (or never) is held open indefinitely. The protocol
below closes any connection whose request headers are not complete within
`header_timeout_s` of its opening (or of the previous response); request bodies
have their own deadline in service.api.bodies.read_body. It also books every
connection in a `ConnectionBook` (service.api.connections), which closes idle ones
when a client or the server is at its limit; uvicorn's own `limit_concurrency` is
off, since it counts idle connections and refuses /healthz with the rest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from service.api.connections import ConnectionBook, limit_connections

__all__ = ["run_uvicorn"]

log = logging.getLogger(__name__)


class _Deadline:
    """One pending call of `late` after `timeout_s`; arming again restarts it."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, timeout_s: float, late: Callable[[], None]
    ) -> None:
        self._loop, self._timeout_s, self._late = loop, timeout_s, late
        self._handle: asyncio.TimerHandle | None = None

    def arm(self) -> None:
        self.cancel()
        self._handle = self._loop.call_later(self._timeout_s, self._late)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


def _timed_h11_protocol(header_timeout_s: float, book: ConnectionBook) -> type[asyncio.Protocol]:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class _TimedH11(H11Protocol):  # type: ignore[misc]
        """H11Protocol plus a deadline for each request's headers, booked in `book`."""

        _timer: _Deadline | None = None
        _key: tuple[str, int] = ("", 0)

        @property
        def idle(self) -> bool:
            # Both sides IDLE: before a request's headers are complete, or between
            # keep-alive requests (uvicorn starts h11's next cycle after a response).
            return self.conn.their_state is h11.IDLE and self.conn.our_state is h11.IDLE

        def close(self) -> None:
            if not self.transport.is_closing():
                self.transport.close()

        def _headers_late(self) -> None:
            # IDLE: h11 has not yet parsed a full request line + headers.
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                log.info("closing %s: request headers not received in %gs", self.client,
                         header_timeout_s)  # fmt: skip
                self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            # uvicorn's client is None only for a unix socket; `cpsweep serve` binds TCP.
            self._key = self.client or ("", id(self))
            book.open(self._key, self)
            self._timer = _Deadline(self.loop, header_timeout_s, self._headers_late)
            if not self.transport.is_closing():
                self._timer.arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._timer is not None and not self.transport.is_closing():
                self._timer.arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._timer is not None:
                self._timer.cancel()
            book.close(self._key, self)
            super().connection_lost(exc)

    return _TimedH11


def run_uvicorn(
    app: Any,
    *,
    host: str,
    port: int,
    book: ConnectionBook,
    header_timeout_s: float = 10.0,
) -> None:
    """Serve `app` until interrupted; `book` holds the connection limits (and is what
    the app's /readyz reads)."""
    import uvicorn

    uvicorn.run(
        limit_connections(app, book),
        host=host,
        port=port,
        http=_timed_h11_protocol(header_timeout_s, book),
        log_level="info",
        server_header=False,
        proxy_headers=False,
        timeout_keep_alive=5,
        limit_concurrency=None,  # the book limits connections; see the module docstring
        backlog=2048,  # uvicorn's default: a burst of connects waits in the kernel's queue
    )
