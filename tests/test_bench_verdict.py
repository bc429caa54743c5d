"""bench/long_verdict.py: paired intervals, the frontier and the targets, on known numbers."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import long_verdict as lv


def _trial(arm: str, seed: int, acc: float, wall: float, samples: int = 1000) -> dict[str, Any]:
    return {
        "arm": arm,
        "seed": seed,
        "final_test_acc": acc,
        "final_val_acc": acc,
        "wall_s": wall,
        "samples": samples,
        "switch_epoch": None,
        "load1_mean": 2.0,
        "load1_max": 2.5,
    }


def test_interval_is_the_student_t_interval_of_the_mean() -> None:
    iv = lv.interval([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.776 * math.sqrt(2.5) / math.sqrt(5)  # t(0.975, 4) x sd / sqrt(n)
    assert iv["mean"] == 3.0 and iv["n"] == 5
    assert iv["lo"] == pytest.approx(3.0 - half) and iv["hi"] == pytest.approx(3.0 + half)
    assert lv.interval([7.0])["lo"] is None  # no interval from one seed
    assert lv.interval([])["mean"] is None


def test_pairs_by_seed_and_ignores_unpaired_seeds() -> None:
    ref = [_trial("repeats3", s, 0.80 + 0.01 * s, 100.0) for s in range(5)]
    arm = [_trial("paper", s, 0.80 + 0.01 * s - 0.002, 40.0) for s in (0, 1, 2, 7)]
    p = lv.paired(arm, ref)
    assert p["seeds"] == [0, 1, 2]
    assert p["acc_pts"]["mean"] == pytest.approx(-0.2)
    assert p["acc_pts"]["sd"] == pytest.approx(0.0, abs=1e-9)
    assert p["wall_saved_pct"]["mean"] == pytest.approx(60.0)


def test_frontier_keeps_only_arms_nothing_beats_on_both_axes() -> None:
    trials = [
        *[_trial("repeats3", s, 0.85, 100.0) for s in range(3)],
        *[_trial("repeats1", s, 0.83, 30.0) for s in range(3)],
        *[_trial("paper", s, 0.849, 45.0) for s in range(3)],
        *[_trial("fixed30", s, 0.845, 60.0) for s in range(3)],  # slower and worse than paper
    ]
    by_arm = lv.group(trials)
    stats = lv.arm_stats(by_arm)
    assert lv.frontier(stats) == ["repeats1", "paper", "repeats3"]
    verdicts = {v["target"].split(":")[0]: v for v in lv.targets(stats, by_arm)}
    paper = verdicts["paper vs k=3"]
    assert paper["verdict"] == "met" and paper["wall_saved_pct"]["mean"] == pytest.approx(55.0)
    best = verdicts["best arm vs k=3"]
    assert best["arm"] == "paper" and best["verdict"] == "missed"  # 55% < 60%
    # Nothing is 30% cheaper than k = 1 here: the cheapest other arm is named, missed.
    vs_k1 = verdicts["an arm vs k=1"]
    assert vs_k1["arm"] == "paper" and vs_k1["verdict"] == "missed"
    assert vs_k1["wall_saved_pct"]["mean"] == pytest.approx(-50.0)
