"""bench/driver_scale.py --quick: the driver-at-scale benchmark runs end to end (CI smoke test).

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


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_driver_scale_quick_logs_everything_once_and_reads_are_cheap(tmp_path):
    requires(POSTGRESQL)  # for the throwaway cluster, when none answers on 127.0.0.1:5432
    subprocess.run(
        [sys.executable, "driver_scale.py", "--quick", "--out", str(tmp_path)],
        cwd=REPO / "bench",
        check=True,
        timeout=880,
    )
    res = json.loads((tmp_path / "driver_scale_quick.json").read_text())
    for backend in ("sqlite", "postgres"):
        b = res[backend]
        assert b["results"] == 300 and b["all_in_mlflow"], backend
        assert b["lost"] == 0 and b["duplicated"] == 0, backend
        assert b["mlflow_val_acc_rows"] == 300, backend
        assert b["writer"]["calls"]["create_run"]["calls"] >= 101  # the sweep's and 100
    control = res["control_actor"]
    assert control["trials_missing_the_last_verdict"] == 0
    assert control["trials_missing_the_switch"] == 0
    assert control["headroom_x"] >= 10
    tune = res["tune_state"]
    assert tune["trials"] == 100 and tune["per_trial_state_kb"] > 0
