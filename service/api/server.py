"""uvicorn for `cpsweep serve`, with the timeouts uvicorn itself lacks.

uvicorn closes idle keep-alive connections, but a client that opens a connection and
sends its request headers slowly (or never) is held open indefinitely. The protocol
below closes any connection whose request headers are not complete within
`header_timeout_s` of its opening (or of the previous response); request bodies
have their own deadline in service.api.bodies.read_body, and `limit_concurrency`
answers 503 beyond a number of open connections.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["run_uvicorn"]

log = logging.getLogger(__name__)


def _timed_h11_protocol(header_timeout_s: float) -> type[asyncio.Protocol]:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class _TimedH11(H11Protocol):  # type: ignore[misc]
        """H11Protocol plus a deadline for each request's headers."""

        _header_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_late)

        def _headers_late(self) -> None:
            # IDLE: h11 has not yet parsed a full request line + headers.
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                log.info("closing %s: request headers not received in %gs", self.client,
                         header_timeout_s)  # fmt: skip
                self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

    return _TimedH11


def run_uvicorn(
    app: Any,
    *,
    host: str,
    port: int,
    header_timeout_s: float = 10.0,
    max_connections: int = 256,
) -> None:
    import uvicorn

    uvicorn.run(
        app,
        host=host,
        port=port,
        http=_timed_h11_protocol(header_timeout_s),
        log_level="info",
        server_header=False,
        proxy_headers=False,
        timeout_keep_alive=5,
        limit_concurrency=max_connections,
        backlog=max_connections,
    )
