"""Session-wide test set-up: faulthandler through exit, one shared Ray.

- Ray workers and subprocesses import this checkout (PYTHONPATH).
- faulthandler stays on until the interpreter is gone: pytest turns its own off when it
  unconfigures, before the interpreter's teardown, where native threads (Ray's core
  worker, gloo, torch's and MLflow's pools) would crash if anything were left running.
  A crash there prints every thread's stack and the run fails with the signal's status.
- `ray_local`: the local Ray instance the in-process modules share (tests/local_ray.py),
  started before the first test that asks for it and stopped after the last one, so no
  Ray threads outlive the tests.
"""

from __future__ import annotations

import faulthandler
import os
import sys
from collections.abc import Iterator

import pytest

from tests.local_ray import SHARED
from tests.servers import REPO

# -- faulthandler ---------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # Enabled before pytest's faulthandler plugin configures, which then restores it,
    # instead of turning it off, when it unconfigures.
    if not faulthandler.is_enabled():
        faulthandler.enable(file=sys.__stderr__ or sys.stderr, all_threads=True)
    # Ray workers and subprocesses import this checkout, not whichever one the venv's
    # editable install names (a git worktree sharing another checkout's .venv).
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(REPO) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *paths])


# -- the shared Ray instance ----------------------------------------------------------------

_last_ray_user: list[pytest.Item] = []


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """The shared local Ray instance (`service.sweeps.run.init_ray(None)`)."""
    SHARED.ensure()
    yield
    SHARED.stop()


def pytest_collection_finish(session: pytest.Session) -> None:
    users = [item for item in session.items if "ray_local" in getattr(item, "fixturenames", ())]
    _last_ray_user[:] = users[-1:]
    for item in users:
        if item.get_closest_marker("integration") is None:
            raise pytest.UsageError(f"{item.nodeid} uses ray_local: mark it integration")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if "ray_local" in getattr(item, "fixturenames", ()):
        SHARED.ensure()  # again, after a module's private instance (tests/local_ray.py)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    try:
        yield
    finally:
        if _last_ray_user and item is _last_ray_user[0]:
            SHARED.stop()
