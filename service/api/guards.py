"""Back-pressure of the REST API: bounded CPU work and a Ray gate that fails fast.

`HeavyGate` runs spec parsing/validation in worker threads, at most `limit` at once;
the next caller gets 503 with `Retry-After` instead of queueing behind them, so the
event loop (and /healthz) stays responsive. `RayGate` shares one health probe of the
Ray Jobs API among all callers: when the dashboard is down or hangs, /healthz says so
within `wait_s` and the other routes answer 503 at once, instead of each waiting out
its own timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from fastapi import HTTPException

from service.jobs.client import JobsError, RayUnreachable

__all__ = ["RETRY_AFTER_S", "HeavyGate", "RayGate", "busy"]

log = logging.getLogger(__name__)

T = TypeVar("T")
RETRY_AFTER_S = 2


def busy(what: str) -> HTTPException:
    return HTTPException(
        503,
        f"{what}; retry in {RETRY_AFTER_S} s",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


class HeavyGate:
    """At most `limit` CPU-heavy calls in worker threads; beyond that, 503 at once."""

    def __init__(self, limit: int, what: str):
        self._limit, self._what, self._busy = limit, what, 0
        self._threads = anyio.CapacityLimiter(limit)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        # Checked and counted on the event loop's thread: no race between callers.
        if self._busy >= self._limit:
            raise busy(f"{self._limit} {self._what} in progress")
        self._busy += 1
        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=self._threads)
        finally:
            self._busy -= 1


class RayGate:
    """One shared ping of the Ray Jobs API every `ttl_s`; routes call Ray through it.

    At most `max_calls` calls run at once; up to `max_queued` more wait for a thread
    (Ray answered the last probe, so the wait is short); beyond that, 503.
    """

    def __init__(
        self,
        ping: Callable[[], None],
        *,
        max_calls: int = 16,
        max_queued: int = 64,
        ttl_s: float = 2.0,
        wait_s: float = 1.0,
    ):
        self._ping, self._ttl, self._wait = ping, ttl_s, wait_s
        self._max_waiting, self._calls = max_calls + max_queued, 0
        self._threads = anyio.CapacityLimiter(max_calls)
        self._probe_thread = anyio.CapacityLimiter(1)
        self._error: JobsError | None = RayUnreachable("not checked yet")
        self._checked_at = -1e9
        self._probe: asyncio.Task[None] | None = None
        self._probe_started = 0.0

    @property
    def error(self) -> JobsError | None:
        """Why Ray counts as down (None: it answered the last probe)."""
        return self._error

    async def _run_probe(self) -> None:
        try:
            await anyio.to_thread.run_sync(self._ping, limiter=self._probe_thread)
            error = None
        except JobsError as exc:
            error = exc
        except Exception as exc:  # the SDK may raise anything; a probe must not
            error = RayUnreachable(f"Ray Jobs API probe failed: {type(exc).__name__}")
        if error is not None and self._error is None:
            log.info("Ray Jobs API not reachable: %s", error)
        self._error, self._checked_at = error, time.monotonic()

    async def check(self) -> JobsError | None:
        """None when Ray answered within the last `ttl_s`; else why not, within `wait_s`."""
        now = time.monotonic()
        if now - self._checked_at <= self._ttl:
            return self._error
        if self._probe is None or self._probe.done():
            self._probe, self._probe_started = asyncio.ensure_future(self._run_probe()), now
        remaining = self._probe_started + self._wait - now
        if remaining > 0:
            await asyncio.wait({self._probe}, timeout=remaining)
        if not self._probe.done():  # hung: say so now; the probe ends by its own timeout
            return RayUnreachable(
                f"the Ray Jobs API did not answer within {self._wait:g} s (a probe is "
                "still waiting); it is overloaded or hung"
            )
        return self._error

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) in a worker thread, or the reason Ray is down at once (503)."""
        error = await self.check()
        if error is not None:
            raise type(error)(str(error))
        if self._calls >= self._max_waiting:  # the rest wait for one of max_calls threads
            raise busy(f"{self._max_waiting} Ray Jobs API calls in progress or queued")
        self._calls += 1
        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=self._threads)
        except RayUnreachable as exc:
            self._error, self._checked_at = exc, time.monotonic()
            raise
        finally:
            self._calls -= 1
