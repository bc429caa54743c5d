"""One local Ray instance per test module (start-up costs ~15 s on 2 cores)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def ray_local():
    import ray

    from service.sweeps.run import init_ray

    init_ray(None)
    yield
    ray.shutdown()
