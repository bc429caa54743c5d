"""Criteria: hand-computed cases and an independent numpy reference of the paper rule."""

from __future__ import annotations

import math

import pytest

from tests.reference import reference_paper_end
from trainables.method.criteria import (
    CriterionState,
    EndRule,
    PaperRule,
    end_epoch,
    fixed_end,
    least_squares_slope,
    paper_angle,
    paper_end,
    relative_end,
    rule_class,
)


def _saturating(n: int, tau: float, scale: float = 0.8) -> list[float]:
    """A typical layer-rotation curve: fast early growth that saturates."""
    return [scale * (1 - math.exp(-e / tau)) for e in range(1, n + 1)]


def test_least_squares_slope_exact_line():
    assert least_squares_slope([0, 1, 2, 3], [1, 3, 5, 7]) == pytest.approx(2.0)


def test_paper_angle_hand_computed():
    # Rotation rising 0.1 per epoch with E=11: x step 0.1, so slope 1.0 -> exactly 45 degrees.
    curve = [0.1 * e for e in range(1, 8)]
    assert paper_angle(curve, 5, budget=11) == pytest.approx(45.0)
    assert paper_angle(curve, 4, budget=11) is None  # fewer than `window` epochs
    # 45 is not < 45: the rule has not fired on a constant 45-degree line.
    assert paper_end(curve, budget=11) is None
    flat_after = [0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.58, 0.6, 0.61]
    # Window over epochs 2..6: y=0.2,.3,.4,.5,.55 -> slope 0.09/0.1=0.9 -> 41.99 deg < 45.
    assert paper_angle(flat_after, 6, budget=11) == pytest.approx(math.degrees(math.atan(0.9)))
    assert paper_end(flat_after, budget=11) == 6


@pytest.mark.parametrize("tau", [2.0, 3.5, 6.0, 10.0])
@pytest.mark.parametrize("budget", [20, 30, 60, 200])
@pytest.mark.parametrize("window", [3, 5, 8])
def test_paper_matches_numpy_reference(tau, budget, window):
    curve = _saturating(budget, tau)
    got = paper_end(curve, budget, window=window)
    assert got == reference_paper_end(curve, budget, window)


def test_paper_rule_depends_on_budget_but_relative_does_not():
    curve = _saturating(40, 4.0, scale=0.5)
    assert paper_end(curve, 40) != paper_end(curve, 80)  # the angle uses positions over E-1
    assert paper_end(curve, 80) > paper_end(curve, 40)  # a longer budget ends later
    rel = end_epoch("relative", curve, 40)
    assert rel is not None
    assert end_epoch("relative", curve, 80) == rel
    assert end_epoch("relative", curve, 400) == rel


def test_relative_rule_hand_computed():
    # Linear growth at rate 1 then 0.1: ratio 1.0 until the window leaves the fast part.
    curve = [float(e) for e in range(1, 8)] + [7 + 0.1 * k for k in range(1, 10)]
    # window 3: epoch 8 fits (6,6),(7,7),(8,7.1) -> rate 0.55 (ratio 0.55); epoch 9 fits
    # (7,7),(8,7.1),(9,7.2) -> rate 0.1 (ratio 0.1 < 0.25), epoch 10 likewise.
    assert relative_end(curve, window=3, ratio=0.25, patience=1) == 9
    assert relative_end(curve, window=3, ratio=0.25, patience=2) == 10
    assert relative_end(curve, window=3, ratio=0.6, patience=1) == 8


def test_relative_rule_needs_growth():
    assert relative_end([0.5] * 20) is None  # no rate peak, never fires


def test_fixed_and_never():
    assert fixed_end(30, 0.125) == 4  # ceil(3.75)
    assert fixed_end(200, 0.125) == 25
    assert fixed_end(8, 0.125) == 1
    assert end_epoch("fixed", [0.1] * 10, 30) == 4
    assert end_epoch("fixed", [0.1] * 3, 30) is None  # not reached yet
    assert end_epoch("never", _saturating(50, 2.0), 50) is None


@pytest.mark.parametrize("name", ["paper", "relative", "fixed", "never"])
def test_incremental_state_agrees_with_batch(name):
    curve = _saturating(60, 5.0)
    state = CriterionState(name, budget=60)
    ends = [state.update(v).end_epoch for v in curve]
    final = end_epoch(name, curve, 60)
    assert ends[-1] == final
    if final is not None:  # decided once, never moved
        assert all(e is None for e in ends[: final - 1])
        assert all(e == final for e in ends[final - 1 :])


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown"):
        end_epoch("bogus", [0.1], 10)
    with pytest.raises(ValueError, match="E >= 2"):
        paper_end([0.1] * 5, 1)
    with pytest.raises(ValueError, match="not finite"):
        CriterionState("paper", budget=10).update(float("nan"))
    with pytest.raises(ValueError, match="budget"):
        CriterionState("paper", budget=None)


class _Threshold(EndRule):
    """A user's rule: the period ends once the mean rotation passes 0.5."""

    stat_key = "cp/level"

    def statistic(self, state: CriterionState, epoch: int) -> float | None:
        return state.history[-1]

    def ended(self, state: CriterionState, epoch: int, stat: float | None) -> bool:
        return stat is not None and stat > 0.5


def test_a_registered_rule_is_a_criterion_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    from trainables.core.config import CriterionConfig
    from trainables.core.registry import CRITERIA
    from trainables.method.criteria import stat_key

    with pytest.raises(ValueError, match="choose one of paper, relative, fixed, never"):
        CriterionConfig(name="threshold")
    monkeypatch.setitem(CRITERIA._entries, "threshold", _Threshold)
    assert CriterionConfig(name="threshold").name == "threshold"
    curve = _saturating(20, 4.0)
    expected = next(e for e, v in enumerate(curve, 1) if v > 0.5)
    assert end_epoch("threshold", curve, budget=20) == expected
    assert stat_key("threshold") == "cp/level"
    assert rule_class("paper") is PaperRule and not rule_class("threshold").needs_budget


def test_rule_state_is_per_run() -> None:
    """Two runs of the relative rule do not share the peak rate (one instance per state)."""
    a = CriterionState("relative", budget=None)
    b = CriterionState("relative", budget=None)
    for v in _saturating(12, 3.0):
        a.update(v)
    assert b.update(0.1).value is None and a._rule is not b._rule
