"""The tracking write-ahead log: every MLflow write of a sweep, durable on the driver first.

Tune's event loop only appends one JSON line per write to `<output_dir>/mlflow-wal.jsonl`
(a `write` + `flush`, so a killed driver loses nothing the OS has; `fsync` runs in
batches on the writer thread). The writer thread (`service.tracking.writer`) reads the
file from where it stopped, sends the writes to MLflow and appends its own records:
`mapped` (a run it created) and `ack` (every op up to a sequence number is in MLflow).
The file is the queue: memory stays bounded however long MLflow is away, and after a
crash `--resume` or `cpsweep sync` continues from the last `ack`.

Ops written by the sweep (`s` is the sequence number):

- `run`: create a run for `ref` ("sweep" or "trial:<id>") with tags and params;
- `log`: metrics `m` (with the op's `ts` and `step`) and tags `t` for `ref`;
- `status`: set `ref`'s status (KILLED after Ctrl-C, RUNNING when resumed);
- `close`: a trial's last metrics and tags, its plots, then its final status;
- `final`: the sweep's summary and totals for the parent run (the report follows it: service.sweeps.run).

Every op carries its timestamp, so sending it twice writes identical metric rows, which
MLflow's SQL store keeps once: a replay is idempotent by (run, key, step).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "WAL_NAME",
    "RefState",
    "WalState",
    "WriteAheadLog",
    "fold_file",
    "log_report",
    "read_records",
]

log = logging.getLogger(__name__)

WAL_NAME = "mlflow-wal.jsonl"
_WARN_FROM_BYTES = 256 * 2**20  # first warning; then at every doubling


def read_records(
    path: Path, offset: int = 0, max_bytes: int = -1
) -> tuple[list[dict[str, Any]], int]:
    """Complete lines from `offset` on (about `max_bytes` of them), and the offset after the
    last complete one. A torn last line (the driver died mid-write) is left for later."""
    if not path.exists():
        return [], offset
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(max_bytes)
        if max_bytes > 0 and len(data) == max_bytes and not data.endswith(b"\n"):
            data += f.readline()  # finish the line the chunk cut
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    records = []
    for line in data[: end + 1].splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:  # a torn line from an earlier crash, already repaired past
            log.warning("tracking log %s: skipped an unreadable line", path)
    return records, offset + end + 1


@dataclass
class RefState:
    """What the log knows about one run (a trial's or the sweep's)."""

    run_id: str | None = None
    experiment_id: str | None = None
    last_step: int = 0  # the highest epoch logged: a replayed result at or below it is dropped
    usage: str | None = None  # the last record's accounting state (JSON): energy/cost so far
    status: str | None = None  # the last status op: KILLED, FINISHED, ...
    created: bool = False  # a `run` op exists


@dataclass
class WalState:
    """The log folded into per-run state; `acked` is the highest sequence number in MLflow."""

    refs: dict[str, RefState] = field(default_factory=dict)
    uid: str = ""  # names this sweep's runs (tag cpsweep.wal_key)
    acked: int = 0
    last_seq: int = 0
    results: int = 0  # per-epoch `log` ops of trials
    pending_results: int = 0  # of which not yet acknowledged

    def ref(self, name: str) -> RefState:
        return self.refs.setdefault(name, RefState())

    def fold(self, rec: dict[str, Any]) -> None:
        op = rec.get("op")
        if op == "ack":
            self.acked = max(self.acked, int(rec["upto"]))
            return
        if op == "mapped":
            r = self.ref(rec["ref"])
            r.run_id, r.experiment_id = rec["run_id"], rec.get("experiment_id")
            return
        if op == "snapshot":
            for name, st in rec["refs"].items():
                self.refs[name] = RefState(**st)
            self.acked = max(self.acked, int(rec["acked"]))
            self.uid = rec.get("uid", self.uid)
            self.last_seq = max(self.last_seq, int(rec["acked"]))
            self.results += int(rec.get("results", 0))
            return
        self.last_seq = max(self.last_seq, int(rec["s"]))
        if op == "run":
            self.ref(rec["ref"]).created = True
            if rec["ref"] == "sweep":
                self.uid = rec["tags"]["cpsweep.wal_key"].split("/")[0]
        elif op == "log" and rec.get("step") is not None:
            r = self.ref(rec["ref"])
            r.last_step = max(r.last_step, int(rec["step"]))
            # The accounting state rides in the record (older logs: in the usage tag).
            r.usage = rec.get("usage") or rec.get("t", {}).get("cpsweep.usage", r.usage)
            if rec["ref"].startswith("trial:") and rec.get("epoch"):
                self.results += 1
        elif op in ("status", "close"):
            self.ref(rec["ref"]).status = rec["status"]


def fold_file(path: Path) -> WalState:
    """The state a log file holds (runs, last epochs, acks, pending results)."""
    state = WalState()
    records, _ = read_records(path)
    for rec in records:
        state.fold(rec)
    state.pending_results = sum(
        1
        for rec in records
        if rec.get("op") == "log" and rec.get("epoch") and int(rec["s"]) > state.acked
    )
    return state


class WriteAheadLog:
    """Appends ops durably; thread-safe (the loop writes ops, the writer its acks)."""

    def __init__(self, path: Path, max_bytes: int | None = None) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()
        self.state = fold_file(path)
        self._seq = self.state.last_seq
        self._file = open(path, "ab")  # noqa: SIM115 - held open for the sweep
        self._size = self._file.tell()
        self._warn_at = max(_WARN_FROM_BYTES, 2 ** (self._size.bit_length()))
        self._dirty = False
        self.dropped = 0  # ops refused because the log reached max_bytes

    def _repair(self) -> None:
        """Cut a torn last line (the driver died mid-write) so appends start on a new line."""
        if not self.path.exists():
            return
        with open(self.path, "rb+") as f:
            data = f.read()
            end = data.rfind(b"\n") + 1
            if end != len(data):
                log.warning("tracking log %s: removed a torn last line", self.path)
                f.truncate(end)

    def append(self, op: dict[str, Any]) -> int:
        """Write one op of the sweep; returns its sequence number (0: refused, log full)."""
        with self._lock:
            if self.max_bytes is not None and self._size >= self.max_bytes:
                self.dropped += 1
                if self.dropped == 1:
                    log.error(
                        "tracking log %s reached its limit of %d MB while MLflow is unreachable: "
                        "further results are NOT kept for MLflow (Tune's result.json still has "
                        "them); raise tracking.wal_max_mb or bring MLflow back",
                        self.path,
                        self.max_bytes // 2**20,
                    )
                return 0
            self._seq += 1
            self._write({"s": self._seq, **op})
            return self._seq

    def note(self, rec: dict[str, Any]) -> None:
        """Write one of the writer's own records (`mapped`, `ack`)."""
        with self._lock:
            self._write(rec)

    def _write(self, rec: dict[str, Any]) -> None:
        line = json.dumps(rec, separators=(",", ":"), default=str).encode() + b"\n"
        self._file.write(line)
        self._file.flush()  # in the OS: survives a killed driver; fsync() makes it survive a crash
        self._size += len(line)
        self._dirty = True
        if self._size >= self._warn_at:
            self._warn_at *= 2
            log.warning(
                "tracking log %s has grown to %d MB: MLflow is not keeping up or is "
                "unreachable; nothing is lost, it is uploaded when MLflow answers "
                "(or later: cpsweep sync %s)",
                self.path,
                self._size // 2**20,
                self.path.parent,
            )

    def fsync(self) -> None:
        if self._dirty:
            self._dirty = False
            os.fsync(self._file.fileno())

    @property
    def size(self) -> int:
        return self._size

    @property
    def last_seq(self) -> int:
        return self._seq

    def compact(self, snapshot: dict[str, Any], expected_size: int) -> bool:
        """Replace a fully acknowledged log by one snapshot record (what resume needs);
        refused (False) if anything was appended after `expected_size`."""
        with self._lock:
            if self._size != expected_size:
                return False
            tmp = self.path.with_suffix(".tmp")
            tmp.write_bytes(json.dumps({"op": "snapshot", **snapshot}).encode() + b"\n")
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            self._file.close()
            os.replace(tmp, self.path)
            self._file = open(self.path, "ab")  # noqa: SIM115
            self._size = self._file.tell()
            self._dirty = False
            return True

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()


def log_report(wal: WriteAheadLog, delayed: int = 0) -> dict[str, Any]:
    """What reached MLflow: results, those delayed by an outage, those still pending."""
    now = fold_file(wal.path)
    return {
        "results": now.results,
        "delayed_results": delayed,
        "pending_results": now.pending_results,
        "all_in_mlflow": now.acked >= now.last_seq,
        "dropped_results": wal.dropped,
        "log": str(wal.path),
    }
