"""`MemoryStore`: memories in SQLite (WAL), an append-only history of every change, cosine retrieval.

Each `apply_update` call is one transaction (`BEGIN IMMEDIATE` ... `COMMIT`): a process killed in the middle leaves
the database as it was before the call, never half-applied (SQLite's journal rolls the open transaction back when
the file is next opened). Embeddings are computed before the transaction opens, so the write lock is held only for
the SQL itself. Events that cannot apply (unknown temporary id, UPDATE/DELETE of a memory that is not there, an ADD
of a text already stored) change nothing and are listed in `ApplyResult.skipped`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

log = logging.getLogger("memlora.memory")
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS memories (
    id INTEGER PRIMARY KEY,
    owner TEXT,
    text TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    source_turns TEXT NOT NULL DEFAULT '[]',
    embedding BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS memories_owner ON memories(owner);
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    memory_id INTEGER NOT NULL,
    owner TEXT,
    event TEXT NOT NULL CHECK (event IN ('ADD', 'UPDATE', 'DELETE')),
    old_text TEXT,
    new_text TEXT,
    source_turns TEXT NOT NULL DEFAULT '[]',
    at TEXT NOT NULL,
    batch TEXT
);
CREATE INDEX IF NOT EXISTS history_memory ON history(memory_id);
CREATE TRIGGER IF NOT EXISTS history_no_update BEFORE UPDATE ON history
BEGIN SELECT RAISE(ABORT, 'history is append-only'); END;
CREATE TRIGGER IF NOT EXISTS history_no_delete BEFORE DELETE ON history
BEGIN SELECT RAISE(ABORT, 'history is append-only'); END;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class StoreError(Exception):
    """The store file cannot be used (other schema version, other embedding size)."""


@dataclass
class Memory:
    id: int
    owner: str | None
    text: str
    created_at: str
    updated_at: str
    source_turns: list[str]
    embedding: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "owner": self.owner, "text": self.text, "created_at": self.created_at,
                "updated_at": self.updated_at, "source_turns": self.source_turns}


@dataclass
class ApplyResult:
    added: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)
    unchanged: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)  # {"event": ..., "reason": ...}

    @property
    def changed(self) -> int:
        return len(self.added) + len(self.updated) + len(self.deleted)

    def to_dict(self) -> dict[str, Any]:
        return {"added": self.added, "updated": self.updated, "deleted": self.deleted, "unchanged": self.unchanged,
                "skipped": self.skipped}


def _now() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")


def _norm(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32).reshape(-1)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


class MemoryStore:
    def __init__(self, path: str | Path, *, dim: int | None = None, timeout: float = 30.0):
        self.path = str(path)
        # isolation_level=None: autocommit; transactions are opened explicitly with BEGIN IMMEDIATE.
        self.conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.executescript(SCHEMA)
        meta = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
        if "schema_version" not in meta:
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(meta["schema_version"]) != SCHEMA_VERSION:
            raise StoreError(f"{path}: memory store schema {meta['schema_version']} (this code reads {SCHEMA_VERSION})")
        self.dim = int(meta["dim"]) if "dim" in meta else None
        if dim is not None:
            self._check_dim(dim)

    # ------------------------------------------------------------------------------------------------ basics
    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "MemoryStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _check_dim(self, dim: int) -> None:
        if self.dim is None:
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('dim', ?)", (str(dim),))
            self.dim = dim
        elif self.dim != dim:
            raise StoreError(f"{self.path}: embeddings here have {self.dim} dims, got {dim} (another embedder?)")

    @staticmethod
    def _row(r: Sequence[Any], with_embedding: bool = False) -> Memory:
        return Memory(id=r[0], owner=r[1], text=r[2], created_at=r[3], updated_at=r[4], source_turns=json.loads(r[5]),
                      embedding=np.frombuffer(r[6], dtype=np.float32) if with_embedding else None)

    def get(self, memory_id: int) -> Memory | None:
        r = self.conn.execute("SELECT id, owner, text, created_at, updated_at, source_turns, embedding FROM memories "
                              "WHERE id = ?", (memory_id,)).fetchone()
        return self._row(r, True) if r else None

    def all(self, owner: str | None = None) -> list[Memory]:
        q = "SELECT id, owner, text, created_at, updated_at, source_turns, embedding FROM memories"
        rows = self.conn.execute(q + " WHERE owner = ? ORDER BY id" if owner is not None else q + " ORDER BY id",
                                 (owner,) if owner is not None else ()).fetchall()
        return [self._row(r) for r in rows]

    def count(self, owner: str | None = None) -> int:
        if owner is None:
            return self.conn.execute("SELECT COUNT(*) FROM memories").fetchone()[0]
        return self.conn.execute("SELECT COUNT(*) FROM memories WHERE owner = ?", (owner,)).fetchone()[0]

    def history(self, memory_id: int | None = None) -> list[dict[str, Any]]:
        q = "SELECT seq, memory_id, owner, event, old_text, new_text, source_turns, at, batch FROM history"
        rows = self.conn.execute(q + " WHERE memory_id = ? ORDER BY seq" if memory_id is not None else q + " ORDER BY seq",
                                 (memory_id,) if memory_id is not None else ()).fetchall()
        keys = ("seq", "memory_id", "owner", "event", "old_text", "new_text", "source_turns", "at", "batch")
        return [dict(zip(keys, r), source_turns=json.loads(r[6])) for r in rows]

    # ------------------------------------------------------------------------------------------------ retrieval
    def search(self, query_embedding: np.ndarray, k: int, owner: str | None = None) -> list[tuple[Memory, float]]:
        """The k memories most similar to the query (cosine), best first."""
        q = "SELECT id, owner, text, created_at, updated_at, source_turns, embedding FROM memories"
        rows = self.conn.execute(q + " WHERE owner = ?" if owner is not None else q,
                                 (owner,) if owner is not None else ()).fetchall()
        if not rows or k <= 0:
            return []
        mat = np.stack([np.frombuffer(r[6], dtype=np.float32) for r in rows])
        if mat.shape[1] != np.asarray(query_embedding).size:
            raise StoreError(f"query has {np.asarray(query_embedding).size} dims, stored embeddings {mat.shape[1]}")
        norms = np.linalg.norm(mat, axis=1)
        scores = mat @ _norm(query_embedding) / np.where(norms > 0, norms, 1.0)
        order = np.argsort(-scores, kind="stable")[:k]
        return [(self._row(rows[i]), float(scores[i])) for i in order]

    # ------------------------------------------------------------------------------------------------ writes
    def apply_update(self, events: Iterable[dict[str, Any]], id_map: dict[str, int], *, owner: str | None,
                     source_turns: Sequence[str] = (), embed_fn: Callable[[list[str]], np.ndarray],
                     now: str | None = None, batch: str | None = None) -> ApplyResult:
        """Apply parsed update events (runtimes.memory.parse.parse_update) in one transaction.

        `id_map` maps the temporary ids shown to the model to row ids (from `format_memories`). ADD ignores the id
        the model gave (new rows get new ids); UPDATE / DELETE / NONE must name a shown id."""
        events = list(events)
        now = now or _now()
        turns = list(source_turns)
        texts = sorted({e["text"] for e in events if e["event"] in ("ADD", "UPDATE") and e.get("text")})
        vectors: dict[str, bytes] = {}
        if texts:
            emb = np.asarray(embed_fn(texts), dtype=np.float32)
            if emb.ndim != 2 or emb.shape[0] != len(texts):
                raise ValueError(f"embed_fn returned shape {emb.shape} for {len(texts)} texts")
            self._check_dim(emb.shape[1])
            vectors = {t: _norm(v).tobytes() for t, v in zip(texts, emb)}
        res = ApplyResult()
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            for e in events:
                self._apply_one(cur, e, id_map, owner, turns, vectors, now, batch, res)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        for s in res.skipped:
            log.info("update skipped: %s", s)
        return res

    def _apply_one(self, cur: sqlite3.Cursor, e: dict[str, Any], id_map: dict[str, int], owner: str | None,
                   turns: list[str], vectors: dict[str, bytes], now: str, batch: str | None, res: ApplyResult) -> None:
        ev, text = e["event"], e.get("text", "")

        def skip(reason: str) -> None:
            res.skipped.append({"event": dict(e), "reason": reason})

        if ev == "ADD":
            dup = cur.execute("SELECT id FROM memories WHERE text = ? AND owner IS ?", (text, owner)).fetchone()
            if dup:
                return skip(f"ADD of a text already stored (memory {dup[0]})")
            cur.execute("INSERT INTO memories (owner, text, created_at, updated_at, source_turns, embedding) "
                        "VALUES (?, ?, ?, ?, ?, ?)", (owner, text, now, now, json.dumps(turns), vectors[text]))
            mid = cur.lastrowid
            cur.execute("INSERT INTO history (memory_id, owner, event, old_text, new_text, source_turns, at, batch) "
                        "VALUES (?, ?, 'ADD', NULL, ?, ?, ?, ?)", (mid, owner, text, json.dumps(turns), now, batch))
            res.added.append(mid)
            return None
        real = id_map.get(str(e.get("id")))
        if ev == "NONE":
            res.unchanged += 1
            return None
        if real is None:
            return skip(f"{ev} of unknown id {e.get('id')!r} (shown ids: {sorted(id_map)})")
        row = cur.execute("SELECT text, source_turns FROM memories WHERE id = ?", (real,)).fetchone()
        if row is None:
            return skip(f"{ev} of memory {real}, which is not stored (already deleted?)")
        old_text, old_turns = row[0], json.loads(row[1])
        if ev == "UPDATE":
            if text == old_text:
                res.unchanged += 1
                return None
            merged = old_turns + [t for t in turns if t not in old_turns]
            cur.execute("UPDATE memories SET text = ?, updated_at = ?, source_turns = ?, embedding = ? WHERE id = ?",
                        (text, now, json.dumps(merged), vectors[text], real))
            cur.execute("INSERT INTO history (memory_id, owner, event, old_text, new_text, source_turns, at, batch) "
                        "VALUES (?, ?, 'UPDATE', ?, ?, ?, ?, ?)", (real, owner, old_text, text, json.dumps(turns), now, batch))
            res.updated.append(real)
        elif ev == "DELETE":
            cur.execute("DELETE FROM memories WHERE id = ?", (real,))
            cur.execute("INSERT INTO history (memory_id, owner, event, old_text, new_text, source_turns, at, batch) "
                        "VALUES (?, ?, 'DELETE', ?, NULL, ?, ?, ?)", (real, owner, old_text, json.dumps(turns), now, batch))
            res.deleted.append(real)
        return None

    def add(self, texts: Sequence[str], *, owner: str | None, embed_fn: Callable[[list[str]], np.ndarray],
            source_turns: Sequence[str] = (), now: str | None = None) -> ApplyResult:
        """Add memories directly (one transaction), e.g. to seed a store."""
        return self.apply_update([{"id": "", "text": t, "event": "ADD", "old_memory": None} for t in texts], {},
                                 owner=owner, source_turns=source_turns, embed_fn=embed_fn, now=now, batch="direct")

    def delete(self, memory_id: int, *, now: str | None = None) -> bool:
        """A user's deletion: one transaction, recorded in the history. False when there is no such memory."""
        m = self.get(memory_id)
        if m is None:
            return False
        res = self.apply_update([{"id": "u", "text": "", "event": "DELETE", "old_memory": None}], {"u": memory_id},
                                owner=m.owner, embed_fn=lambda t: np.zeros((len(t), 1)), now=now, batch="user")
        return bool(res.deleted)
