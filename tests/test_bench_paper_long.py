"""bench/paper_repro.py --long --quick: the long-budget arms run end to end through the product."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.requires import FASHION_MNIST, requires

REPO = Path(__file__).resolve().parents[1]


ARMS = ["repeats3", "infobatch", "paper+infobatch", "fixed25"]


def _paper_repro() -> Any:
    sys.path.insert(0, str(REPO / "bench"))
    import paper_repro

    return paper_repro


def test_long_budget_has_every_arm_and_fixed_switches_by_name() -> None:
    pr = _paper_repro()
    spec = pr.build_spec(quick=True, seeds=[0], ratio=0.5, patience=1, tracking_uri="x", long=True)
    assert spec.baseline_arm and list(spec.arms) == [
        "repeats1",
        "paper",
        "relative",
        "infobatch",
        "paper+infobatch",
        "relative+infobatch",
        "paper+prune",
    ]
    only = pr.build_spec(
        quick=True, seeds=[0], ratio=0.5, patience=1, tracking_uri="x", long=True,
        only=["paper", "fixed12.5"],
    )  # fmt: skip
    assert not only.baseline_arm and list(only.arms) == ["paper", "fixed12.5"]
    assert only.arms["fixed12.5"] == {"criterion.name": "fixed", "criterion.fraction": 0.125}
    with pytest.raises(SystemExit, match="unknown arm 'papr'"):
        pr.select_arms(pr.long_arms(0.5, 1), ["papr"])


@pytest.mark.integration
def test_long_budget_quick_runs_through_the_product_and_infobatch_prunes(tmp_path: Path) -> None:
    requires(FASHION_MNIST)  # the benchmark's recipe trains on it (bench/_common.py)
    subprocess.run(
        [sys.executable, "paper_repro.py", "--long", "--quick", "--arms", ",".join(ARMS),
         "--out", str(tmp_path)],
        cwd=REPO / "bench",
        check=True,
        timeout=300,
    )  # fmt: skip
    res = json.loads((tmp_path / "paper_repro_long_quick.json").read_text())
    assert res["arms"] == ["repeats3", "infobatch", "paper+infobatch", "fixed25"]
    assert {t["status"] for t in res["trials"]} == {"TERMINATED"}
    rows = {t["arm"]: t for t in res["trials"]}
    # InfoBatch on the baseline's recipe trains on fewer samples, and says so per epoch;
    # from the annealing point (epoch ceil(0.875 * 12) + 1 = 12) it sees the full data.
    pruned = rows["infobatch"]["curves"]["recipe/pruned_fraction"]
    assert len(pruned) == 12 and pruned[0] == 0.0 and pruned[-1] == 0.0
    assert all(0 < p < 0.5 for p in pruned[1:11])
    assert rows["infobatch"]["samples"] < rows["repeats3"]["samples"]
    assert rows["repeats3"]["curves"]["recipe/pruned_fraction"] == [0.0] * 12
    assert rows["fixed25"]["switch_epoch"] == 4  # ceil(0.25 * 12) = 3, then one more epoch
    for row in rows.values():  # the headline is the test split; load sampled while it ran
        assert 0 < row["final_test_acc"] <= 1 and row["load_samples"] >= 1
    per_arm = res["per_arm"]
    assert per_arm["infobatch"]["reduction_vs_repeats3_pct"]["samples"] > 10
    # The verdict script pairs the arms by seed and draws the frontier from this file.
    subprocess.run(
        [sys.executable, "long_verdict.py", str(tmp_path / "paper_repro_long_quick.json"),
         "--out", str(tmp_path), "--stem", "quick"],
        cwd=REPO / "bench",
        check=True,
        timeout=120,
    )  # fmt: skip
    verdict = json.loads((tmp_path / "quick_verdict.json").read_text())
    assert set(verdict["per_arm"]) == set(ARMS) and verdict["frontier"]
    assert verdict["per_arm"]["infobatch"]["vs_repeats3"]["seeds"] == [0]
    assert (tmp_path / "quick_frontier.png").stat().st_size > 10_000
