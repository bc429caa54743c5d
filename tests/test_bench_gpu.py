"""bench/gpu.py --quick: the GPU benchmark's reduced form runs end to end (CI smoke test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_gpu_bench_quick_packs_the_arms_and_writes_its_tables(tmp_path):
    subprocess.run(
        [sys.executable, "gpu.py", "--quick", "--out", str(tmp_path)],
        cwd=REPO / "bench",
        check=True,
        timeout=300,
    )
    res = json.loads((tmp_path / "gpu_quick.json").read_text())
    [(case, tp)] = res["throughput"].items()
    assert tp["train_samples_per_s"] > 0 and 0 <= tp["rotation_pct_of_epoch"] < 100
    packed, single = res["packed"], res["one_per_gpu"]
    assert (packed["trials"], packed["gpus_per_worker"]) == (3, 0.3333)  # three on one GPU
    assert (single["trials"], single["gpus_per_worker"]) == (3, 1.0)
    for sweep in (packed, single):
        assert sweep["statuses"] == ["TERMINATED"]
        assert sweep["switch_at_end_plus_1"]
        assert sweep["trials_per_hour"] > 0
    assert packed["arms"]["paper"]["cp_end_epochs"] != [None]  # the rule fired
    assert packed["arms"]["repeats3"]["samples_mean"] > packed["arms"]["repeats1"]["samples_mean"]
    if res["device_name"] == "cpu":
        assert res["logical_gpu"] is True  # never passed off as GPU numbers
    md = (tmp_path / "gpu_quick.md").read_text()
    assert case in md and "| paper |" in md and "| packed | 3 | 0.3333 |" in md
