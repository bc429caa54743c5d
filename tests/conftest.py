"""Session-wide test set-up: faulthandler through exit, one shared Ray, the unit-test guard.

- Ray workers and subprocesses import this checkout (PYTHONPATH) and run one torch
  thread each (OMP_NUM_THREADS=1).
- faulthandler stays on until the interpreter is gone: pytest turns its own off when it
  unconfigures, before the interpreter's teardown, where native threads (Ray's core
  worker, gloo, torch's and MLflow's pools) would crash if anything were left running.
  A crash there prints every thread's stack and the run fails with the signal's status.
- `ray_local`: the local Ray instance the in-process modules share (tests/local_ray.py),
  started before the first test that asks for it and stopped after the last one, so no
  Ray threads outlive the tests; tests/tracking runs right after tests/ray.
- A test without the `integration` marker may not start a process (subprocess, fork,
  multiprocessing; Ray and servers start processes), so that `make unit` needs no
  cluster, server or subprocess.
"""

from __future__ import annotations

import faulthandler
import multiprocessing.process
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.local_ray import SHARED
from tests.servers import REPO

TESTS = REPO / "tests"

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
    # One torch (OpenMP) thread per process, as Ray gives a 1-CPU worker, here and in every
    # subprocess: tests run Ray workers, servers and CLIs side by side on 2 cores, where
    # torch's default, a thread per core, spin-waits for a busy core (`make unit` took
    # twice the CPU, `cpsweep train` on digits seven times). Set it to use more.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    _guard.append(_ProcessGuard())


# -- the shared Ray instance ----------------------------------------------------------------

_last_ray_user: list[pytest.Item] = []
_guard: list[_ProcessGuard] = []  # made in pytest_configure


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """The shared local Ray instance (`service.sweeps.run.init_ray(None)`)."""
    SHARED.ensure()
    yield
    SHARED.stop()


# Packages whose modules share the in-process Ray run back to back (tests/tracking would
# otherwise run after tests/service, tests/test_*.py and their subprocess benchmarks, with
# the shared instance idle at ~8% of a core meanwhile).
_RAY_PACKAGES = ("ray", "tracking")


# Files that take a minute or more on 2 cores. Under pytest-xdist (`make test`) whole files
# are handed to the workers in collection order, so these go first: a long file started
# last would keep one worker busy while the other idles.
SLOW_FILES = (
    "ray/test_cluster.py",
    "ray/test_sweeps.py",
    "integration/test_cluster_jobs.py",
    "ray/test_pool.py",
    "ray/test_any_task_examples.py",
    "ray/test_gpu_packing.py",
    "ray/test_user_code.py",
    "test_bench_paper_long.py",
    "integration/test_readme_cluster.py",
    "tracking/test_outages.py",
    "test_bench_gpu.py",
    "test_k8s.py",
    "tracking/test_report.py",
    "tracking/test_backends.py",
    "ray/test_regression_cli.py",
    "tracking/test_browser.py",
    "test_bench_driver_scale.py",
    "ray/test_own_loop.py",
)


def _slow_files_first(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        rel = item.path.relative_to(TESTS).as_posix()
        return SLOW_FILES.index(rel) if rel in SLOW_FILES else len(SLOW_FILES)

    items.sort(key=rank)  # stable: keeps each file's tests, and the other files, in order


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        _slow_files_first(items)
        return  # each worker starts its own shared Ray; grouping its users buys nothing

    def package(item: pytest.Item) -> str:
        parts = item.path.relative_to(TESTS).parts
        return parts[0] if len(parts) > 1 else ""

    group = [item for item in items if package(item) in _RAY_PACKAGES]
    if not group:
        return
    first = items.index(group[0])
    rest = [item for item in items if package(item) not in _RAY_PACKAGES]
    group.sort(key=lambda item: _RAY_PACKAGES.index(package(item)))  # stable: keeps their order
    items[:] = rest[:first] + group + rest[first:]


def pytest_collection_finish(session: pytest.Session) -> None:
    users = [item for item in session.items if "ray_local" in getattr(item, "fixturenames", ())]
    _last_ray_user[:] = users[-1:]
    for item in users:
        if item.get_closest_marker("integration") is None:
            raise pytest.UsageError(f"{item.nodeid} uses ray_local: mark it integration")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _guard[0].start(item)
    if "ray_local" in getattr(item, "fixturenames", ()):
        SHARED.ensure()  # again, after a module's private instance (tests/local_ray.py)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    try:
        yield
    finally:
        if _last_ray_user and item is _last_ray_user[0]:
            SHARED.stop()
    _guard[0].check(item)


# -- unit tests start no process ------------------------------------------------------------

_SPAWN_EVENTS = frozenset(
    {"subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn", "os.exec", "os.system"}
)


# Commands libraries run to describe the host (CodeCarbon, py-cpuinfo, platform): they
# return at once and serve nothing. Anything else a unit test may not start.
_HOST_PROBES = frozenset(
    {"uname", "lscpu", "nvidia-smi", "rocm-smi", "file", "ldconfig", "cpuinfo.py"}
)


def _is_host_probe(argv: Any) -> bool:
    if not isinstance(argv, list | tuple) or not argv:
        return False
    names = [os.path.basename(str(a)) for a in argv[:2]]
    return names[0] in _HOST_PROBES or (names[0].startswith("python") and names[-1] in _HOST_PROBES)


class _ProcessGuard:
    """Records the processes a unit test starts (audit events; multiprocessing's spawn
    and forkserver starts raise none, so `BaseProcess.start` reports itself)."""

    def __init__(self) -> None:
        self.started: list[str] | None = None  # None outside a unit test
        sys.addaudithook(self._audit)
        original = multiprocessing.process.BaseProcess.start

        def start(proc: Any) -> None:
            self._record(f"multiprocessing {proc!r}")
            original(proc)

        multiprocessing.process.BaseProcess.start = start  # type: ignore[method-assign]

    def _audit(self, event: str, args: tuple[Any, ...]) -> None:
        if event in _SPAWN_EVENTS and self.started is not None:
            argv = args[1] if event == "subprocess.Popen" and len(args) > 1 else None
            if not _is_host_probe(argv):
                self._record(f"{event} {argv or args[:1]!r}"[:300])

    def _record(self, what: str) -> None:
        if self.started is not None:
            self.started.append(what)

    def start(self, item: pytest.Item) -> None:
        self.started = None if item.get_closest_marker("integration") else []

    def check(self, item: pytest.Item) -> None:
        started, self.started = self.started, None
        if started:
            pytest.fail(
                f"{item.nodeid} started {len(started)} process(es) without the integration "
                f"marker (add @pytest.mark.integration): {started}",
                pytrace=False,
            )
