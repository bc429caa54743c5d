"""The CLI: `cpsweep detect` on logged curves and `cpsweep train` end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.cli import main
from tests.reference import REPO, reference_paper_end
from tests.stores import migrated_sqlite

CPSWEEP = str(Path(sys.executable).parent / "cpsweep")


def test_detect_csv_and_json(tmp_path, capsys):
    curve = [0.5 * (1 - math.exp(-e / 4)) for e in range(1, 41)]
    csv = tmp_path / "c.csv"
    csv.write_text("epoch,rotation\n" + "\n".join(f"{i},{v}" for i, v in enumerate(curve, 1)))
    js = tmp_path / "c.json"
    js.write_text(json.dumps(curve))
    for path in (csv, js):
        assert main(["detect", str(path), "--budget", "40"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out == {"criterion": "paper", "end_epoch": reference_paper_end(curve, 40)}
    assert main(["detect", str(csv), "--budget", "40", "--criterion", "fixed"]) == 0
    assert json.loads(capsys.readouterr().out)["end_epoch"] == 5


def test_detect_errors_name_the_problem(tmp_path, capsys):
    bad = tmp_path / "c.csv"
    bad.write_text("epoch,loss\n1,0.3\n")
    assert main(["detect", str(bad), "--budget", "10"]) == 2
    err = capsys.readouterr().err
    assert "no 'rotation' column" in err and "--column" in err
    assert main(["detect", str(tmp_path / "missing.csv"), "--budget", "10"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_detect_reads_train_history_jsonl(tmp_path, capsys):
    curve = [0.4 * (1 - math.exp(-e / 3)) for e in range(1, 21)]
    hist = tmp_path / "history.jsonl"
    hist.write_text(
        "".join(json.dumps({"epoch": i, "rotation/mean": v}) + "\n" for i, v in enumerate(curve, 1))
    )
    assert main(["detect", str(hist), "--budget", "20"]) == 0  # rotation -> rotation/mean
    assert json.loads(capsys.readouterr().out)["end_epoch"] == reference_paper_end(curve, 20)
    assert main(["detect", str(hist), "--budget", "20", "--column", "loss"]) == 2
    assert "no 'loss' column" in capsys.readouterr().err


def test_detect_reads_an_mlflow_runs_metric_history(tmp_path, capsys):
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    uri = migrated_sqlite(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("e"))
    curve = [0.6 * (1 - math.exp(-e / 5)) for e in range(1, 31)]
    metrics = [Metric("rotation/mean", v, 0, step) for step, v in enumerate(curve, 1)]
    client.log_batch(run.info.run_id, metrics=metrics[::-1])  # any order: sorted by step
    argv = ["detect", f"mlflow:{run.info.run_id}", "--budget", "30", "--tracking-uri", uri]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["end_epoch"] == reference_paper_end(curve, 30)
    assert main(["detect", "mlflow:0123abcd", "--budget", "30", "--tracking-uri", uri]) == 2
    assert "mlflow:0123abcd: no such run" in capsys.readouterr().err
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    assert main(["detect", "mlflow:x", "--budget", "30", "--tracking-uri", missing]) == 2
    assert "no MLflow database" in capsys.readouterr().err


def test_train_bad_field_exits_2(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"epochs": 3, "model": {"name": "vgg"}}))
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "model.name" in err and "'vgg'" in err and "small_cnn" in err


def test_train_takes_a_sweep_specs_train_section_and_its_set_paths(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": "s", "train": {"epochs": 3}}))
    for kv in ("train.optim.name=lion", "optim.name=lion"):  # both spellings reach the field
        assert main(["train", str(spec), "--set", kv]) == 2
        err = capsys.readouterr().err
        assert "optim.name" in err and "'lion'" in err and "unknown field" not in err


def test_train_missing_dataset_dir_exits_2(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump({"epochs": 1, "data": {"name": "cifar10", "root": str(tmp_path / "nope")}})
    )
    assert main(["train", str(cfg), "--output-dir", str(tmp_path / "o")]) == 2
    assert str(tmp_path / "nope") in capsys.readouterr().err


@pytest.mark.integration
def test_train_digits_switches_one_epoch_after_the_end_and_detect_agrees(tmp_path):
    """`cpsweep train` on a 15-epoch digits config, then `cpsweep detect` on its own log."""
    cfg = tmp_path / "digits.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "epochs": 15,
                "batch_size": 64,
                "data": {"name": "digits"},
                "model": {"name": "small_cnn", "width": 16},
            }
        )
    )
    out = tmp_path / "out"
    proc = subprocess.run(
        [CPSWEEP, "train", str(cfg), "--output-dir", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "epoch  15/15" in proc.stderr and "critical period ended at epoch" in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "epochs",
        "cp_end_epoch",
        "switch_epoch",
        "final_val_acc",
        "best_val_acc",
        "wall_s",
        "samples",
    ):
        assert key in summary
    assert summary["epochs"] == 15 and summary["switch_epoch"] == summary["cp_end_epoch"] + 1
    rows = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    assert len(rows) == 15 and any(k.startswith("rotation/features") for k in rows[0])
    s = summary["switch_epoch"]
    assert [r["recipe/repeats"] for r in rows] == [3] * (s - 1) + [1] * (15 - s + 1)
    assert summary["samples"] == sum(r["samples"] for r in rows)
    csv = tmp_path / "curve.csv"
    csv.write_text("rotation\n" + "\n".join(str(r["rotation/mean"]) for r in rows))
    det = subprocess.run(
        [CPSWEEP, "detect", str(csv), "--budget", "15"], capture_output=True, text=True, timeout=60
    )
    end = json.loads(det.stdout)["end_epoch"]
    assert (
        end
        == summary["cp_end_epoch"]
        == reference_paper_end([r["rotation/mean"] for r in rows], 15)
    )


def _recorded_curves() -> list[tuple[str, list[float]]]:
    """Every rotation curve the benchmarks logged on real Fashion-MNIST (bench/results)."""
    curves = []
    for name in ("paper_repro.json", "oracle.json", "paper_repro_quick.json"):
        for t in json.loads((REPO / "bench" / "results" / name).read_text())["trials"]:
            rot = [v for v in t.get("curves", {}).get("rotation/mean", []) if v is not None]
            if rot:
                curves.append((f"{name}:{t.get('arm', t.get('switch_after'))}:{t['seed']}", rot))
    return curves


def test_detect_agrees_with_the_reference_on_recorded_training_curves(tmp_path, capsys):
    """Curves from real runs, never used to tune anything, under their own and longer budgets."""
    curves = _recorded_curves()
    assert len(curves) >= 30
    ends = set()
    for label, curve in curves:
        path = tmp_path / "curve.json"
        path.write_text(json.dumps(curve))
        for budget in (len(curve), 2 * len(curve), 200):
            assert main(["detect", str(path), "--budget", str(budget)]) == 0
            got = json.loads(capsys.readouterr().out)["end_epoch"]
            assert got == reference_paper_end(curve, budget), (label, budget)
            ends.add(got)
    assert len(ends) >= 3  # the curves and budgets exercise different decisions
