"""The ViT example end to end: a user's model and Dataset modules, factory kwargs swept."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.servers import VENV_BIN

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "vit" / "spec.yaml"


def test_vit_example_sweeps_factory_kwargs_and_switches_one_epoch_after_the_end(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CPSWEEP_IMPORT_PATH")}
    # heads=5 does not divide dim=32: nn.MultiheadAttention refuses it inside the trial, so
    # those trials prove the swept kwargs reach the factory and that a failing trial names
    # the field. Run from elsewhere: the modules are found beside the spec.
    space = "{model.kwargs.depth: {grid: [2, 3]}, model.kwargs.heads: {grid: [4, 5]}}"
    cmd = [str(VENV_BIN / "cpsweep"), "run", str(EXAMPLE), "--output-dir", str(out)]
    cmd += ["--set", "train.epochs=8", "--set", f"search_space={space}"]
    cmd += ["--set", "tracking.enabled=false", "--set", "accounting.measure_energy=false"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = json.loads((out / "summary.json").read_text())["trials"]
    by_params = {
        (t["params"]["model.kwargs.depth"], t["params"]["model.kwargs.heads"]): t for t in trials
    }
    assert set(by_params) == {(2, 4), (3, 4), (2, 5), (3, 5)}
    for depth in (2, 3):
        ok, bad = by_params[(depth, 4)], by_params[(depth, 5)]
        assert ok["status"] == "TERMINATED" and ok["config"]["model"]["kwargs"]["depth"] == depth
        assert ok["cp_end_epoch"] is not None  # the paper rule found an end ...
        assert ok["switch_epoch"] == ok["cp_end_epoch"] + 1  # ... and the switch came next
        assert bad["status"] == "ERROR"
        assert "model.factory" in bad["error"] and "tiny_vit:tiny_vit" in bad["error"]
    # Rotation covers the attention projections and the MLP of every block.
    result = next((out / "ray" / "vit-digits").glob("*depth=3*heads=4*/result.json"))
    keys = json.loads(result.read_text().splitlines()[-1]).keys()
    for block in range(3):
        for layer in ("attn.in_proj", "attn.out_proj", "mlp.0", "mlp.2"):
            assert f"rotation/blocks.{block}.{layer}" in keys
