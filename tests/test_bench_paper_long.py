"""bench/paper_repro.py --long --quick: the long-budget arms run end to end through the product."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.requires import FASHION_MNIST, requires

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_long_budget_quick_runs_every_arm_and_infobatch_prunes(tmp_path: Path) -> None:
    requires(FASHION_MNIST)  # the benchmark's recipe trains on it (bench/_common.py)
    subprocess.run(
        [sys.executable, "paper_repro.py", "--long", "--quick", "--out", str(tmp_path)],
        cwd=REPO / "bench",
        check=True,
        timeout=300,
    )
    res = json.loads((tmp_path / "paper_repro_long_quick.json").read_text())
    assert res["arms"] == [
        "repeats3",
        "repeats1",
        "paper",
        "relative",
        "infobatch",
        "paper+infobatch",
        "relative+infobatch",
        "paper+prune",
    ]
    assert {t["status"] for t in res["trials"]} == {"TERMINATED"}
    rows = {t["arm"]: t for t in res["trials"]}
    # InfoBatch on the baseline's recipe trains on fewer samples, and says so per epoch;
    # from the annealing point (epoch ceil(0.875 * 12) + 1 = 12) it sees the full data.
    pruned = rows["infobatch"]["curves"]["recipe/pruned_fraction"]
    assert len(pruned) == 12 and pruned[0] == 0.0 and pruned[-1] == 0.0
    assert all(0 < p < 0.5 for p in pruned[1:11])
    assert rows["infobatch"]["samples"] < rows["repeats3"]["samples"]
    assert rows["repeats3"]["curves"]["recipe/pruned_fraction"] == [0.0] * 12
    per_arm = res["per_arm"]
    assert per_arm["infobatch"]["reduction_vs_repeats3_pct"]["samples"] > 10
