"""Helpers shared by the vector sections: JSON-safe values, a deterministic embedder, SQLite dumps."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any, Callable

import numpy as np


# ---------------------------------------------------------------------------------------------------- helpers
def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return {"$float": repr(v)}
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 2**63:
        return {"$bigint": str(v)}
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def _embed_table(dim: int = 8) -> tuple[dict[str, list[float]], Callable[[list[str]], np.ndarray]]:
    """A deterministic embedder for store and pipeline cases (the store's behaviour does not depend on what the
    vectors mean); every text embedded is recorded so the JVM side replays the very same vectors."""
    table: dict[str, list[float]] = {}

    def embed(texts: list[str]) -> np.ndarray:
        out = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
            table[t] = [float(x) for x in v]
            out.append(v)
        return np.asarray(out, dtype=np.float32).reshape(len(texts), dim)

    return table, embed


def _rows(db: Path) -> dict[str, Any]:
    con = sqlite3.connect(db)
    try:
        mems = [{"id": r[0], "owner": r[1], "text": r[2], "created_at": r[3], "updated_at": r[4],
                 "source_turns": r[5], "embedding": [float(x) for x in np.frombuffer(r[6], dtype=np.float32)]}
                for r in con.execute("SELECT id, owner, text, created_at, updated_at, source_turns, embedding "
                                     "FROM memories ORDER BY id")]
        hist = [dict(zip(("seq", "memory_id", "owner", "event", "old_text", "new_text", "source_turns", "at", "batch"), r))
                for r in con.execute("SELECT seq, memory_id, owner, event, old_text, new_text, source_turns, at, batch "
                                     "FROM history ORDER BY seq")]
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        turns = [{"id": r[0], "owner": r[1], "turn_id": r[2], "said_at": r[3], "text": r[4],
                  "embedding": [float(x) for x in np.frombuffer(r[5], dtype=np.float32)]}
                 for r in con.execute("SELECT id, owner, turn_id, said_at, text, embedding FROM turns ORDER BY id")]
        return {"memories": mems, "history": hist, "meta": meta, "turns": turns}
    finally:
        con.close()


def _schema(db: Path) -> list[list[str]]:
    con = sqlite3.connect(db)
    try:
        return [list(r) for r in con.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")]
    finally:
        con.close()
