"""MLflow sqlite stores for tests, migrated once per test process and copied.

A fresh sqlite store runs every Alembic migration on first use (~2.3 s of CPU on this
project's 2-core machine), and most tests only need a store to log into.
`migrated_sqlite(path)` copies a store made by MLflow itself (the `SqlAlchemyStore`
behind every sqlite URI, as `service.tracking.client.prepare_store` opens it) without
its Default experiment, which MLflow adds on first use with that store's own artifact
root, as it does in a fresh file. Tests about creating and migrating a fresh store
(tests/tracking: `finished_sweep`, `prepare_store`) keep fresh files.
"""

from __future__ import annotations

import atexit
import shutil
import sqlite3
import tempfile
from pathlib import Path

__all__ = ["migrated_sqlite"]

_template: list[Path] = []  # the migrated store, once made


def migrated_sqlite(db: Path) -> str:
    """The sqlite URI of `db`, which now holds an empty, migrated MLflow store (kept if
    `db` already exists)."""
    if not db.exists():
        db.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_migrated_template(), db)
    return f"sqlite:///{db}"


def _migrated_template() -> Path:
    if not _template:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        root = Path(tempfile.mkdtemp(prefix="cpsweep-mlflow-template-"))
        atexit.register(shutil.rmtree, root, True)
        db = root / "mlflow.db"
        store = SqlAlchemyStore(f"sqlite:///{db}", str(root / "mlruns"))
        store.engine.dispose()
        con = sqlite3.connect(db)
        try:
            with con:  # its artifact location names this directory: the copy makes its own
                con.execute("DELETE FROM experiments WHERE experiment_id = 0")
        finally:
            con.close()
        _template.append(db)
    return _template[0]
