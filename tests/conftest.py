"""Session-wide test set-up.

- Ray workers and subprocesses import this checkout (PYTHONPATH).
- faulthandler stays on until the interpreter is gone: pytest turns its own off when it
  unconfigures, before the interpreter's teardown, where native threads (Ray's core
  worker, gloo, torch's and MLflow's pools) would crash if anything were left running.
  A crash there prints every thread's stack and the run fails with the signal's status.
"""

from __future__ import annotations

import faulthandler
import os
import sys

import pytest

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
