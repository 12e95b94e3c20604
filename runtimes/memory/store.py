"""`MemoryStore`: memories in SQLite (WAL), an append-only history of every change, cosine retrieval.

Each `apply_update` call is one transaction (`BEGIN IMMEDIATE` ... `COMMIT`): a process killed in the middle leaves
the database as it was before the call, never half-applied (SQLite's journal rolls the open transaction back when
the file is next opened). Embeddings are computed before the transaction opens, so the write lock is held only for
the SQL itself, and that SQL is linear in the number of events (indexed look-ups only, nothing rescanned per
event). Events that cannot apply (unknown temporary id, UPDATE/DELETE of a memory that is not there, an ADD of a
text already stored) change nothing and are listed in `ApplyResult.skipped`.

Opening: a missing or empty file becomes a new store (stamped with `APPLICATION_ID` and `user_version` =
`SCHEMA_VERSION` in the SQLite header); a memlora store opens; a memlora store from before the stamp (application
id 0, the memlora tables and columns) opens and is stamped; anything else (not SQLite, another application id,
other tables) raises `StoreError` and the file is left byte-identical: it is inspected from its header bytes and a
read-only connection before anything writes to it (switching to WAL mode rewrites the header). Every SQLite or OS
failure surfaces as `StoreError` naming the file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

log = logging.getLogger("memlora.memory")
SCHEMA_VERSION = 1
APPLICATION_ID = int.from_bytes(b"MemL", "big")  # 0x4d656d4c, SQLite header bytes 68-71 (`PRAGMA application_id`)
SQLITE_MAGIC = b"SQLite format 3\x00"

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
CREATE INDEX IF NOT EXISTS memories_text ON memories(text);
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
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    owner TEXT,
    turn_id TEXT,
    shared_at TEXT NOT NULL,
    context TEXT NOT NULL,
    png BLOB NOT NULL,
    embedding BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS images_owner ON images(owner);
CREATE TABLE IF NOT EXISTS turns (
    id INTEGER PRIMARY KEY,
    owner TEXT,
    turn_id TEXT,
    said_at TEXT NOT NULL,
    text TEXT NOT NULL,
    embedding BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS turns_owner ON turns(owner);
"""


SCHEMA_STATEMENTS = [q.strip() for q in SCHEMA.split(";\n") if q.strip()]
MEMORY_COLUMNS = ["id", "owner", "text", "created_at", "updated_at", "source_turns", "embedding"]
HISTORY_COLUMNS = ["seq", "memory_id", "owner", "event", "old_text", "new_text", "source_turns", "at", "batch"]


class StoreError(Exception):
    """The store file cannot be used (not a memory store, other schema version, other embedding size) or SQLite
    failed on it; the message starts with the file's path."""


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
class StoredImage:
    """An image shared in a conversation (MemLoRA-V): its pixels as PNG bytes, kept inside the store file itself
    (nothing outside the store is ever named or opened), the turn and date it was shared at, and `context`, the text
    it was shared with, by which it is retrieved."""

    id: int
    owner: str | None
    turn_id: str | None
    shared_at: str
    context: str
    png: bytes

    def image(self) -> Any:
        """The pixels as an RGB PIL image."""
        import io

        from PIL import Image

        with Image.open(io.BytesIO(self.png)) as im:
            return im.convert("RGB")


@dataclass
class StoredTurn:
    """A conversation turn as it was said ("Speaker: text"), kept beside the memories so that the answer step can
    show the dialogue itself next to the facts distilled from it (`PipelineConfig.answer_turns`)."""

    id: int
    owner: str | None
    turn_id: str | None
    said_at: str
    text: str


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


def _read_header(path: str) -> bytes | None:
    """The first 100 bytes of the file (SQLite's database header); None when the file is missing or empty."""
    try:
        with open(path, "rb") as f:
            header = f.read(100)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StoreError(f"{path}: cannot read the file ({e.strerror or e})") from e
    return header or None


def _check_header(path: str, header: bytes) -> None:
    """Refuse, from the raw header alone, a file that is not SQLite or that another application stamped."""
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        raise StoreError(f"{path}: not a memlora memory store (not an SQLite database file)")
    app_id = int.from_bytes(header[68:72], "big")
    if app_id not in (0, APPLICATION_ID):
        raise StoreError(f"{path}: not a memlora memory store (SQLite application_id 0x{app_id:08x}, a memlora "
                         f"store has 0x{APPLICATION_ID:08x})")


def _readonly_uri(path: str) -> str:
    """A read-only SQLite URI for the file. `immutable=1` (no locks, no -shm / -wal side files created) unless a
    -wal or -journal file is there, whose content a reader has to see."""
    hot = any(os.path.exists(path + side) for side in ("-wal", "-journal"))
    return Path(path).absolute().as_uri() + ("?mode=ro" if hot else "?mode=ro&immutable=1")


def _inspect(conn: sqlite3.Connection, path: str, *, empty_ok: bool) -> str:
    """What the open database is, by read-only queries: "memlora" (stamped), "legacy" (a memlora store from before
    the stamp: application id 0 and the memlora tables) or, with `empty_ok`, "empty" (nothing in it: the file was
    missing or empty). Anything else: StoreError."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0] & 0xFFFFFFFF
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if app_id == APPLICATION_ID:
        if version != SCHEMA_VERSION:
            raise StoreError(f"{path}: memory store schema {version} (this code reads {SCHEMA_VERSION})")
        return "memlora"
    if app_id != 0:
        raise StoreError(f"{path}: not a memlora memory store (SQLite application_id 0x{app_id:08x}, a memlora "
                         f"store has 0x{APPLICATION_ID:08x})")
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name")]
    if not names and version == 0 and empty_ok:
        return "empty"
    columns = {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] for t in ("memories", "history", "meta")}
    if (columns["memories"] == MEMORY_COLUMNS and columns["history"] == HISTORY_COLUMNS
            and columns["meta"] == ["key", "value"]):
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is not None:
            if row[0] != str(SCHEMA_VERSION):
                raise StoreError(f"{path}: memory store schema {row[0]} (this code reads {SCHEMA_VERSION})")
            return "legacy"
    shown = ", ".join(names[:5]) + (f", ... ({len(names)} in all)" if len(names) > 5 else "")
    raise StoreError(f"{path}: not a memlora memory store (an SQLite database without the memlora tables; it holds: "
                     f"{shown or 'nothing'})")


class MemoryStore:
    def __init__(self, path: str | Path, *, dim: int | None = None, timeout: float = 30.0):
        self.path = str(path)
        header = _read_header(self.path)
        if header is not None:
            # An existing file: judged before anything can write to it.
            _check_header(self.path, header)
            with self._errors():
                ro = sqlite3.connect(_readonly_uri(self.path), uri=True, timeout=timeout)
                try:
                    kind = _inspect(ro, self.path, empty_ok=False)
                finally:
                    ro.close()
        with self._errors():
            # isolation_level=None: autocommit; transactions are opened explicitly with BEGIN IMMEDIATE.
            self.conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        try:
            with self._errors():
                if header is None or kind == "legacy":
                    self._initialise(creating=header is None)
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=FULL")
                self.conn.execute("PRAGMA foreign_keys=ON")
                for q in SCHEMA_STATEMENTS:  # IF NOT EXISTS: adds what older stores lack (the memories_text index)
                    self.conn.execute(q)
                meta = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
            if meta.get("schema_version") != str(SCHEMA_VERSION):
                raise StoreError(f"{path}: memory store schema {meta.get('schema_version')} (this code reads "
                                 f"{SCHEMA_VERSION})")
            self.dim = int(meta["dim"]) if "dim" in meta else None
            if dim is not None:
                self._check_dim(dim)
        except BaseException:
            self.conn.close()
            raise

    def _initialise(self, creating: bool) -> None:
        """Create the store in an empty file, or stamp a memlora store from before the stamp: one transaction, the
        file looked at again under the write lock (another process may have created it meanwhile)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            kind = _inspect(self.conn, self.path, empty_ok=creating)
            if kind in ("empty", "legacy"):
                self.conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            if kind == "empty":
                for q in SCHEMA_STATEMENTS:
                    self.conn.execute(q)
                self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            self.conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """SQLite failures as StoreError naming the file."""
        try:
            yield
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: {e}") from e

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error as e:  # the original error is the one to report; SQLite rolls back on close anyway
                log.warning("%s: rollback failed: %s", self.path, e)

    # ------------------------------------------------------------------------------------------------ basics
    def close(self) -> None:
        with self._errors():
            self.conn.close()

    def __enter__(self) -> "MemoryStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _check_dim(self, dim: int) -> None:
        if self.dim is None:
            with self._errors():
                self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('dim', ?)", (str(dim),))
            self.dim = dim
        elif self.dim != dim:
            raise StoreError(f"{self.path}: embeddings here have {self.dim} dims, got {dim} (another embedder?)")

    @staticmethod
    def _row(r: Sequence[Any], with_embedding: bool = False) -> Memory:
        return Memory(id=r[0], owner=r[1], text=r[2], created_at=r[3], updated_at=r[4], source_turns=json.loads(r[5]),
                      embedding=np.frombuffer(r[6], dtype=np.float32) if with_embedding else None)

    def _fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._errors():
            return self.conn.execute(sql, args).fetchall()

    def get(self, memory_id: int) -> Memory | None:
        rows = self._fetch("SELECT id, owner, text, created_at, updated_at, source_turns, embedding FROM memories "
                           "WHERE id = ?", (memory_id,))
        return self._row(rows[0], True) if rows else None

    def all(self, owner: str | None = None) -> list[Memory]:
        q = "SELECT id, owner, text, created_at, updated_at, source_turns, embedding FROM memories"
        rows = self._fetch(q + " WHERE owner = ? ORDER BY id" if owner is not None else q + " ORDER BY id",
                           (owner,) if owner is not None else ())
        return [self._row(r) for r in rows]

    def count(self, owner: str | None = None) -> int:
        if owner is None:
            return self._fetch("SELECT COUNT(*) FROM memories")[0][0]
        return self._fetch("SELECT COUNT(*) FROM memories WHERE owner = ?", (owner,))[0][0]

    def history(self, memory_id: int | None = None) -> list[dict[str, Any]]:
        q = "SELECT seq, memory_id, owner, event, old_text, new_text, source_turns, at, batch FROM history"
        rows = self._fetch(q + " WHERE memory_id = ? ORDER BY seq" if memory_id is not None else q + " ORDER BY seq",
                           (memory_id,) if memory_id is not None else ())
        return [dict(zip(HISTORY_COLUMNS, r), source_turns=json.loads(r[6])) for r in rows]

    # ------------------------------------------------------------------------------------------------ retrieval
    def search(self, query_embedding: np.ndarray, k: int, owner: str | None = None) -> list[tuple[Memory, float]]:
        """The k memories most similar to the query (cosine), best first."""
        q = "SELECT id, owner, text, created_at, updated_at, source_turns, embedding FROM memories"
        rows = self._fetch(q + " WHERE owner = ?" if owner is not None else q, (owner,) if owner is not None else ())
        return [(self._row(rows[i]), s) for i, s in self._rank([r[6] for r in rows], query_embedding, k)]

    def _rank(self, blobs: Sequence[bytes], query_embedding: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(index, cosine) of the k stored embeddings (float32 blobs) most similar to the query, best first, ties in
        row order."""
        if not blobs or k <= 0:
            return []
        mat = np.stack([np.frombuffer(b, dtype=np.float32) for b in blobs])
        if mat.shape[1] != np.asarray(query_embedding).size:
            raise StoreError(f"{self.path}: query has {np.asarray(query_embedding).size} dims, stored embeddings "
                             f"{mat.shape[1]}")
        norms = np.linalg.norm(mat, axis=1)
        scores = mat @ _norm(query_embedding) / np.where(norms > 0, norms, 1.0)
        return [(int(i), float(scores[i])) for i in np.argsort(-scores, kind="stable")[:k]]

    # ------------------------------------------------------------------------------------------------ images
    def add_image(self, png: bytes, *, context: str, embedding: np.ndarray, owner: str | None,
                  turn_id: str | None = None, shared_at: str | None = None) -> int:
        """Keep a shared image (PNG bytes) with the text it was shared with and that text's embedding; its row id."""
        if not png.startswith(b"\x89PNG\r\n\x1a\n"):
            raise ValueError("add_image takes PNG bytes")
        vec = _norm(embedding)
        self._check_dim(vec.size)
        with self._errors():
            cur = self.conn.execute("INSERT INTO images (owner, turn_id, shared_at, context, png, embedding) "
                                    "VALUES (?, ?, ?, ?, ?, ?)",
                                    (owner, turn_id, shared_at or _now(), context, sqlite3.Binary(png), vec.tobytes()))
        return int(cur.lastrowid)

    def image_count(self, owner: str | None = None) -> int:
        if owner is None:
            return self._fetch("SELECT COUNT(*) FROM images")[0][0]
        return self._fetch("SELECT COUNT(*) FROM images WHERE owner = ?", (owner,))[0][0]

    def search_images(self, query_embedding: np.ndarray, k: int, owner: str | None = None
                      ) -> list[tuple[StoredImage, float]]:
        """The k images whose sharing text is most similar to the query (cosine), best first."""
        q = "SELECT id, embedding FROM images"
        rows = self._fetch(q + " WHERE owner = ?" if owner is not None else q, (owner,) if owner is not None else ())
        hits = self._rank([r[1] for r in rows], query_embedding, k)
        return [(self.get_image(rows[i][0]), s) for i, s in hits]  # type: ignore[misc]

    def get_image(self, image_id: int) -> StoredImage | None:
        rows = self._fetch("SELECT id, owner, turn_id, shared_at, context, png FROM images WHERE id = ?", (image_id,))
        return StoredImage(*rows[0][:5], png=bytes(rows[0][5])) if rows else None

    # ------------------------------------------------------------------------------------------------ turns
    def add_turns(self, texts: Sequence[str], embeddings: np.ndarray, *, owner: str | None,
                  turn_ids: Sequence[str | None] | None = None, said_at: str | None = None) -> list[int]:
        """Keep conversation turns ("Speaker: text") with their embeddings, in one transaction; their row ids. A turn
        already kept for the owner (same turn id and text) is not kept twice: its existing row id is returned."""
        ids = list(turn_ids) if turn_ids is not None else [None] * len(texts)
        if len(ids) != len(texts) or len(embeddings) != len(texts):
            raise ValueError(f"add_turns: {len(texts)} texts, {len(embeddings)} embeddings, {len(ids)} turn ids")
        vecs = [_norm(v) for v in embeddings]
        for v in vecs:
            self._check_dim(v.size)
        at = said_at or _now()
        out = []
        with self._errors():
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                for text, tid, vec in zip(texts, ids, vecs):
                    old = self.conn.execute("SELECT id FROM turns WHERE owner IS ? AND turn_id IS ? AND text = ?",
                                            (owner, tid, text)).fetchone() if tid is not None else None
                    if old:
                        out.append(int(old[0]))
                        continue
                    cur = self.conn.execute("INSERT INTO turns (owner, turn_id, said_at, text, embedding) "
                                            "VALUES (?, ?, ?, ?, ?)", (owner, tid, at, text, vec.tobytes()))
                    out.append(int(cur.lastrowid))
                self.conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        return out

    def turn_count(self, owner: str | None = None) -> int:
        if owner is None:
            return self._fetch("SELECT COUNT(*) FROM turns")[0][0]
        return self._fetch("SELECT COUNT(*) FROM turns WHERE owner = ?", (owner,))[0][0]

    def search_turns(self, query_embedding: np.ndarray, k: int, owner: str | None = None, *,
                     query_text: str | None = None) -> list[tuple[StoredTurn, float]]:
        """The k kept turns most similar to the query, best first: by cosine, or with `query_text` by reciprocal rank
        fusion of the cosine ranking and BM25 over the turns' words (runtimes.memory.lexical; the score is then the
        fused one)."""
        q = "SELECT id, owner, turn_id, said_at, text, embedding FROM turns"
        rows = self._fetch(q + " WHERE owner = ?" if owner is not None else q, (owner,) if owner is not None else ())
        if query_text is None:
            return [(StoredTurn(*rows[i][:5]), s) for i, s in self._rank([r[5] for r in rows], query_embedding, k)]
        from . import lexical

        cosine = np.zeros(len(rows))
        for i, s in self._rank([r[5] for r in rows], query_embedding, len(rows)):
            cosine[i] = s
        hits = lexical.fuse(cosine, lexical.bm25(query_text, [r[4] for r in rows]), k)
        return [(StoredTurn(*rows[i][:5]), s) for i, s in hits]

    # ------------------------------------------------------------------------------------------------ writes
    def apply_update(self, events: Iterable[dict[str, Any]], id_map: dict[str, int], *, owner: str | None,
                     source_turns: Sequence[str] = (), embed_fn: Callable[[list[str]], np.ndarray],
                     now: str | None = None, batch: str | None = None) -> ApplyResult:
        """Apply parsed update events (runtimes.memory.parse.parse_update) in one transaction.

        `id_map` maps the temporary ids shown to the model to row ids (from `format_memories`). ADD ignores the id
        the model gave (new rows get new ids); UPDATE / DELETE / NONE must name a shown id. The work per event is a
        few indexed statements, so the transaction's time grows linearly with the number of events."""
        events = list(events)
        now = now or _now()
        texts = sorted({e["text"] for e in events if e["event"] in ("ADD", "UPDATE") and e.get("text")})
        vectors: dict[str, bytes] = {}
        if texts:
            emb = np.asarray(embed_fn(texts), dtype=np.float32)
            if emb.ndim != 2 or emb.shape[0] != len(texts):
                raise ValueError(f"embed_fn returned shape {emb.shape} for {len(texts)} texts")
            self._check_dim(emb.shape[1])
            vectors = {t: _norm(v).tobytes() for t, v in zip(texts, emb)}
        ctx = _Apply(id_map=id_map, owner=owner, turns=list(source_turns), vectors=vectors, now=now, batch=batch)
        with self._errors():
            cur = self.conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                for e in events:
                    self._apply_one(cur, e, ctx)
                cur.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        for s in ctx.res.skipped:  # a normal outcome, returned to the caller: logged for --debug only
            log.debug("update skipped: %s", s)
        return ctx.res

    def _apply_one(self, cur: sqlite3.Cursor, e: dict[str, Any], ctx: "_Apply") -> None:
        ev, text, owner, now, batch, res = e["event"], e.get("text", ""), ctx.owner, ctx.now, ctx.batch, ctx.res

        def skip(reason: str) -> None:
            res.skipped.append({"event": dict(e), "reason": reason})

        if ev == "ADD":
            dup = cur.execute("SELECT id FROM memories WHERE text = ? AND owner IS ?", (text, owner)).fetchone()
            if dup:
                return skip(f"ADD of a text already stored (memory {dup[0]})")
            cur.execute("INSERT INTO memories (owner, text, created_at, updated_at, source_turns, embedding) "
                        "VALUES (?, ?, ?, ?, ?, ?)", (owner, text, now, now, ctx.turns_json, ctx.vectors[text]))
            mid = cur.lastrowid
            cur.execute("INSERT INTO history (memory_id, owner, event, old_text, new_text, source_turns, at, batch) "
                        "VALUES (?, ?, 'ADD', NULL, ?, ?, ?, ?)", (mid, owner, text, ctx.turns_json, now, batch))
            res.added.append(mid)
            return None
        real = ctx.id_map.get(str(e.get("id")))
        if ev == "NONE":
            res.unchanged += 1
            return None
        if real is None:
            return skip(f"{ev} of unknown id {e.get('id')!r} (shown ids: {ctx.shown_ids()})")
        row = cur.execute("SELECT text, source_turns FROM memories WHERE id = ?", (real,)).fetchone()
        if row is None:
            return skip(f"{ev} of memory {real}, which is not stored (already deleted?)")
        old_text, old_turns = row[0], json.loads(row[1])
        if ev == "UPDATE":
            if text == old_text:
                res.unchanged += 1
                return None
            seen = set(old_turns)
            merged = old_turns + [t for t in ctx.turns if t not in seen]
            cur.execute("UPDATE memories SET text = ?, updated_at = ?, source_turns = ?, embedding = ? WHERE id = ?",
                        (text, now, json.dumps(merged), ctx.vectors[text], real))
            cur.execute("INSERT INTO history (memory_id, owner, event, old_text, new_text, source_turns, at, batch) "
                        "VALUES (?, ?, 'UPDATE', ?, ?, ?, ?, ?)",
                        (real, owner, old_text, text, ctx.turns_json, now, batch))
            res.updated.append(real)
        elif ev == "DELETE":
            cur.execute("DELETE FROM memories WHERE id = ?", (real,))
            cur.execute("INSERT INTO history (memory_id, owner, event, old_text, new_text, source_turns, at, batch) "
                        "VALUES (?, ?, 'DELETE', ?, NULL, ?, ?, ?)",
                        (real, owner, old_text, ctx.turns_json, now, batch))
            res.deleted.append(real)
        return None

    def add(self, texts: Sequence[str], *, owner: str | None, embed_fn: Callable[[list[str]], np.ndarray],
            source_turns: Sequence[str] = (), now: str | None = None) -> ApplyResult:
        """Add memories directly (one transaction), e.g. to seed a store."""
        return self.apply_update([{"id": "", "text": t, "event": "ADD", "old_memory": None} for t in texts], {},
                                 owner=owner, source_turns=source_turns, embed_fn=embed_fn, now=now, batch="direct")

    def delete(self, memory_id: int, *, now: str | None = None) -> bool:
        """A user's deletion: one transaction, recorded in the history. False when there is no such memory. The kept
        turns the memory came from (its `source_turns`) are deleted first: what a user deletes is not shown again from
        the dialogue it was distilled from."""
        m = self.get(memory_id)
        if m is None:
            return False
        if m.source_turns:
            with self._errors():
                self.conn.execute(f"DELETE FROM turns WHERE owner IS ? AND turn_id IN ({','.join('?' * len(m.source_turns))})",
                                  (m.owner, *m.source_turns))
        res = self.apply_update([{"id": "u", "text": "", "event": "DELETE", "old_memory": None}], {"u": memory_id},
                                owner=m.owner, embed_fn=lambda t: np.zeros((len(t), 1)), now=now, batch="user")
        return bool(res.deleted)


@dataclass
class _Apply:
    """What every event of one `apply_update` shares, computed once (not per event)."""

    id_map: dict[str, int]
    owner: str | None
    turns: list[str]
    vectors: dict[str, bytes]
    now: str
    batch: str | None
    res: ApplyResult = field(default_factory=ApplyResult)
    turns_json: str = field(init=False)
    _shown: list[str] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.turns_json = json.dumps(self.turns)

    def shown_ids(self) -> list[str]:
        if self._shown is None:
            self._shown = sorted(self.id_map)
        return self._shown
