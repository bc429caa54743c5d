"""Step budgets: `CriticalPeriod(budget_steps=..., step_interval=...)` against a direct
computation in steps (numpy's least squares over the check steps rescaled to [0, 1])."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from trainables.core.config import ConfigError
from trainables.core.wire import CHECK_STEP, END_STEP, SWITCH_STEP
from trainables.method.period import CriticalPeriod, check_budget


def _cosdist(w: torch.Tensor, w0: np.ndarray) -> float:
    a, b = w.detach().double().numpy().ravel(), w0.ravel()
    return float(1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _run(criterion: dict, budget_steps: int, interval: int, scale: float):
    """Steps of a stand-in training (shrinking drifts); a check every `interval` steps."""
    torch.manual_seed(0)
    net = nn.Linear(16, 8)
    w0 = net.weight.detach().double().numpy().copy()
    gen = torch.Generator().manual_seed(1)
    cp = CriticalPeriod(net, criterion, budget_steps=budget_steps, step_interval=interval)
    steps, curve, decisions, critical = [], [], [], []
    for step in range(1, budget_steps + 1):
        critical.append(cp.critical)  # the recipe this step trains with
        with torch.no_grad():
            net.weight.add_(torch.randn(net.weight.shape, generator=gen) * scale / step**0.5)
        if step % interval == 0:
            d = cp.step()
            steps.append(step)
            curve.append(_cosdist(net.weight, w0))
            decisions.append(d)
    return cp, steps, curve, decisions, critical


def _reference_paper_end_step(steps, curve, window=5, threshold=45.0):
    """The paper's fit, in steps: check steps rescaled so the first is 0, the last planned 1."""
    first, last = steps[0], steps[-1]
    pos = (np.asarray(steps) - first) / (last - first)
    for t in range(window, len(curve) + 1):
        slope = np.polyfit(pos[t - window : t], np.asarray(curve[t - window : t]), 1)[0]
        if np.degrees(np.arctan(slope)) < threshold:
            return steps[t - 1]
    return None


def _reference_relative_end_step(steps, curve, window=5, ratio=0.25, patience=2):
    """Rate per step over the window, relative to the peak rate so far (unit-free)."""
    peak, below = 0.0, 0
    for t in range(window, len(curve) + 1):
        rate = np.polyfit(np.asarray(steps[t - window : t], float), curve[t - window : t], 1)[0]
        peak = max(peak, rate)
        below = below + 1 if peak > 0 and rate / peak < ratio else 0
        if below >= patience:
            return steps[t - 1]
    return None


@pytest.mark.parametrize(
    ("budget_steps", "interval", "scale"), [(200, 10, 0.3), (203, 7, 0.2), (120, 4, 0.05)]
)
def test_paper_rule_over_steps_matches_a_fit_in_steps(budget_steps, interval, scale):
    cp, steps, curve, decisions, critical = _run({"name": "paper"}, budget_steps, interval, scale)
    assert cp.budget == budget_steps // interval == len(steps)
    assert [d.rotation for d in decisions] == pytest.approx(curve, abs=1e-6)
    end = _reference_paper_end_step(steps, curve)
    assert end is not None
    assert cp.end_step == end and end % interval == 0
    assert cp.switch_step == end + 1  # the next step window starts the post-period recipe
    # the steps trained in the period: through the end check's window, none after
    assert critical == [s <= end for s in range(1, budget_steps + 1)]
    last = decisions[-1].metrics()
    assert (last[CHECK_STEP], last[END_STEP], last[SWITCH_STEP]) == (
        steps[-1],
        end,
        end + 1,
    )


def test_relative_and_fixed_rules_over_steps_match_direct_computations():
    cp, steps, curve, _, _ = _run({"name": "relative"}, 300, 6, 0.3)
    ref = _reference_relative_end_step(steps, curve)
    assert ref is not None and cp.end_step == ref
    cp, steps, _, _, _ = _run({"name": "fixed", "fraction": 0.3}, 100, 8, 0.3)
    assert cp.end_step == math.ceil(0.3 * (100 // 8)) * 8 == 32


def test_step_budget_errors_name_the_field_and_the_fix():
    net = nn.Linear(2, 2)
    with pytest.raises(ConfigError, match="give one budget"):
        CriticalPeriod(net, "paper", budget=10, budget_steps=100, step_interval=10)
    with pytest.raises(ConfigError, match="step_interval=None"):
        CriticalPeriod(net, "paper", budget_steps=100)
    with pytest.raises(ConfigError, match="budget_steps=5"):
        check_budget(5, 10)
    epochs = CriticalPeriod(net, "paper", budget=10)
    assert epochs.end_step is None and CHECK_STEP not in epochs.step().metrics()
