"""Where the modules of trainables/ went when the folder was split into layers.

Two users of one table: the resolver (`trainables.core.imports.resolve`) names the new
path when a spec's import path still names an old module, and `service.sweeps.moved`
aliases the old names so that a sweep pickled before the split still resumes.
"""

from __future__ import annotations

__all__ = ["MOVED", "moved_hint"]

# old module -> the module its code lives in now
MOVED: dict[str, str] = {
    "trainables.augment": "trainables.method.augment",
    "trainables.channel": "trainables.run.channel",
    "trainables.checkpoints": "trainables.run.checkpoints",
    "trainables.cifar_pickle": "trainables.data.cifar_pickle",
    "trainables.config": "trainables.core.config",
    "trainables.criteria": "trainables.method.criteria",
    "trainables.data": "trainables.data.datasets",
    "trainables.dataroots": "trainables.data.dataroots",
    "trainables.decide": "trainables.method.decide",
    "trainables.energy": "trainables.run.energy",
    "trainables.engine": "trainables.run.engine",
    "trainables.imagetrees": "trainables.data.imagetrees",
    "trainables.imports": "trainables.core.imports",
    "trainables.infobatch": "trainables.method.infobatch",
    "trainables.local": "trainables.run.local",
    "trainables.mixing": "trainables.method.mixing",
    "trainables.models": "trainables.models.builtin",
    "trainables.period": "trainables.method.period",
    "trainables.pool": "trainables.run.pool",
    "trainables.progress": "trainables.run.progress",
    "trainables.recipes": "trainables.method.recipes",
    "trainables.registry": "trainables.core.registry",
    "trainables.rotation": "trainables.method.rotation",
    "trainables.sources": "trainables.data.sources",
    "trainables.splits": "trainables.data.splits",
    "trainables.streaming": "trainables.data.streaming",
    "trainables.user_loop": "trainables.run.user_loop",
    "trainables.wire": "trainables.core.wire",
    "trainables.worker": "trainables.run.worker",
}


def moved_hint(module_name: str, attr: str = "") -> str:
    """'; it moved to NEW:attr' when `module_name` is an old name, else ''."""
    new = MOVED.get(module_name)
    if new is None:
        return ""
    where = f"{new}:{attr}" if attr else new
    return f"; {module_name} moved to {new} when trainables/ was split into layers: write {where!r}"
