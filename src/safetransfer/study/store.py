"""The results store: one row per finished cell of a study, in an embedded SQLite database.

SQLite (Python's standard library) rather than DuckDB: no extra dependency, and its
write-ahead log lets several runners (processes) write to one file at once, each insert an
atomic transaction; a row is keyed by the cell's content key, so a cell finished twice (two
runners, or a restart) is one row, never two, and a killed runner loses at most the cell it
was making. Artifacts (teachers, students, crafted inputs) stay in the study's
content-addressed cache folder; a row holds their key.

A row: ``cell_key`` (primary key), ``config_hash`` (the study config's fingerprint), ``study``,
``task``, ``kind`` (``crafted``, ``teacher``, ``student``), ``name`` (defect or method),
``variant`` (the teacher variant of a student), ``metrics`` (JSON), ``seconds``, ``seed``,
``versions`` (JSON: safetransfer, torch, python), ``created`` (UTC ISO time).
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from safetransfer import __version__
from safetransfer.errors import DataError
from safetransfer.json_values import nan_to_none

STORE_FILE = "results.sqlite"
COLUMNS = ("cell_key", "config_hash", "study", "task", "kind", "name", "variant", "metrics", "seconds", "seed",
           "versions", "created")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    cell_key TEXT NOT NULL, config_hash TEXT NOT NULL, study TEXT, task TEXT, kind TEXT NOT NULL, name TEXT,
    variant TEXT, metrics TEXT NOT NULL, seconds REAL, seed INTEGER, versions TEXT, created TEXT NOT NULL,
    PRIMARY KEY (config_hash, cell_key)
)
"""


def versions() -> dict[str, str | int]:
    """What the numbers were computed with. Training on a CPU sums in an order that depends on
    torch's thread count, so a figure is reproduced to the last digit with the same count."""
    return {"safetransfer": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "torch_threads": torch.get_num_threads()}


OPEN_WAIT_SECONDS = 60  # how long a runner waits for another one's lock on a shared store


class ResultsStore:
    """Open (or create) the store at ``path``; use :meth:`put` and :meth:`rows`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Switching a new file to WAL (persistent, once per file) takes an exclusive lock for which
        # SQLite may answer "database is locked" at once, without waiting out the busy timeout, while
        # another runner opens the same new store: retried here for up to OPEN_WAIT_SECONDS.
        deadline = time.monotonic() + OPEN_WAIT_SECONDS
        while True:
            try:
                with self._connect() as db:
                    db.execute("PRAGMA journal_mode=WAL")
                    db.execute(_SCHEMA)
                break
            except sqlite3.OperationalError as err:
                contended = "locked" in str(err) or "busy" in str(err)
                if not contended or time.monotonic() > deadline:
                    raise DataError(f"{self.path} is not a results store ({err}).") from None
                time.sleep(0.05)
            except sqlite3.DatabaseError as err:
                raise DataError(f"{self.path} is not a results store ({err}).") from None
        self._versions = versions()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=OPEN_WAIT_SECONDS)
        try:
            with db:  # one transaction: committed on success, rolled back on error
                yield db
        finally:
            db.close()

    def put(self, *, cell_key: str, config_hash: str, kind: str, metrics: dict[str, Any], study: str | None = None,
            task: str | None = None, name: str | None = None, variant: str | None = None,
            seconds: float | None = None, seed: int | None = None) -> None:
        """Insert or replace the row of one finished cell (atomic; idempotent for the same cell)."""
        created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        row = (cell_key, config_hash, study, task, kind, name, variant,
               json.dumps(nan_to_none(metrics), allow_nan=False, default=str), seconds, seed, json.dumps(self._versions),
               created)
        with self._connect() as db:
            db.execute(f"INSERT OR REPLACE INTO cells ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                       row)

    def rows(self, config_hash: str | None = None, kind: str | None = None, task: str | None = None,
             name: str | None = None) -> list[dict[str, Any]]:
        """The rows matching the given filters, oldest first, ``metrics``/``versions`` decoded."""
        where, args = [], []
        for column, value in (("config_hash", config_hash), ("kind", kind), ("task", task), ("name", name)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = f"SELECT {', '.join(COLUMNS)} FROM cells" + (f" WHERE {' AND '.join(where)}" if where else "")
        with self._connect() as db:
            found = db.execute(sql + " ORDER BY created, rowid", args).fetchall()
        out = []
        for values in found:
            row = dict(zip(COLUMNS, values))
            row["metrics"] = json.loads(row["metrics"])
            row["versions"] = json.loads(row["versions"]) if row["versions"] else {}
            out.append(row)
        return out

    def count(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM cells").fetchone()[0])
