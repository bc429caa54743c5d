"""The quickstart sweep on the GPU through each executor: bench/overheads.py's `ray` part
with `scaling.use_gpu`, on what the GPU machine has.

`bench/overheads.py --only ray` cannot run there as it is: its "as shipped" variants
log to MLflow (not installed on the GPU machine) and it has no GPU switch. This runs
its `_run_spec` (wall time, trial start-up, per-epoch report latency) on the
quickstart spec (6 epochs with --quick, 4 trials) with MLflow and CodeCarbon off and
`use_gpu: true, gpus_per_worker: 0.5` (two trials at a time on the one GPU), for

  inline                  the loop in the Tune trial's process
  train_pool              executor train on warm rank groups (trainables/run/pool.py;
                          backend "nccl" on CUDA: the rank sets cuda:0; one rank per
                          trial, so no process group: NCCL refuses two ranks on one GPU)
  train_torchtrainer      executor train, a Ray Train TorchTrainer per trial

in that order, writing the JSON after each, so a time limit keeps what finished.
Without CUDA (the CPU rehearsal, bench/device/rehearse.sh) the local cluster
declares one logical GPU and the trials train on the CPU (`"logical_gpu": true`).
The cluster starts the dashboard in both cases, as `init_ray` does.

    python3 bench/device/ray_gpu.py --out $OUT [--quick]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: _common, overheads

from _common import (
    REPO,
    RESULTS,
    command_line,
    machine_info,
    now_iso,
    setup_logging,
    start_local_ray,
    write_json,
)

log = logging.getLogger("bench.device.ray_gpu")

VARIANTS = {
    "inline": {"executor": "inline"},
    "train_pool": {"executor": "train", "worker_pool": True},
    "train_torchtrainer": {"executor": "train", "worker_pool": False},
}


def start_ray(cuda: bool) -> dict[str, Any]:
    """A local cluster with the dashboard; without CUDA, one logical GPU."""
    import ray

    t0 = time.perf_counter()
    start_local_ray(cuda, dashboard=True)
    info: dict[str, Any] = {"ray_start_s": time.perf_counter() - t0}
    url = ray._private.worker.global_worker.node.address_info.get("webui_url")
    info["dashboard_url"] = url
    try:  # the dashboard frees finished trials' placement groups: is it answering?
        with urllib.request.urlopen(f"http://{url}/api/version", timeout=10) as r:
            info["dashboard_http_status"] = r.status
    except urllib.error.HTTPError as exc:  # 401 without Ray's auth token: it answers
        info["dashboard_http_status"] = exc.code
    except Exception as exc:
        info["dashboard_error"] = repr(exc)
    info["cluster_resources"] = ray.cluster_resources()
    log.info("ray: %s", info)
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="6 epochs (the overheads --quick)")
    ap.add_argument("--out", default=str(RESULTS), help="results directory")
    ap.add_argument("--only", default=",".join(VARIANTS), help=f"comma list of {list(VARIANTS)}")
    args = ap.parse_args()
    setup_logging()
    import overheads
    import torch

    from service.spec import load_spec

    cuda = torch.cuda.is_available()
    path = Path(args.out) / "ray_gpu.json"
    res: dict[str, Any] = {
        "command": command_line(),
        "date": now_iso(),
        "machine": machine_info(),
        "device_name": torch.cuda.get_device_name(0) if cuda else "cpu",
        "logical_gpu": not cuda,
    }
    res["ray"] = start_ray(cuda)
    spec = load_spec(REPO / "search_spaces" / "quickstart.yaml")
    train = spec.train.model_copy(update={"epochs": 6} if args.quick else {})
    spec = spec.model_copy(
        update={
            "train": train,
            "tracking": spec.tracking.model_copy(update={"enabled": False}),
            "accounting": spec.accounting.model_copy(update={"measure_energy": False}),
        }
    )
    res["spec"] = {"file": "search_spaces/quickstart.yaml", "epochs": train.epochs}
    work = RESULTS / "tmp" / "ray_gpu"
    for name in [v for v in args.only.split(",") if v]:
        scaling = spec.scaling.model_copy(
            update={"use_gpu": True, "gpus_per_worker": 0.5} | VARIANTS[name]
        )
        t0 = time.perf_counter()
        try:
            r = overheads._run_spec(spec.model_copy(update={"scaling": scaling}), work / name)
        except Exception as exc:  # record it and go on to the next executor
            log.exception("%s failed", name)
            r = {"error": repr(exc)[:2000], "wall_s": time.perf_counter() - t0}
        res[name] = r | {"scaling": scaling.model_dump()}
        log.info("%s: %s", name, r)
        write_json(path, res)
    inline = res.get("inline", {}).get("wall_s")
    for name in ("train_pool", "train_torchtrainer"):
        if inline and "error" not in res.get(name, {"error": 1}):
            res[name]["over_inline"] = res[name]["wall_s"] / inline
    write_json(path, res)
    log.info("wrote %s", path)


if __name__ == "__main__":
    main()
