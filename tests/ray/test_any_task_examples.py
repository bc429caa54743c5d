"""The token-id Transformer and the tabular MLP examples through `cpsweep run`, as a user
runs them: 2 trials each, the modules found beside the spec, the switch after the period."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.servers import VENV_BIN

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


@pytest.mark.parametrize(
    ("example", "param", "augmented"),
    [
        ("tokens", "model.kwargs.depth", [0, 0, 0]),  # auto: off for token ids
        ("tabular", "model.kwargs.hidden", [1, 1, 0]),  # augment_fn while critical
    ],
)
def test_example_runs_through_cpsweep_run(
    tmp_path: Path, example: str, param: str, augmented: list[int]
) -> None:
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "CPSWEEP_IMPORT_PATH"}
    env["PYTHONPATH"] = str(REPO)  # this checkout's cpsweep; the example's modules lie beside it
    cmd = [str(VENV_BIN / "cpsweep"), "run", str(EXAMPLES / example / "spec.yaml")]
    cmd += ["--output-dir", str(out), "--set", "tracking.enabled=false"]
    cmd += ["--set", "accounting.measure_energy=false"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = json.loads((out / "summary.json").read_text())["trials"]
    assert len(trials) == 2 and len({t["params"][param] for t in trials}) == 2
    for t in trials:
        assert t["status"] == "TERMINATED", t.get("error")
        assert (t["cp_end_epoch"], t["switch_epoch"]) == (2, 3)  # fixed rule, a third of 3
    results = sorted((out / "ray").glob("*/*/result.json"))
    assert len(results) == 2
    for result in results:
        rows = [json.loads(line) for line in result.read_text().splitlines()]
        assert [r["recipe/augment"] for r in rows] == augmented
        assert [r["recipe/repeats"] for r in rows] == [3, 3, 1]
