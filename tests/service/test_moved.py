"""A tuner.pkl written before the service/ or trainables/ restructure names the old module
paths: after `alias_moved_modules()` Ray's cloudpickle loads it (service/sweeps/moved.py);
an import path in a spec that names an old module fails naming the new one."""

from __future__ import annotations

import pickletools
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest
import ray.cloudpickle as cloudpickle

import service.tracking
from service.sweeps import moved
from service.sweeps.progress import ProgressCallback
from service.sweeps.scheduler import CriticalPeriodScheduler
from service.tracking.callback import MLflowSweepCallback
from trainables.core.config import CriterionConfig
from trainables.core.imports import FactoryError, resolve

ROOT = Path(__file__).resolve().parents[2]


def _pickled_under(
    monkeypatch: pytest.MonkeyPatch, obj: Any, cls: type, old: str, into: Any = None
) -> bytes:
    """`obj` pickled as a driver before the move did: `cls` named as `old`.`cls.__name__`
    (a stand-in module `old`, or the attribute on `into` when `old` is now a package)."""
    with monkeypatch.context() as m:
        if into is None:
            into = types.ModuleType(old)
            m.setitem(sys.modules, old, into)
        m.setattr(into, cls.__name__, cls, raising=False)
        m.setattr(cls, "__module__", old)
        data = cloudpickle.dumps(obj)
    globals_ = {a for op, a, _ in pickletools.genops(data) if isinstance(a, str)}
    assert old in globals_, globals_  # really the old name in the bytes
    return data


def _load_in_fresh_driver(tmp_path: Path, data: bytes, check: str) -> None:
    """Unpickle `data` in a new interpreter (no old name imported), as `cpsweep run
    --resume` does: `alias_moved_modules()` then Ray's cloudpickle."""
    (tmp_path / "tuner.pkl").write_bytes(data)
    code = textwrap.dedent(
        f"""
        import ray.cloudpickle as cloudpickle
        data = open({str(tmp_path / "tuner.pkl")!r}, "rb").read()
        try:
            cloudpickle.loads(data)
        except (ImportError, AttributeError):
            pass
        else:
            raise SystemExit("loaded without the aliases: the test proves nothing")
        from service.sweeps.moved import alias_moved_modules
        alias_moved_modules()
        obj = cloudpickle.loads(data)
        {check}
        """
    )
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.integration
def test_scheduler_pickled_as_service_scheduler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sched = CriticalPeriodScheduler(state_path=tmp_path / "cp_decisions.jsonl")
    data = _pickled_under(monkeypatch, sched, CriticalPeriodScheduler, "service.scheduler")
    _load_in_fresh_driver(
        tmp_path,
        data,
        "from service.sweeps.scheduler import CriticalPeriodScheduler as C\n"
        "        assert type(obj) is C, type(obj)\n"
        "        assert obj.state_path.name == 'cp_decisions.jsonl'",
    )


@pytest.mark.integration
def test_progress_pickled_as_service_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _pickled_under(monkeypatch, ProgressCallback(7), ProgressCallback, "service.progress")
    _load_in_fresh_driver(
        tmp_path,
        data,
        "from service.sweeps.progress import ProgressCallback as P\n"
        "        assert type(obj) is P and obj.budget == 7, vars(obj)",
    )


@pytest.mark.integration
def test_callback_pickled_as_service_tracking_the_package_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """service/tracking.py is service/tracking/callback.py now; `service.tracking` is the
    package, which must stay one (its submodules import as before)."""
    data = _pickled_under(
        monkeypatch, MLflowSweepCallback, MLflowSweepCallback, "service.tracking", service.tracking
    )
    assert not hasattr(service.tracking, "MLflowSweepCallback")
    _load_in_fresh_driver(
        tmp_path,
        data,
        "from service.tracking.callback import MLflowSweepCallback as M\n"
        "        assert obj is M\n"
        "        import service.tracking, service.tracking.writer\n"
        "        assert service.tracking.writer.__name__ == 'service.tracking.writer'\n"
        "        assert not hasattr(service.tracking, 'no_such_name')",
    )


def test_table_names_new_modules_that_exist_and_old_ones_that_do_not() -> None:
    import importlib.util

    files = {
        p.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
        for pkg in ("service", "trainables")
        for p in ROOT.glob(f"{pkg}/**/*.py")
    }
    for old, new in moved.MOVED.items():
        assert importlib.util.find_spec(new) is not None, new
        # gone, or a package now whose submodule holds the old code
        assert old not in files or (ROOT / old.replace(".", "/") / "__init__.py").is_file(), old


@pytest.mark.integration
def test_trial_config_pickled_as_trainables_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A param_space pickled before trainables/ was split names trainables.config."""
    cfg = CriterionConfig(name="relative")
    data = _pickled_under(monkeypatch, cfg, CriterionConfig, "trainables.config")
    _load_in_fresh_driver(
        tmp_path,
        data,
        "from trainables.core.config import CriterionConfig as C\n"
        "        assert type(obj) is C and obj.name == 'relative', obj",
    )


@pytest.mark.integration
def test_dataset_function_pickled_as_trainables_data_the_package_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """trainables/data.py is trainables/data/datasets.py now; `trainables.data` the package."""
    import trainables.data
    from trainables.data.datasets import load_digits

    data = _pickled_under(monkeypatch, load_digits, load_digits, "trainables.data", trainables.data)
    _load_in_fresh_driver(
        tmp_path,
        data,
        "from trainables.data.datasets import load_digits as f\n"
        "        assert obj is f\n"
        "        import trainables.data.splits\n"
        "        assert not hasattr(trainables.data, 'no_such_name')",
    )


@pytest.mark.parametrize(
    ("target", "new"),
    [
        ("trainables.rotation:LayerRotation", "trainables.method.rotation:LayerRotation"),
        ("trainables.models:small_cnn", "trainables.models.builtin:small_cnn"),
        ("trainables.data:load_digits", "trainables.data.datasets:load_digits"),
    ],
)
def test_an_import_path_naming_a_moved_module_names_the_new_one(target: str, new: str) -> None:
    with pytest.raises(FactoryError) as err:
        resolve(target, field="model.factory")
    assert f"write {new!r}" in str(err.value), err.value
    assert str(err.value).startswith("model.factory: ")
    assert resolve(new, field="model.factory") is not None
