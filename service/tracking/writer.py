"""The background MLflow writer of a sweep: the tracking log's ops, sent in large batches.

One thread reads `service.tracking.wal`'s file from where it stopped, coalesces the
per-epoch results of every trial into one `log_batch` per run (up to MLflow's limits),
creates runs, closes them, and appends an `ack` when a batch is in MLflow. A transport
failure (server down, slow, hanging, 5xx) keeps the batch and retries it with backoff
until MLflow answers again; client timeouts are short (`configure_client`) so a hung
request costs seconds, not MLflow's interactive minutes. Tune's event loop never waits
for any of it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from service.tracking.client import is_transient, prepare_store
from service.tracking.wal import WalState, WriteAheadLog, read_records
from trainables.core.wire import END_EPOCH, ROTATION_PREFIX, VAL_ACC

__all__ = ["TrackingWriter", "WriterStats"]

log = logging.getLogger(__name__)

# MLflow's log_batch limits: 1000 entities in all, of which at most 100 params, 100 tags.
_MAX_ENTITIES = 1000
_MIN_ENTITIES = 125
_MAX_TAGS = 100
_MAX_PARAMS = 100
# One batch reads at most this much of the log (~6,000 ResNet-sized results). Results of
# concurrent trials interleave in the log, so the window decides how many epochs of one
# run share a log_batch: a 4 MB window gave 1,000 trials one call per run per epoch, and
# a call's fixed cost (run lookup, latest-metric rows) is most of what 121 metrics cost.
_READ_BYTES = 32 * 2**20
_PLOT_KEYS = (ROTATION_PREFIX, VAL_ACC, "cost/usd")


_PLOTS = threading.Lock()


class _Transient(Exception):
    pass


def _group_key(ref: str, group: list[dict[str, Any]]) -> tuple[str, int, int]:
    return ref, int(group[0].get("s", 0)), int(group[-1].get("s", 0))


def _log_batch(client: Any, run_id: str, metrics: list, params: list, tags: list) -> bool:
    """One log_batch; True once MLflow took it (`_call` answers None when it refused)."""
    client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
    return True


@dataclass
class WriterStats:
    delayed: set[int] = field(default_factory=set)  # results whose first attempt failed
    failures: int = 0  # failed attempts
    last_error: str | None = None
    batches: int = 0
    caught_up_at: float | None = None  # monotonic time the last op was acknowledged
    calls: dict[str, list[float]] = field(default_factory=dict)  # MLflow call -> [n, seconds]
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def timed(self, name: str, seconds: float) -> None:
        with self._lock:
            entry = self.calls.setdefault(name, [0, 0.0])
            entry[0] += 1
            entry[1] += seconds

    def call_summary(self) -> dict[str, dict[str, float]]:
        """Per MLflow call: how many, and their mean wall time (ms; calls overlap)."""
        with self._lock:
            return {
                k: {"calls": int(n), "mean_ms": round(t / n * 1e3, 1), "total_s": round(t, 1)}
                for k, (n, t) in sorted(self.calls.items())
            }


class TrackingWriter:
    """Sends the log's ops to MLflow on a background thread, in order, idempotently."""

    def __init__(
        self,
        wal: WriteAheadLog,
        uri: str,
        *,
        final: Callable[[Any, dict[str, Any], dict[str, str]], None] | None = None,
        flush_s: float = 0.2,
        max_backoff_s: float = 5.0,
        threads: int = 1,
    ) -> None:
        self.wal, self.uri = wal, uri
        self.threads = threads  # runs written side by side (one sqlite file takes one writer)
        self._final = final  # logs the sweep's totals and summary: (client, summary, run ids)
        self.flush_s, self.max_backoff_s = flush_s, max_backoff_s
        self.state: WalState = wal.state  # mapping and acks, shared with the callback
        self.stats = WriterStats()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._done = threading.Condition()
        self._offset = 0
        self.client: Any = None
        # Refs whose create_run may have happened unseen: a driver killed after MLflow
        # created a run but before its `mapped` record; looked up before creating again.
        self._uncertain = {r for r, st in self.state.refs.items() if st.created and not st.run_id}
        self._history: dict[str, dict[int, dict[str, Any]]] = {}  # plot keys per ref and step
        self._sent: set[tuple[str, int, int]] = set()  # run groups of the current batch sent
        # Entities per log_batch: halved after a failed batch (a slow server timing out on
        # 1,000 metrics still takes 250), doubled back after each acknowledged one.
        self._entities = _MAX_ENTITIES
        self._thread: threading.Thread | None = None

    # -- control (any thread) ----------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mlflow-writer", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def caught_up(self) -> bool:
        return self.state.acked >= self.wal.last_seq

    def drain(self, timeout_s: float) -> bool:
        """Wait until every op written so far is in MLflow; False if `timeout_s` passed."""
        self._wake.set()
        deadline = time.monotonic() + timeout_s
        with self._done:
            while not self.caught_up():
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    break
                self._done.wait(min(left, 0.5))
        return self.caught_up()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.wal.fsync()

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            self._wake.wait(backoff or self.flush_s)
            self._wake.clear()
            try:
                self.wal.fsync()  # batched: the loop only flushes to the OS
                progressed = self._step()
                backoff = 0.0
                if not progressed:
                    self._maybe_compact()
            except _Transient as exc:
                self.stats.failures += 1
                backoff = min(self.max_backoff_s, max(0.5, backoff * 2))
                if self.stats.failures == 1 or self.stats.last_error != str(exc):
                    log.warning(
                        "MLflow at %s is not answering (%s); results are kept in %s and sent "
                        "when it answers again (retrying every <= %.0f s)",
                        self.uri,
                        exc,
                        self.wal.path,
                        self.max_backoff_s,
                    )
                self.stats.last_error = str(exc)
            except Exception:  # a bug here must not end the writer silently
                log.exception("MLflow writer: unexpected error; retrying")
                backoff = self.max_backoff_s

    def _step(self) -> bool:
        records, end = read_records(self.wal.path, self._offset, _READ_BYTES)
        ops = [r for r in records if "s" in r and int(r["s"]) > self.state.acked]
        for r in records:
            if r.get("op") == "log":
                self._remember(r)  # plot history, acknowledged or not
        if ops:
            try:
                self._apply(ops)
            except _Transient:
                self.stats.delayed.update(int(o["s"]) for o in ops if o.get("epoch"))
                self._entities = max(_MIN_ENTITIES, self._entities // 2)
                raise
            upto = int(ops[-1]["s"])
            self._sent.clear()
            self._entities = min(_MAX_ENTITIES, self._entities * 2)
            self.wal.note({"op": "ack", "upto": upto})
            with self._done:
                self.state.acked = max(self.state.acked, upto)
                self.stats.batches += 1
                if self.caught_up():
                    self.stats.caught_up_at = time.monotonic()
                self._done.notify_all()
        self._offset = end
        if self.stats.last_error is not None and ops:
            log.info("MLflow at %s answers again; sending the kept results", self.uri)
            self.stats.last_error = None
        return bool(records)

    def _maybe_compact(self, min_bytes: int = 64 * 2**20) -> None:
        if self.wal.size < min_bytes or not self.caught_up() or self._offset != self.wal.size:
            return
        snapshot = {
            "uid": self.state.uid,
            "acked": self.state.acked,
            "results": self.state.results,
            "refs": {k: vars(v) for k, v in self.state.refs.items()},
        }
        if self.wal.compact(snapshot, self._offset):
            self._offset = self.wal.size
            log.info("tracking log %s compacted: everything in it is in MLflow", self.wal.path)

    # -- MLflow calls ----------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One MLflow call: transient failures abort the batch (retried), others skip the op."""
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if is_transient(exc):
                raise _Transient(f"{what}: {type(exc).__name__}: {str(exc)[:300]}") from exc
            log.warning("MLflow: %s failed for good, skipped: %s", what, exc)
            return None
        finally:
            self.stats.timed(getattr(fn, "__name__", what).lstrip("_"), time.perf_counter() - t0)

    def _mlflow(self) -> Any:
        if self.client is None:
            self.client = self._call("opening the store", prepare_store, self.uri)
        return self.client

    def _apply(self, ops: list[dict[str, Any]]) -> None:
        """Send a batch: the sweep's run first, then each run's ops in order, runs side by
        side on `threads` connections; a `final` op waits for everything before it."""
        client = self._mlflow()
        segment: list[dict[str, Any]] = []
        for op in ops:
            if op["op"] == "final":
                self._apply_runs(client, segment)
                segment = []
                self._send_final(client, op)
            else:
                segment.append(op)
        self._apply_runs(client, segment)

    def _apply_runs(self, client: Any, ops: list[dict[str, Any]]) -> None:
        by_ref: dict[str, list[dict[str, Any]]] = {}
        for op in ops:
            by_ref.setdefault(op["ref"], []).append(op)
        sweep = by_ref.pop("sweep", [])
        if sweep and sweep[0]["op"] == "run":  # trial runs name it as their parent
            run = sweep.pop(0)
            self._ensure_run(client, run)
            self._send_logs(client, "sweep", [], run)
        if sweep:
            by_ref["sweep"] = sweep
        # A retried batch skips the runs whose ops all went through in an earlier attempt
        # (a timeout in one of 1,000 runs must not resend the other 999); a run that failed
        # half-way is sent again whole: every op is idempotent.
        todo = [(r, g) for r, g in by_ref.items() if _group_key(r, g) not in self._sent]
        if self.threads <= 1 or len(todo) <= 1:
            for ref, group in todo:
                self._apply_run(client, ref, group)
                self._sent.add(_group_key(ref, group))
            return
        from concurrent.futures import ThreadPoolExecutor

        failed = threading.Event()  # MLflow is away: the runs not started yet wait for the retry

        def one(ref: str, group: list[dict[str, Any]]) -> None:
            if failed.is_set():
                raise _Transient("an earlier run of this batch failed")
            try:
                self._apply_run(client, ref, group)
            except _Transient:
                failed.set()
                raise
            self._sent.add(_group_key(ref, group))

        with ThreadPoolExecutor(self.threads, thread_name_prefix="mlflow-writer") as pool:
            futures = [pool.submit(one, r, g) for r, g in todo]
        errors = [e for f in futures if (e := f.exception()) is not None]
        if errors:
            raise errors[0]  # retried: the runs that went through are skipped

    def _apply_run(self, client: Any, ref: str, ops: list[dict[str, Any]]) -> None:
        """One run's ops in order; its consecutive results go out together, in as few
        calls as MLflow's limits allow: a new run's params and a closing trial's last
        tags ride in the same log_batch as its results."""
        logs: list[dict[str, Any]] = []
        created: dict[str, Any] | None = None  # the `run` op whose params are still to send
        for op in ops:
            if op["op"] == "run":
                self._ensure_run(client, op)
                created = op
            elif op["op"] == "log":
                logs.append(op)
            else:  # status or close: this run's earlier results go first
                if op["op"] == "close" and (op.get("m") or op.get("t")):
                    logs.append(op)
                self._send_logs(client, ref, logs, created)
                logs, created = [], None
                self._send_status(client, op)
        self._send_logs(client, ref, logs, created)

    def _run_id(self, ref: str) -> str | None:
        st = self.state.refs.get(ref)
        return st.run_id if st else None

    def _ensure_run(self, client: Any, op: dict[str, Any]) -> None:
        ref = op["ref"]
        if self._run_id(ref):
            return
        exp_id: str | None = self.state.ref("sweep").experiment_id
        if ref == "sweep":
            exp_id = self._experiment(client, op["experiment"], op.get("artifact_location"))
        tags = dict(op.get("tags", {}))
        parent = op.get("parent")
        if parent:
            tags["mlflow.parentRunId"] = self._run_id(parent) or ""
        run_id = (
            self._find_run(client, exp_id, tags["cpsweep.wal_key"])
            if ref in self._uncertain
            else None
        )
        if run_id is None:
            self._uncertain.add(ref)  # a lost answer may still have created it
            run = self._call(f"creating the run of {ref}", client.create_run, exp_id, tags=tags)
            run_id = run.info.run_id if run is not None else None
        if run_id is None:
            return
        self._uncertain.discard(ref)
        self.wal.note({"op": "mapped", "ref": ref, "run_id": run_id, "experiment_id": exp_id})
        st = self.state.ref(ref)
        st.run_id, st.experiment_id = run_id, exp_id
        if ref == "sweep":  # the API finds the job's run by this line (service/jobs/trials.py)
            log.info("MLflow: parent run %s in experiment %s", run_id, exp_id)

    def _experiment(self, client: Any, name: str, artifact_location: str | None) -> str:
        exp = self._call("reading the experiment", client.get_experiment_by_name, name)
        if exp is not None:
            return str(exp.experiment_id)
        created = self._call(
            "creating the experiment", client.create_experiment, name, artifact_location
        )
        if created is None:  # created concurrently by someone else
            exp = self._call("reading the experiment", client.get_experiment_by_name, name)
            return str(exp.experiment_id)
        return str(created)

    def _find_run(self, client: Any, exp_id: str | None, key: str) -> str | None:
        found = self._call(
            "looking up a run",
            client.search_runs,
            [exp_id],
            filter_string=f"tags.`cpsweep.wal_key` = '{key}'",
            max_results=1,
        )
        return found[0].info.run_id if found else None

    def _send_logs(
        self,
        client: Any,
        ref: str,
        group: list[dict[str, Any]],
        created: dict[str, Any] | None = None,
    ) -> None:
        """`group`'s metrics and tags, and `created`'s params and dicts, in as few
        log_batch calls as MLflow's limits allow. The params go again whenever their
        `run` op is sent again (a retried batch, a replay): identical values are
        idempotent, and a run whose params were lost with a failed call gets them."""
        from mlflow.entities import Metric, Param, RunTag

        params = [Param(k, str(v)[:6000]) for k, v in (created or {}).get("params", {}).items()]
        if params or any(op.get("m") or op.get("t") for op in group):
            run_id = self._run_id(ref)
            if run_id is None:
                log.warning(
                    "MLflow: %d results of %s skipped: its run was never created", len(group), ref
                )
                return
            metrics = [
                Metric(k, float(v), int(op["ts"]), int(op.get("step") or 0))
                for op in group
                for k, v in op.get("m", {}).items()
            ]
            merged: dict[str, str] = {}
            for op in group:
                merged.update(op.get("t", {}))
            tags = [RunTag(k, str(v)[:8000]) for k, v in merged.items()]
            while params or tags or metrics:
                p, params = params[:_MAX_PARAMS], params[_MAX_PARAMS:]
                t, tags = tags[:_MAX_TAGS], tags[_MAX_TAGS:]
                room = self._entities - len(p) - len(t)
                m, metrics = metrics[:room], metrics[room:]
                sent = self._call(f"results of {ref}", _log_batch, client, run_id, m, p, t)
                if sent is None and p and (m or t):  # a param MLflow refuses: keep the results
                    self._call(f"results of {ref}", _log_batch, client, run_id, m, [], t)
        self._send_dicts(client, ref, created)

    def _send_dicts(self, client: Any, ref: str, created: dict[str, Any] | None) -> None:
        run_id = self._run_id(ref)
        if created is None or run_id is None:
            return
        for name, content in created.get("dicts", {}).items():
            self._call(f"{name} of {ref}", client.log_dict, run_id, content, name)

    def _send_status(self, client: Any, op: dict[str, Any]) -> None:
        ref, status = op["ref"], op["status"]
        run_id = self._run_id(ref)
        if run_id is None:
            return
        if op["op"] == "close" and op.get("plots"):  # its last tags went with its results
            self._plots(client, ref, run_id)
        if status == "RUNNING":
            self._call(f"reopening {ref}", client.update_run, run_id, status="RUNNING")
        else:
            self._call(f"closing {ref}", client.set_terminated, run_id, status=status)

    def _send_final(self, client: Any, op: dict[str, Any]) -> None:
        if self._final is None:
            return
        runs = {ref: st.run_id for ref, st in self.state.refs.items() if st.run_id}
        self._call("the sweep's totals and summary", self._final, client, op["summary"], runs)

    # -- plots -----------------------------------------------------------------------------------

    def _remember(self, op: dict[str, Any]) -> None:
        if not op.get("epoch"):
            return
        row = {k: v for k, v in op.get("m", {}).items() if k.startswith(_PLOT_KEYS)}
        end = op.get("t", {}).get("cp.end_epoch")
        if end is not None:
            row[END_EPOCH] = int(end)
        self._history.setdefault(op["ref"], {})[int(op["step"])] = {"epoch": int(op["step"]), **row}

    def _plots(self, client: Any, ref: str, run_id: str) -> None:
        from service.tracking.plots import log_trial_plots
        from service.tracking.reader import epoch_rows

        by_step = self._history.pop(ref, {})
        rows = [by_step[s] for s in sorted(by_step)]
        if not rows or rows[0]["epoch"] != 1 or len(rows) != rows[-1]["epoch"]:
            rows = self._call(f"history of {ref}", epoch_rows, client, run_id, _PLOT_KEYS) or []
        end = next((r[END_EPOCH] for r in reversed(rows) if r.get(END_EPOCH)), None)
        for r in rows:
            r.setdefault(END_EPOCH, end)
        with _PLOTS:  # pyplot is not thread-safe
            self._call(f"plots of {ref}", log_trial_plots, client, run_id, rows)
