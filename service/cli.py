"""The `cpsweep` command line. Each subcommand is a thin wrapper over a module."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainables.core.config import ConfigError
from trainables.core.imports import FactoryError
from trainables.core.policy import PolicyError
from trainables.core.wire import ROTATION_MEAN

if TYPE_CHECKING:
    from service.results import MlflowIds, SweepSummary

__all__ = ["main"]

log = logging.getLogger("cpsweep")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname).1s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("urllib3", "matplotlib", "PIL", "filelock", "codecarbon", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from service.logredact import install

    install()  # MLflow errors quote whole response bodies; job logs are served by the API


# -- train / detect -----------------------------------------------------------------------


def _cmd_train(args: argparse.Namespace) -> int:
    from service.configio import load_model, read_yaml
    from trainables.core.config import TrainConfig

    raw = read_yaml(args.config)  # before torch and Ray are imported: a bad file fails fast
    overrides = list(args.set)
    if "train" in raw:  # a sweep spec: train its base config; --set train.x=... means x
        raw = raw["train"] or {}
        overrides = [kv.removeprefix("train.") for kv in overrides]
    cfg = load_model(TrainConfig, raw, overrides, source=str(args.config))

    from service.usercode import add_import_dir
    from trainables.run.local import train_local

    add_import_dir(Path(args.config).parent)  # the config's own model / data modules
    if cfg.loop is not None:  # imported and its fit(ctx) signature checked before any data
        from trainables.run.user_loop import load_loop

        load_loop(cfg.loop)
    out = Path(args.output_dir or Path("runs") / "train" / Path(args.config).stem)
    summary = train_local(cfg, out)
    print(json.dumps(summary, indent=2))
    log.info("wrote %s/history.jsonl and %s/summary.json", out, out)
    return 0


def _pick_key(column: str, available: list[str], where: str) -> str:
    """The column asked for; the default `rotation` also finds cpsweep's `rotation/mean`."""
    for key in (column, ROTATION_MEAN) if column == "rotation" else (column,):
        if key in available:
            return key
    raise ConfigError(
        f"{where}: no {column!r} column (found {sorted(available)[:12]}); name it with --column"
    )


def _mlflow_curve(run_id: str, column: str, tracking_uri: str | None) -> list[float]:
    from mlflow.exceptions import MlflowException

    from service.tracking.reader import client_for, metric_by_step, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    client = client_for(uri)
    try:
        metrics = client.get_run(run_id).data.metrics
    except MlflowException as exc:
        raise ConfigError(f"mlflow:{run_id}: no such run at {uri} ({exc.error_code})") from exc
    key = _pick_key(column, list(metrics), f"mlflow:{run_id}")
    return metric_by_step(client, run_id, key)


def _read_curve(source: str, column: str, tracking_uri: str | None = None) -> list[float]:
    """A JSON list, a CSV with a column, JSON lines (cpsweep train's history.jsonl) or
    `mlflow:RUN_ID` (the run's metric history)."""
    if source.startswith("mlflow:"):
        return _mlflow_curve(source.removeprefix("mlflow:"), column, tracking_uri)
    from service.configio import read_text

    path = Path(source)
    text = read_text(
        path, f"a CSV with a {column!r} column, a JSON list, a history.jsonl or mlflow:RUN_ID"
    )
    try:
        if path.suffix.lower() == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            if not rows or not all(isinstance(r, dict) for r in rows):
                raise ConfigError(f"{path}: expected one JSON object per line (history.jsonl)")
            key = _pick_key(column, list(rows[0]), str(path))
            return [float(r[key]) for r in rows if r.get(key) is not None]
        if path.suffix.lower() == ".json" or text.lstrip().startswith("["):
            data = json.loads(text)
            if not isinstance(data, list) or not all(isinstance(v, int | float) for v in data):
                raise ConfigError(f"{path}: expected a JSON list of numbers, one per epoch")
            return [float(v) for v in data]
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    import csv

    rows_csv = list(csv.DictReader(text.splitlines()))
    key = _pick_key(column, list(rows_csv[0]) if rows_csv else [], str(path))
    try:
        return [float(r[key]) for r in rows_csv]
    except ValueError as exc:
        raise ConfigError(f"{path}: column {key!r} has a non-numeric value: {exc}") from exc


def _cmd_detect(args: argparse.Namespace) -> int:
    from trainables.method.criteria import end_epoch

    curve = _read_curve(args.curve, args.column, args.tracking_uri)
    try:
        end = end_epoch(
            args.criterion,
            curve,
            args.budget,
            window=args.window,
            threshold_deg=args.threshold_deg,
            ratio=args.ratio,
            patience=args.patience,
            fraction=args.fraction,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    print(json.dumps({"criterion": args.criterion, "end_epoch": end}))
    return 0


def _resume_hint(args: argparse.Namespace, summary: SweepSummary) -> str:
    again = ["cpsweep run", shlex.quote(args.spec), "--resume"]
    again += ["--output-dir", shlex.quote(str(summary.output_dir))]
    again += [f"--set {shlex.quote(kv)}" for kv in args.set]
    again += [f"--address {shlex.quote(args.address)}"] if args.address else []
    return (
        f"cpsweep run: interrupted; finished trials are kept. Continue with:\n  {' '.join(again)}"
    )


def _mlflow_links(tracking: MlflowIds, experiment: str) -> str:
    """Where to compare the sweep's trials in MLflow, and the report command."""
    from service.tracking.view import run_url, runs_view_url

    uri, exp_id = tracking.tracking_uri, tracking.experiment_id
    parent_id = tracking.parent_run_id
    server = uri if uri.startswith("http") else "http://127.0.0.1:5000"
    start = "" if uri.startswith("http") else f"mlflow ui --backend-store-uri {uri}, then "
    link = runs_view_url(server, exp_id, parent_id, charts=True) if exp_id else server
    sweep_run = (
        f"Sweep settings and totals:     {run_url(server, exp_id, parent_id)}\n"
        if exp_id and parent_id
        else ""
    )
    return (
        f"\nCompare the trials in MLflow:  {start}open\n    {link}\n{sweep_run}"
        f"HTML report:                   cpsweep report {experiment}"
        + (f" --tracking-uri {uri}" if uri != "sqlite:///mlflow.db" else "")
    )


def _cmd_run(args: argparse.Namespace) -> int:
    from service.spec import load_spec

    spec = load_spec(args.spec, args.set)  # before torch and Ray are imported: fails fast

    from service.sweeps.progress import format_table
    from service.sweeps.run import run_sweep
    from service.usercode import add_import_dir, preflight

    add_import_dir(Path(args.spec).parent)  # before Ray starts: local trials inherit it
    if preflight(spec):
        log.info("model / data factories import and accept their kwargs")
    summary = run_sweep(spec, address=args.address, output_dir=args.output_dir, resume=args.resume)
    print(format_table(summary))
    if summary.interrupted:
        print(_resume_hint(args, summary), file=sys.stderr)
        return 130
    failed = [t for t in summary.trials if t.status == "ERROR"]
    for t in failed:
        log.warning("trial %s failed: %s", t.trial_id, t.error)
    if summary.mlflow:
        print(_mlflow_links(summary.mlflow, spec.tracking.experiment or spec.name))
    if failed and len(failed) == len(summary.trials):
        print(
            f"cpsweep run: every trial failed ({len(failed)}); see the errors above",
            file=sys.stderr,
        )
        return 1
    return 0


def _cmd_sync(args: argparse.Namespace) -> int:
    from service.reporting.report import upload_report
    from service.tracking.sync import sync_output_dir

    report = sync_output_dir(Path(args.output_dir), args.tracking_uri, args.timeout)
    print(json.dumps(report, indent=2))
    if report["all_in_mlflow"] and report.get("parent_run_id"):  # the sweep's run is complete
        upload_report(report["tracking_uri"], report["experiment"], report["parent_run_id"])
    if not report["all_in_mlflow"]:
        print(
            f"cpsweep sync: MLflow did not take everything within {args.timeout:.0f} s; "
            f"{report['pending_results']} results are still in {report['log']}; run it again",
            file=sys.stderr,
        )
        return 1
    return 0


# -- parser -------------------------------------------------------------------------------


def _add_train(sub: Any) -> None:
    t = sub.add_parser("train", help="train one config in this process")
    t.add_argument("config", help="YAML TrainConfig (or a sweep spec: its `train` section)")
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field, e.g. --set optim.lr=0.1 (repeatable)",
    )
    t.add_argument("--output-dir", help="default runs/train/<config name>")
    t.set_defaults(func=_cmd_train)


def _add_detect(sub: Any) -> None:
    d = sub.add_parser("detect", help="apply a criterion to a logged rotation curve")
    d.add_argument(
        "curve",
        help="one value per epoch: a CSV with a rotation column, a JSON list, cpsweep train's "
        "history.jsonl, or mlflow:RUN_ID (a trial run's rotation/mean)",
    )
    d.add_argument("--budget", type=int, required=True, help="planned epochs E")
    d.add_argument("--criterion", choices=["paper", "relative", "fixed", "never"], default="paper")
    d.add_argument(
        "--column",
        default="rotation",
        help="column, key or metric (default rotation, else rotation/mean)",
    )
    d.add_argument("--tracking-uri", help="for mlflow:RUN_ID (default $MLFLOW_TRACKING_URI)")
    d.add_argument("--window", type=int, default=5)
    d.add_argument("--threshold-deg", type=float, default=45.0)
    d.add_argument("--ratio", type=float, default=0.25)
    d.add_argument("--patience", type=int, default=2)
    d.add_argument("--fraction", type=float, default=0.125)
    d.set_defaults(func=_cmd_detect)


def _add_run(sub: Any) -> None:
    r = sub.add_parser("run", help="run a sweep spec on Ray (local cluster by default)")
    r.add_argument("spec", help="YAML SweepSpec, e.g. search_spaces/quickstart.yaml")
    r.add_argument(
        "--address", help="Ray cluster address (default $RAY_ADDRESS or a local cluster)"
    )
    r.add_argument("--output-dir", help="default runs/<sweep name>/")
    r.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    r.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec field, e.g. --set train.epochs=5 (repeatable)",
    )
    r.set_defaults(func=_cmd_run)


def _add_sync(sub: Any) -> None:
    y = sub.add_parser(
        "sync", help="upload what a sweep could not log to MLflow (after an outage or a crash)"
    )
    y.add_argument("output_dir", help="the sweep's output directory, e.g. runs/quickstart")
    y.add_argument("--tracking-uri", help="default: the URI the sweep used")
    y.add_argument("--timeout", type=float, default=300.0, help="give up after this many s")
    y.set_defaults(func=_cmd_sync)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cpsweep",
        description="Sweeps on Ray that halt the expensive recipe at the end of the critical period.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    _add_train(sub)
    _add_detect(sub)
    _add_run(sub)
    _add_sync(sub)

    # Each subsystem adds its own subcommands (imported when the parser is built).
    from service.api.cli import register_cli as register_api
    from service.jobs.cli import register_cli as register_jobs
    from service.reporting.report import register_cli as register_report

    register_report(sub)
    register_jobs(sub)
    register_api(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, FactoryError, PolicyError) as exc:
        print(f"cpsweep {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        from trainables.run.engine import NonFiniteLossError

        if not isinstance(exc, NonFiniteLossError):
            raise
        print(f"cpsweep {args.command}: training diverged: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        from trainables.data.datasets import DatasetError

        if not isinstance(exc, DatasetError):
            raise
        print(f"cpsweep {args.command}: dataset error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cpsweep {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
