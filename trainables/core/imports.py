"""User code by import path: `"pkg.module:attr"` strings in a spec, checked as text or imported.

Two entry points with different trust. `check_target` only reads the text (the REST
server validates specs with it and never imports user code in its own process).
`resolve` imports the module and fetches the attribute; it runs where the code is
meant to run (`cpsweep train`, the `cpsweep run` driver's pre-flight, a trial). In a job
bound by a policy (trainables.core.policy: a sweep from the REST API) it checks the text
before anything is imported or put on sys.path, and the object before it is returned.

A module is looked up in, first to last: the directories passed as `paths` (the spec
file's directory), the directories in $CPSWEEP_IMPORT_PATH (how a driver hands the
spec's directory to its trials), the working directory, then `sys.path` (PYTHONPATH
and installed packages). Every error names the spec field, the value and the fix.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from trainables.core.moved import moved_hint
from trainables.core.policy import active_policy

__all__ = [
    "IMPORT_PATH_ENV",
    "FactoryError",
    "call_factory",
    "check_target",
    "import_dirs",
    "module_origin",
    "resolve",
]

IMPORT_PATH_ENV = "CPSWEEP_IMPORT_PATH"  # os.pathsep-separated directories searched first

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_TARGET = re.compile(rf"{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*")


class FactoryError(ValueError):
    """A user's import path does not resolve or its object misbehaves; names the field."""


def check_target(text: Any, field: str) -> str:
    """Validate `"pkg.module:attr"` as text only (nothing is imported); returns it."""
    if not isinstance(text, str) or not _TARGET.fullmatch(text):
        raise FactoryError(
            f"{field}: {text!r} is not an import path; write 'package.module:function' "
            "(a dotted module, a colon, the attribute), e.g. 'my_models:tiny_vit'"
        )
    return text


def import_dirs(paths: Iterable[str | Path] = ()) -> list[str]:
    """Absolute directories searched before sys.path, in order, without duplicates."""
    env = [p for p in os.environ.get(IMPORT_PATH_ENV, "").split(os.pathsep) if p]
    out: list[str] = []
    for p in [*paths, *env, os.getcwd()]:
        full = str(Path(p).expanduser().resolve())
        if full not in out and Path(full).is_dir():
            out.append(full)
    return out


def _ensure_on_path(dirs: list[str]) -> None:
    # Prepended once and kept: objects from the user's module must stay importable
    # for pickling (Ray ships trial results and checkpoints by value).
    for d in reversed(dirs):
        if d not in sys.path:
            sys.path.insert(0, d)


def module_origin(target: str, paths: Iterable[str | Path] = ()) -> str | None:
    """File or package directory of the target's top-level module, found without importing it.

    `cpsweep submit` ships this path to the cluster when it lies outside the job's
    working directory; None when the module is not found on the searched directories
    (it may still be installed on the cluster).
    """
    top = target.split(":", 1)[0].split(".", 1)[0]
    spec = importlib.machinery.PathFinder.find_spec(top, [*import_dirs(paths), *sys.path])
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return str(next(iter(spec.submodule_search_locations)))
    return spec.origin if spec.origin and spec.origin.endswith(".py") else None


def resolve(
    target: str, *, field: str, paths: Iterable[str | Path] = (), builtin: bool = False
) -> Any:
    """Import `module` and return `attr` of `"module:attr"`; FactoryError names `field`.

    Under the job's policy (PolicyError when refused) unless `builtin`: a registry's own
    entry, written in code rather than taken from a spec.
    """
    policy = None if builtin else active_policy()
    if policy is not None:  # before any user directory reaches sys.path
        policy.check_target(target, field)
    check_target(target, field)
    module_name, attr_path = target.split(":", 1)
    dirs = import_dirs(paths)
    _ensure_on_path(dirs)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if module_name == missing or module_name.startswith(missing + "."):
            raise FactoryError(
                f"{field}: module {module_name!r} of {target!r} was not found in "
                f"{dirs} or on PYTHONPATH; put it beside the spec, in the working directory, "
                f"or add its directory to PYTHONPATH or ${IMPORT_PATH_ENV}"
                f"{moved_hint(module_name, attr_path)}"
            ) from exc
        raise FactoryError(
            f"{field}: importing {module_name!r} of {target!r} failed: it needs module "
            f"{missing!r}, which is not installed ({exc})"
        ) from exc
    except Exception as exc:  # the user's module raised while importing
        raise FactoryError(
            f"{field}: importing {module_name!r} of {target!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    obj: Any = module
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            known = sorted(n for n in dir(obj) if not n.startswith("_"))[:20]
            where = getattr(module, "__file__", module_name)
            raise FactoryError(
                f"{field}: {target!r}: {module_name} ({where}) has no attribute {part!r}; "
                f"it defines {known}{moved_hint(module_name, attr_path)}"
            )
        obj = getattr(obj, part)
    if policy is not None:
        policy.check_object(obj, target, field)
    return obj


def call_factory(fn: Callable[..., Any], target: str, field: str, **kwargs: Any) -> Any:
    """Call a user's factory; any exception becomes a FactoryError naming `field`."""
    if not callable(fn):
        raise FactoryError(
            f"{field}: {target!r} is a {type(fn).__name__}, not a function; point it at a callable"
        )
    try:
        return fn(**kwargs)
    except Exception as exc:
        shown = ", ".join(sorted(kwargs))
        raise FactoryError(
            f"{field}: {target!r} raised {type(exc).__name__}: {exc} "
            f"(called with keyword arguments {shown or 'none'})"
        ) from exc
