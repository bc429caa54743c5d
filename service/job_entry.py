"""The entrypoint of a submitted sweep on the cluster: `python -m service.job_entry`.

`cpsweep submit` puts the validated spec, base64-encoded, in the job's env var
`CPSWEEP_SPEC_B64` (see service.jobs); this decodes it next to the results and runs
`cpsweep run` on it.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from pathlib import Path

from service.jobs import SPEC_ENV

__all__ = ["job_entry"]


def job_entry(argv: list[str] | None = None) -> int:
    """Decode the inline spec and run it with `cpsweep run`."""
    p = argparse.ArgumentParser(prog="python -m service.job_entry")
    p.add_argument("--output-dir", required=True)
    args = p.parse_args(argv)
    encoded = os.environ.get(SPEC_ENV)
    if not encoded:
        print(f"{SPEC_ENV} is not set: submit with `cpsweep submit`", file=sys.stderr)
        return 2
    from service.cli import main

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "submitted_spec.yaml"  # kept next to the results, as their record
    path.write_bytes(base64.b64decode(encoded))
    return main(["run", str(path), "--output-dir", str(out)])


if __name__ == "__main__":  # the entrypoint of submitted jobs: python -m service.job_entry
    sys.exit(job_entry())
