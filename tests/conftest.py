"""Session-wide pytest hooks.

After the summary is printed, the test process ends with pytest's own exit status and
skips the interpreter's teardown. Native threads left by the libraries the tests drive
(Ray's core worker, gloo, MLflow's and torch's thread pools) have crashed that teardown
with a segmentation fault after every test had passed (seen once in a CI dry run: 523
passed, then SIGSEGV at exit), which turned a green run red. Nothing is lost: pytest has
written its report by then, and every test cleans up its own servers and clusters.
"""

from __future__ import annotations

import os
import sys
from typing import Any

_status: dict[str, int] = {}


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    _status["exit"] = int(exitstatus)


def pytest_unconfigure(config: Any) -> None:
    if "exit" not in _status or os.environ.get("CPSWEEP_PYTEST_NORMAL_EXIT"):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_status["exit"])
