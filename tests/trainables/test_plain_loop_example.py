"""examples/plain_loop.py, run as a user would: its own process, outside the repository."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.reference import REPO, reference_paper_end


@pytest.mark.integration
def test_plain_loop_example_switches_one_epoch_after_the_paper_end(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "plain_loop.py"), "--epochs", "8"],
        cwd=tmp_path,  # `import cpsweep` must work from anywhere
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    lines = proc.stdout.strip().splitlines()
    rows = [re.match(r"epoch\s+(\d+) x(\d) rotation (\S+)", ln) for ln in lines[:-1]]
    curve = [float(m.group(3)) for m in rows]
    repeats = [int(m.group(2)) for m in rows]
    result = json.loads(lines[-1])
    end = reference_paper_end(curve, 8)
    assert end is not None and result["end_epoch"] == end and result["switch_epoch"] == end + 1
    assert repeats == [3 if e <= end else 1 for e in range(1, 9)]
