"""Old module names of moved code, so that a sweep interrupted before the move still resumes.

Tune's tuner.pkl (written when a sweep's fit() starts) names the class of every callback
and of the scheduler by module path; `Tuner.restore` unpickles it with Ray's cloudpickle,
which imports those paths. The service/ and trainables/ restructures moved the modules,
so `alias_moved_modules()` runs just before `Tuner.restore` and makes the old paths
resolve to the new modules. One table, `MOVED`, lists them (`git log --diff-filter=R`).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import pkgutil
import sys
from types import ModuleType
from typing import Any

from trainables.core.moved import MOVED as TRAINABLES_MOVED

# old module -> the module its code lives in now (service/ here, trainables/ in its table)
MOVED: dict[str, str] = {
    **TRAINABLES_MOVED,
    "service.accounting": "service.tracking.accounting",
    "service.allowlists": "service.api.allowlists",
    "service.api": "service.api.app",
    "service.api_bodies": "service.api.bodies",
    "service.api_guards": "service.api.guards",
    "service.api_server": "service.api.server",
    "service.api_settings": "service.api.settings",
    "service.control": "service.sweeps.control",
    "service.job_driver": "service.jobs.driver",
    "service.job_errors": "service.jobs.errors",
    "service.job_submit": "service.jobs.submit",
    "service.job_trials": "service.jobs.trials",
    "service.jobs": "service.jobs.client",
    "service.jobs_cli": "service.jobs.cli",
    "service.mlflow_schema": "service.tracking.schema",
    "service.plots": "service.tracking.plots",
    "service.progress": "service.sweeps.progress",
    "service.report": "service.reporting.report",
    "service.report_charts": "service.reporting.charts",
    "service.report_html": "service.reporting.html",
    "service.scheduler": "service.sweeps.scheduler",
    "service.sweep": "service.sweeps.run",
    "service.sweep_run": "service.tracking.parent_run",
    "service.tracking": "service.tracking.callback",
    "service.tracking_sync": "service.tracking.sync",
    "service.tracking_wal": "service.tracking.wal",
    "service.tracking_writer": "service.tracking.writer",
    "service.usage": "service.tracking.usage",
}


def alias_moved_modules() -> None:
    """Make every old name in `MOVED` resolve as pickle resolves a class or function:
    `import old`, then `getattr(sys.modules[old], qualname)`. Lazy: a new module is
    imported when a pickle first names it. Idempotent.

    An old name that is free imports as its new module (`_MovedFinder`). An old name
    that is now a package (service.tracking, service.api, service.jobs: the old module is
    one of its submodules) stays that package, and a name it lacks is looked up in that
    submodule (a module `__getattr__`, PEP 562), e.g. `service.tracking.MLflowSweepCallback`;
    its own names and submodules come first, as before."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
    for old, new in MOVED.items():
        parent, _, child = old.rpartition(".")
        spec = importlib.util.find_spec(parent)
        where = spec.submodule_search_locations if spec else None
        if where and any(m.name == child for m in pkgutil.iter_modules(where)):
            package = importlib.import_module(old)
            if hasattr(package, "__path__") and not isinstance(
                vars(package).get("__getattr__"), _FromMoved
            ):
                vars(package)["__getattr__"] = _FromMoved(old, new)  # PEP 562 hook


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Last in `sys.meta_path`: an old module name no file holds any more imports as the
    module in `MOVED` (the same module object, not a copy)."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: Any) -> ModuleType:
        module = importlib.import_module(MOVED[spec.name])
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The module ran when it was imported under its new name; the import system has
        # just set its `__spec__` to the old name's: give it back its own.
        module.__spec__ = module.__spec__.loader_state  # type: ignore[union-attr]


class _FromMoved:
    """A package's `__getattr__`: names its old same-named module defined, from `new`."""

    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new

    def __call__(self, name: str) -> Any:
        if not name.startswith("__"):
            module = importlib.import_module(self.new)
            value = vars(module).get(name)
            if value is not None and getattr(value, "__module__", None) == self.new:
                return value
        raise AttributeError(f"module {self.old!r} has no attribute {name!r}")
