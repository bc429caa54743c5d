"""One local Ray instance for the in-process test modules, and private ones beside it.

Starting Ray costs ~15 s on 2 cores and a process holds one Ray instance at a time, so
the modules that run sweeps in the test process share one: `SHARED` starts it as
`cpsweep run` without an address does (`service.sweeps.run.init_ray(None)`), on first
use; tests/conftest.py starts it for every test that asks for the `ray_local` fixture
and stops it after the last one. A module that needs other `ray.init` arguments
(tests/ray/test_gpu_packing.py: four logical CPUs and one logical GPU) takes
`private_ray(...)`, which stops the shared instance first; the next test that asks for
`ray_local` starts it again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["SHARED", "private_ray"]


class _Shared:
    """The shared instance: started by `ensure`, stopped by `stop` (both idempotent)."""

    def __init__(self) -> None:
        self.running = False

    def ensure(self) -> None:
        import ray

        from service.sweeps.run import init_ray

        if self.running and ray.is_initialized():
            return
        if ray.is_initialized():
            raise RuntimeError(
                "a Ray instance this conftest did not start is running in the test process; "
                "start other instances with tests.local_ray.private_ray"
            )
        init_ray(None)
        self.running = True

    def stop(self) -> None:
        if self.running:
            import ray

            ray.shutdown()
            self.running = False


SHARED = _Shared()


@contextlib.contextmanager
def private_ray(**init_kwargs: Any) -> Iterator[None]:
    """`ray.init(**init_kwargs)` for one module, after stopping the shared instance."""
    import ray

    SHARED.stop()
    ray.init(**init_kwargs)
    try:
        yield
    finally:
        ray.shutdown()
