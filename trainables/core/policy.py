"""What a sweep from the REST API may run and read: one policy, checked by server and trial.

A REST caller's spec runs with the cluster's permissions. The server (service.api.allowlists)
judges every factory, loop and data root that the spec's trials can reach against a
`Policy`, as text, never importing user code. The job it submits carries the same policy in
`CPSWEEP_POLICY_B64`, and every process of that job (the driver's preflight, each trial and
rank) checks again where the code is imported and the data read
(trainables.core.imports.resolve, trainables.data.dataroots.check_data_root). A spec that
reaches Ray by another route therefore still cannot import outside the policy. Without the
variable nothing is restricted: `cpsweep run` / `train` on a user's machine runs their code.

Allowed, under a policy:
- a factory or `train.loop` `"module:name"` whose module is one of `factory_modules` or lies
  below one (whole dotted parts: `pkg` allows `pkg.models`, not `pkgx`), whose `name` is
  one public attribute (no dots, no leading '_'), and whose object, once imported, has its
  `__module__` under an allowed prefix too: a name the module merely imported (`os`,
  `popen`, `Path`) is refused before it is called;
- a `data.root` that resolves, symlinks followed, to one of `data_roots` or below; with
  no `data_roots`, no `data.root` at all (built-in dataset locations still work).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DATA_ROOTS_ENV",
    "FACTORY_MODULES_ENV",
    "POLICY_ENV",
    "Policy",
    "PolicyError",
    "active_policy",
    "within",
]

POLICY_ENV = "CPSWEEP_POLICY_B64"  # base64 JSON: Ray expands $VAR inside runtime_env env vars
FACTORY_MODULES_ENV = "CPSWEEP_FACTORY_MODULES"  # the server's allow-list, comma-separated
DATA_ROOTS_ENV = "CPSWEEP_DATA_ROOTS"  # dataset directories, os.pathsep-separated

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_MODULE = re.compile(rf"{_IDENT}(\.{_IDENT})*")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


class PolicyError(ValueError):
    """The policy refuses a value; the message names the field, the value and the fix."""


def _resolved(path: str | Path) -> str:
    return os.path.realpath(os.path.expanduser(str(path)))


def within(path: str | Path, roots: Sequence[str]) -> bool:
    """True when `path`, resolved, is one of `roots` (resolved) or lies below one."""
    target = _resolved(path)
    for root in roots:
        base = _resolved(root)
        if target == base or target.startswith(base.rstrip(os.sep) + os.sep):
            return True
    return False


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


@dataclass(frozen=True)
class Policy:
    """The operator's allow-lists, as one REST job carries them to its trials."""

    factory_modules: tuple[str, ...] = ()  # module prefixes whose code may run; empty: none
    data_roots: tuple[str, ...] = ()  # directories data.root may lie under; empty: none

    def module_allowed(self, module: str) -> bool:
        return any(module == m or module.startswith(m + ".") for m in self.factory_modules)

    def _modules_hint(self) -> str:
        listed = ", ".join(self.factory_modules) or "none"
        return f"the module prefixes this server allows ({FACTORY_MODULES_ENV}: {listed})"

    def check_target(self, target: Any, field: str) -> str:
        """`target` if it is `module:name` with the module under an allowed prefix and `name`
        one public attribute; else PolicyError. Text only: nothing is imported."""
        module, sep, name = target.partition(":") if isinstance(target, str) else ("", "", "")
        if not sep or not _MODULE.fullmatch(module):
            raise PolicyError(
                f"{field}: {_shown(target)} is not an import path; write 'package.module:function'"
            )
        if not _NAME.fullmatch(name):
            raise PolicyError(
                f"{field}: {_shown(target)}: after ':' this server takes one public name that "
                f"the module defines (no dots, no leading '_'), got {name[:100]!r}; point it "
                "at a function defined in that module"
            )
        if not self.module_allowed(module):
            raise PolicyError(
                f"{field}: {_shown(target)}: a factory runs code on the cluster, and module "
                f"{module!r} is not under {self._modules_hint()}; use a registered name "
                "(model.name / data.name) or ask the operator to allow its package"
            )
        return target

    def check_object(self, obj: Any, target: str, field: str) -> None:
        """PolicyError unless `obj` (what `target` imported to) was defined under an allowed
        prefix: its `__module__`. Run where the code runs, before calling it."""
        owner = getattr(obj, "__module__", None)
        if not isinstance(owner, str) or not self.module_allowed(owner):
            kind = type(obj).__name__
            raise PolicyError(
                f"{field}: {target!r} is a {kind} from {owner or 'no module'}, not one "
                f"defined under {self._modules_hint()}; point it at a function the module "
                "itself defines"
            )

    def check_root(self, path: Any, field: str = "data.root") -> Path:
        """`path` resolved if it lies under `data_roots`; else PolicyError."""
        if not isinstance(path, str) or not path:
            raise PolicyError(f"{field}: {_shown(path)} is not a directory path")
        if not self.data_roots:
            raise PolicyError(
                f"{field}: {_shown(path)}: this server accepts no data.root; its operator "
                f"lists dataset directories in {DATA_ROOTS_ENV}, or use the built-in dataset "
                "location (leave data.root unset)"
            )
        if not within(path, self.data_roots):
            raise PolicyError(
                f"{field}: {_shown(path)} is outside the dataset directories this server "
                f"allows ({DATA_ROOTS_ENV}={os.pathsep.join(self.data_roots)}); put the data "
                "under one of them or ask the operator to add its directory"
            )
        return Path(_resolved(path))

    def to_env(self) -> dict[str, str]:
        """The job's env var that carries this policy to every process of the job."""
        body = json.dumps({"factory_modules": self.factory_modules, "data_roots": self.data_roots})
        return {POLICY_ENV: base64.b64encode(body.encode()).decode()}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Policy | None:
        """The policy a job carries; None without one. An unreadable one is PolicyError:
        a job that was meant to be bound must not run unbound."""
        env = os.environ if env is None else env
        encoded = env.get(POLICY_ENV)
        if encoded is None:
            return None
        try:
            raw = json.loads(base64.b64decode(encoded, validate=True))
            modules, roots = raw["factory_modules"], raw["data_roots"]
            if not all(isinstance(v, list) and all(isinstance(s, str) for s in v)
                       for v in (modules, roots)):  # fmt: skip
                raise ValueError("lists of strings expected")
        except (binascii.Error, ValueError, KeyError, TypeError) as exc:
            raise PolicyError(
                f"{POLICY_ENV} is set but unreadable ({type(exc).__name__}: {exc}); nothing "
                "from a user import path or data.root is allowed. Submit through the REST "
                "API or unset it"
            ) from None
        return cls(tuple(modules), tuple(roots))


def active_policy() -> Policy | None:
    """The policy of this process's job ($CPSWEEP_POLICY_B64), or None (unrestricted)."""
    return Policy.from_env()
