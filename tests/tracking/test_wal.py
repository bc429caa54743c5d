"""The tracking log on its own: durable appends, torn lines, state after a restart, limits."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from service.tracking.wal import WriteAheadLog, fold_file, log_report, read_records


def _log(wal: WriteAheadLog, ref: str, epoch: int) -> int:
    return wal.append(
        {"op": "log", "ref": ref, "step": epoch, "epoch": epoch, "ts": 1, "m": {"a": 1.0}, "t": {}}
    )


def test_a_torn_last_line_is_cut_and_the_state_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "wal.jsonl"
    wal = WriteAheadLog(path)
    wal.append({"op": "run", "ref": "sweep", "tags": {"cpsweep.wal_key": "u1/sweep"}})
    wal.append({"op": "run", "ref": "trial:a", "tags": {"cpsweep.wal_key": "u1/trial:a"}})
    for e in (1, 2, 3):
        _log(wal, "trial:a", e)
    wal.note({"op": "mapped", "ref": "trial:a", "run_id": "r-a", "experiment_id": "7"})
    wal.note({"op": "ack", "upto": 4})
    wal.close()
    with open(path, "ab") as f:  # the driver died in the middle of a line
        f.write(b'{"s": 6, "op": "log", "ref": "tri')
    again = WriteAheadLog(path)  # a resumed sweep
    assert path.read_bytes().endswith(b"}\n")  # the torn tail is gone
    st = again.state
    assert st.uid == "u1" and st.acked == 4 and st.last_seq == 5
    assert st.refs["trial:a"].run_id == "r-a" and st.refs["trial:a"].last_step == 3
    assert again.append({"op": "status", "ref": "sweep", "status": "RUNNING"}) == 6
    report = log_report(again)
    assert report["results"] == 3 and report["pending_results"] == 1
    assert not report["all_in_mlflow"]


def test_reads_come_in_bounded_chunks_of_whole_lines(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path / "wal.jsonl")
    for e in range(1, 101):
        _log(wal, "trial:a", e)
    seen, offset = [], 0
    while True:
        chunk, offset = read_records(wal.path, offset, max_bytes=1000)
        if not chunk:
            break
        assert len(chunk) < 20  # ~1000 bytes of ~90-byte lines, never the whole file
        seen += [r["step"] for r in chunk]
    assert seen == list(range(1, 101))


def test_compaction_keeps_what_a_resume_needs(tmp_path: Path) -> None:
    path = tmp_path / "wal.jsonl"
    wal = WriteAheadLog(path)
    wal.append({"op": "run", "ref": "sweep", "tags": {"cpsweep.wal_key": "u2/sweep"}})
    _log(wal, "trial:b", 1)
    _log(wal, "trial:b", 2)
    wal.note({"op": "mapped", "ref": "trial:b", "run_id": "r-b"})
    wal.note({"op": "ack", "upto": 3})
    st = fold_file(path)
    snapshot = {"uid": st.uid, "acked": st.acked, "results": st.results}
    snapshot["refs"] = {k: vars(v) for k, v in st.refs.items()}
    assert not wal.compact(snapshot, expected_size=wal.size - 1)  # something came after
    assert wal.compact(snapshot, expected_size=wal.size)
    assert len(path.read_text().splitlines()) == 1
    after = WriteAheadLog(path).state
    assert after.uid == "u2" and after.acked == 3 and after.results == 2
    assert after.refs["trial:b"].run_id == "r-b" and after.refs["trial:b"].last_step == 2


def test_a_full_log_refuses_results_with_one_error(tmp_path: Path, caplog) -> None:
    wal = WriteAheadLog(tmp_path / "wal.jsonl", max_bytes=300)
    caplog.set_level(logging.ERROR)
    seqs = [_log(wal, "trial:c", e) for e in range(1, 11)]
    assert 0 in seqs and seqs[0] == 1
    assert wal.dropped == seqs.count(0)
    assert len([r for r in caplog.records if "reached its limit" in r.getMessage()]) == 1
    lines = [json.loads(x) for x in wal.path.read_text().splitlines()]
    assert [r["s"] for r in lines] == [s for s in seqs if s]
