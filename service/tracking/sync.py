"""`cpsweep sync`: send what a sweep's tracking log still holds to MLflow.

After an outage that outlasted the sweep, or a driver that was killed, the log
(`service.tracking.wal`) under the sweep's output directory holds every write MLflow
has not acknowledged; the same writer as during the sweep sends them, in order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.tracking.callback import log_final, writer_threads
from service.tracking.client import configure_client
from service.tracking.reader import resolve_tracking_uri
from service.tracking.wal import WAL_NAME, WriteAheadLog, fold_file, log_report
from service.tracking.writer import TrackingWriter
from trainables.core.config import ConfigError

__all__ = ["sync_output_dir"]


def sync_output_dir(
    out_dir: Path, uri: str | None = None, timeout_s: float = 300.0
) -> dict[str, Any]:
    """Send what a sweep's tracking log still holds to MLflow (after an outage or a crash).

    `uri` defaults to the one the sweep used; returns `log_report`'s counts, the URI, the experiment and the sweep's run id."""
    from service.spec import SweepSpec

    wal_file = out_dir / WAL_NAME
    spec_file = out_dir / "spec.json"
    if not wal_file.is_file() or not spec_file.is_file():
        raise ConfigError(
            f"{out_dir}: no sweep tracking log ({WAL_NAME}) or spec.json there; pass the output "
            "directory of a sweep (runs/<name> by default)"
        )
    spec = SweepSpec.model_validate_json(spec_file.read_text())
    uri = uri or resolve_tracking_uri(spec.tracking.uri)
    configure_client(spec.tracking.request_timeout_s)
    wal = WriteAheadLog(wal_file)
    writer = TrackingWriter(wal, uri, final=log_final, threads=writer_threads(spec, uri))
    writer.start()
    writer.drain(timeout_s)
    writer.stop()
    report = log_report(wal, delayed=len(writer.stats.delayed))
    sweep = fold_file(wal.path).refs.get("sweep")  # the run ids the writer just learnt
    report["tracking_uri"] = uri
    report["experiment"] = spec.tracking.experiment or spec.name
    report["parent_run_id"] = sweep.run_id if sweep is not None else None
    wal.close()
    return report
