"""The Lightning and Hugging Face callbacks, training with the real libraries (CPU, in process).

Each runs its example in examples/ and checks that the recipe switches exactly one
epoch (or step window) after the end that the paper rule gives on the rotation curve
the callback measured, that the trainer really trained the switched recipe, and that
the period's metrics reached the trainer's own logger.
"""

from __future__ import annotations

import csv
import importlib.util
import math
import sys
from types import ModuleType

import pytest

from tests.reference import REPO, reference_paper_end

pytest.importorskip("lightning", reason="pip install -e '.[lightning]' (make venv does)")
pytest.importorskip("transformers", reason="pip install -e '.[hf]' (make venv does)")


def _example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_lightning_callback_switches_one_epoch_after_the_paper_end(tmp_path):
    ex = _example("lightning_example")
    epochs = 8
    model, cp = ex.fit(epochs, log_dir=str(tmp_path))
    curve = [d.rotation for d in cp.decisions]
    end = reference_paper_end(curve, epochs)
    assert end is not None and cp.period.end_epoch == end
    assert cp.period.switch_epoch == cp.hook.switched_at == end + 1
    n = len(model.data)
    assert [s // n for s in model.seen[:epochs]] == [3 if e <= end else 1 for e in range(1, 9)]
    assert not model.augment  # on_switch ran
    [log] = tmp_path.glob("digits/version_*/metrics.csv")
    rows = [r for r in csv.DictReader(log.open()) if r.get("rotation/mean")]
    assert [float(r["rotation/mean"]) for r in rows] == pytest.approx(curve, rel=1e-5)
    assert [float(r["recipe/repeats"]) for r in rows] == [3.0] * end + [1.0] * (epochs - end)


def test_hf_callback_switches_one_epoch_after_the_paper_end():
    ex = _example("hf_example")
    epochs, window = 6, 3
    data, _, cb, trainer = ex.fit(epochs, window=window)
    curve = [d.rotation for d in cb.decisions]
    end = reference_paper_end(curve, epochs, window=window)
    assert end is not None and cb.period.end_epoch == end
    assert cb.period.switch_epoch == cb.hook.switched_at == end + 1
    steps = [math.ceil(len(data) * (3 if e <= end else 1) / 16) for e in range(1, epochs + 1)]
    assert trainer.state.global_step == sum(steps)  # the Trainer trained the shorter epochs
    logged = [h for h in trainer.state.log_history if "rotation/mean" in h]
    assert [h["rotation/mean"] for h in logged] == pytest.approx(curve)
    assert [h["recipe/repeats"] for h in logged] == [3.0] * end + [1.0] * (epochs - end)


def test_hf_callback_with_a_step_budget_switches_at_the_next_step_window():
    ex = _example("hf_example")
    interval, window = 2, 3
    _, collate, cb, trainer = ex.fit(3, step_interval=interval, window=window)
    budget_checks = trainer.state.max_steps // interval
    assert cb.period.budget == budget_checks
    curve = [d.rotation for d in cb.decisions]
    assert [d.step for d in cb.decisions] == [interval * k for k in range(1, len(curve) + 1)]
    end = reference_paper_end(curve, budget_checks, window=window)
    assert end is not None and cb.period.end_step == end * interval
    assert cb.period.switch_step == cb.hook.switched_at == end * interval + 1
    # the augmentation (the callable's recipe) ran on every step through the end, none after
    steps = trainer.state.global_step
    assert collate.log == [s <= end * interval for s in range(1, steps + 1)]
