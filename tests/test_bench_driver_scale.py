"""bench/driver_scale.py --quick --trials 30: the driver-at-scale benchmark end to end (CI smoke).

Both stores (a sqlite file; an `mlflow server` on a fresh PostgreSQL database, which the
benchmark starts itself when none answers on 127.0.0.1:5432), the control actor and
Tune's per-trial state. Timings are not asserted (CI machines are shared); what must
hold everywhere is: every (trial, epoch) in MLflow exactly once, and the control reads
far above what the trials need.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.requires import POSTGRESQL, requires

REPO = Path(__file__).resolve().parents[1]
TRIALS = 30


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_driver_scale_quick_logs_everything_once_and_reads_are_cheap(tmp_path):
    requires(POSTGRESQL)  # for the throwaway cluster, when none answers on 127.0.0.1:5432
    # 30 of --quick's 100 trials: each backend's drain into MLflow scales with them.
    subprocess.run(
        [sys.executable, "driver_scale.py", "--quick", f"--trials={TRIALS}", f"--out={tmp_path}"],
        cwd=REPO / "bench",
        check=True,
        timeout=880,
    )
    res = json.loads((tmp_path / "driver_scale_quick.json").read_text())
    results = TRIALS * 3  # --quick: 3 epochs
    for backend in ("sqlite", "postgres"):
        b = res[backend]
        assert b["results"] == results and b["all_in_mlflow"], backend
        assert b["lost"] == 0 and b["duplicated"] == 0, backend
        assert b["mlflow_val_acc_rows"] == results, backend
        assert b["writer"]["calls"]["create_run"]["calls"] >= TRIALS + 1  # and the sweep's
    control = res["control_actor"]
    assert control["trials_missing_the_last_verdict"] == 0
    assert control["trials_missing_the_switch"] == 0
    assert control["headroom_x"] >= 10
    tune = res["tune_state"]
    assert tune["trials"] == TRIALS and tune["per_trial_state_kb"] > 0
