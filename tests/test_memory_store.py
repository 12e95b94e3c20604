"""MemoryStore: one transaction per update (a SIGKILLed writer leaves nothing half-applied), id mapping, skipped
events, append-only history, cosine retrieval; a file that is not a memory store is refused and left untouched."""

import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from runtimes.memory.prompts import format_memories
from runtimes.memory.store import APPLICATION_ID, SCHEMA_VERSION, MemoryStore, StoreError

ROOT = Path(__file__).resolve().parents[1]


def embed(texts):
    """Deterministic unit vectors per text (a hash-seeded direction): test data for the store's own maths."""
    out = []
    for t in texts:
        v = np.random.default_rng(abs(hash(t)) % 2**32).standard_normal(16).astype(np.float32)
        out.append(v / np.linalg.norm(v))
    return np.stack(out)


def snapshot(path):
    con = sqlite3.connect(path)
    try:
        return (con.execute("SELECT id, owner, text, updated_at, source_turns FROM memories ORDER BY id").fetchall(),
                con.execute("SELECT * FROM history ORDER BY seq").fetchall(),
                con.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        con.close()


@pytest.fixture
def store(tmp_path):
    s = MemoryStore(tmp_path / "m.sqlite")
    s.add(["Caroline lives in Boston", "Melanie has two kids", "Caroline likes hiking"], owner="u", embed_fn=embed,
          source_turns=["D1:1"], now="2023-05-08T13:56:00")
    yield s
    s.close()


def test_wal_and_schema(store):
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.count("u") == 3 and store.dim == 16


def test_update_maps_temporary_ids_and_logs_history(store):
    mems = store.all("u")
    text, id_map = format_memories(mems, with_dates=False)
    assert text.splitlines()[0] == "0: Caroline lives in Boston" and id_map == {str(i): m.id for i, m in enumerate(mems)}
    res = store.apply_update([
        {"id": "0", "text": "Caroline moved to Denver", "event": "UPDATE", "old_memory": "Caroline lives in Boston"},
        {"id": "1", "text": "", "event": "DELETE", "old_memory": None},
        {"id": "2", "text": "Caroline likes hiking", "event": "NONE", "old_memory": None},
        {"id": "7", "text": "Melanie paints sunrises", "event": "ADD", "old_memory": None},
    ], id_map, owner="u", source_turns=["D2:4"], embed_fn=embed, now="2023-06-01T10:00:00")
    assert res.updated == [mems[0].id] and res.deleted == [mems[1].id] and res.unchanged == 1 and len(res.added) == 1
    assert res.skipped == []
    now = {m.id: m for m in store.all("u")}
    assert now[mems[0].id].text == "Caroline moved to Denver" and now[mems[0].id].source_turns == ["D1:1", "D2:4"]
    assert now[mems[0].id].created_at == "2023-05-08T13:56:00" and now[mems[0].id].updated_at == "2023-06-01T10:00:00"
    assert mems[1].id not in now
    # The updated row's embedding is the new text's.
    assert np.allclose(store.get(mems[0].id).embedding, embed(["Caroline moved to Denver"])[0])
    events = [(h["memory_id"], h["event"], h["old_text"], h["new_text"]) for h in store.history()]
    assert events[3:] == [(mems[0].id, "UPDATE", "Caroline lives in Boston", "Caroline moved to Denver"),
                          (mems[1].id, "DELETE", "Melanie has two kids", None),
                          (res.added[0], "ADD", None, "Melanie paints sunrises")]


def test_impossible_events_change_nothing(store, tmp_path):
    before = snapshot(tmp_path / "m.sqlite")
    _, id_map = format_memories(store.all("u"), with_dates=False)
    res = store.apply_update([
        {"id": "9", "text": "x", "event": "UPDATE", "old_memory": None},     # unknown temporary id
        {"id": "5", "text": "", "event": "DELETE", "old_memory": None},      # DELETE of nothing shown
        {"id": "0", "text": "", "event": "DELETE", "old_memory": None},      # fine ...
        {"id": "0", "text": "again", "event": "UPDATE", "old_memory": None},  # ... then UPDATE of what is gone
        {"id": "0", "text": "Caroline likes hiking", "event": "ADD", "old_memory": None},  # already stored
    ], id_map, owner="u", embed_fn=embed)
    assert len(res.deleted) == 1 and res.added == [] and res.updated == []
    reasons = [s["reason"] for s in res.skipped]
    assert len(reasons) == 4
    assert "unknown id '9'" in reasons[0] and "unknown id '5'" in reasons[1]
    assert "not stored" in reasons[2] and "already stored" in reasons[3]
    after = snapshot(tmp_path / "m.sqlite")
    assert len(after[0]) == len(before[0]) - 1 and len(after[1]) == len(before[1]) + 1


def test_error_mid_transaction_rolls_back(store, tmp_path, monkeypatch):
    before = snapshot(tmp_path / "m.sqlite")
    real = MemoryStore._apply_one
    calls = []

    def failing(self, cur, e, *a):
        calls.append(e)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return real(self, cur, e, *a)

    monkeypatch.setattr(MemoryStore, "_apply_one", failing)
    _, id_map = format_memories(store.all("u"), with_dates=False)
    with pytest.raises(RuntimeError, match="boom"):
        store.apply_update([{"id": "", "text": f"new {i}", "event": "ADD", "old_memory": None} for i in range(2)]
                           + [{"id": "0", "text": "", "event": "DELETE", "old_memory": None}], id_map, owner="u",
                           embed_fn=embed)
    assert snapshot(tmp_path / "m.sqlite") == before


def test_history_is_append_only(store):
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.conn.execute("UPDATE history SET new_text = 'x'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.conn.execute("DELETE FROM history")


CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from tests.test_memory_store import embed
    from runtimes.memory.prompts import format_memories
    from runtimes.memory.store import MemoryStore
    s = MemoryStore({path!r})
    s.conn.execute("PRAGMA cache_size=2")  # tiny page cache: uncommitted pages spill into the WAL file
    _, id_map = format_memories(s.all("u"), with_dates=False)
    seen = []
    def trace(sql):
        seen.append(sql)
        if len(seen) == 120:  # well inside the transaction: BEGIN + ~119 INSERT/UPDATE/DELETE statements
            print("IN-TRANSACTION", flush=True)
            time.sleep(60)
    s.conn.set_trace_callback(trace)
    events = [{{"id": "0", "text": "Caroline moved to Denver", "event": "UPDATE", "old_memory": None}},
              {{"id": "1", "text": "", "event": "DELETE", "old_memory": None}}]
    events += [{{"id": "", "text": f"fact {{i}} " + "x" * 2000, "event": "ADD", "old_memory": None}} for i in range(100)]
    s.apply_update(events, id_map, owner="u", embed_fn=embed)
    print("COMMITTED", flush=True)
""")


def test_sigkill_mid_update_half_applies_nothing(store, tmp_path):
    path = str(tmp_path / "m.sqlite")
    before = snapshot(path)
    wal = Path(path + "-wal")
    wal_before = wal.stat().st_size if wal.exists() else 0
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(root=str(ROOT), path=path)], stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert child.stdout.readline().strip() == "IN-TRANSACTION"
        # The child holds the write lock with part of the batch written to the WAL file, uncommitted.
        assert wal.stat().st_size > wal_before + 50_000
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    after = snapshot(path)
    assert after == before and after[2] == "ok"
    # The store is usable afterwards: the same batch applies in full.
    with MemoryStore(path) as s:
        _, id_map = format_memories(s.all("u"), with_dates=False)
        res = s.apply_update([{"id": "0", "text": "Caroline moved to Denver", "event": "UPDATE", "old_memory": None},
                              {"id": "1", "text": "", "event": "DELETE", "old_memory": None}]
                             + [{"id": "", "text": f"fact {i} " + "x" * 2000, "event": "ADD", "old_memory": None}
                                for i in range(100)],
                             id_map, owner="u", embed_fn=embed)
        assert len(res.added) == 100 and s.count("u") == 3 - 1 + 100


def test_search_ranks_by_cosine_and_filters_owner(tmp_path):
    vecs = {"a": [1, 0, 0], "b": [0.8, 0.6, 0], "c": [0, 0, 1], "d": [0.9, 0.1, 0]}
    fn = lambda texts: np.array([vecs[t] for t in texts], dtype=np.float32)  # noqa: E731
    with MemoryStore(tmp_path / "s.sqlite") as s:
        s.add(["a", "b", "c"], owner="u", embed_fn=fn)
        s.add(["d"], owner="other", embed_fn=fn)
        hits = s.search(np.array([1, 0.1, 0]), k=2, owner="u")
        assert [m.text for m, _ in hits] == ["a", "b"]
        assert hits[0][1] == pytest.approx(1 / np.linalg.norm([1, 0.1, 0]), rel=1e-5)
        assert [m.text for m, _ in s.search(np.array([1, 0.1, 0]), k=1)] == ["d"]
        with pytest.raises(StoreError, match="dims"):
            s.search(np.ones(4), k=1)
        assert s.delete(hits[0][0].id) and not s.delete(hits[0][0].id)
        assert s.history(hits[0][0].id)[-1]["event"] == "DELETE"


def test_turns_are_kept_once_and_ranked_by_cosine(tmp_path):
    vecs = {"A: hi": [1, 0, 0], "B: pizza is pepperoni": [0, 1, 0], "A: bye": [0.6, 0.8, 0], "C: other": [0, 0.9, 0.1]}
    fn = lambda texts: np.array([vecs[t] for t in texts], dtype=np.float32)  # noqa: E731
    texts = ["A: hi", "B: pizza is pepperoni", "A: bye"]
    with MemoryStore(tmp_path / "t.sqlite") as s:
        ids = s.add_turns(texts, fn(texts), owner="u", turn_ids=["D1:1", "D1:2", None], said_at="2023-05-08T13:56:00")
        # The same turn again (a window added twice) is not kept twice; a turn without an id cannot be told apart.
        again = s.add_turns(texts, fn(texts), owner="u", turn_ids=["D1:1", "D1:2", None], said_at="2023-05-09T10:00:00")
        assert again[:2] == ids[:2] and again[2] != ids[2] and s.turn_count("u") == 4
        s.add_turns(["C: other"], fn(["C: other"]), owner="v", turn_ids=["D1:2"])
        hits = s.search_turns(np.array([0, 1, 0]), k=2, owner="u")
        assert [(t.text, t.turn_id, t.said_at) for t, _ in hits] == [("B: pizza is pepperoni", "D1:2", "2023-05-08T13:56:00"),
                                                                   ("A: bye", None, "2023-05-08T13:56:00")]
        assert hits[0][1] == pytest.approx(1.0) and hits[1][1] == pytest.approx(0.8)
        assert [t.owner for t, _ in s.search_turns(np.array([0, 1, 0]), k=1)] == ["u"]  # all owners: best first
        # Hybrid: BM25 over the words lifts the turn that names the rare word above one closer by cosine alone.
        assert [t.text for t, _ in s.search_turns(np.array([1, 0, 0]), k=3, owner="u")] == ["A: hi", "A: bye", "A: bye"]
        hits = s.search_turns(np.array([1, 0, 0]), k=2, owner="u", query_text="Which PIZZA?")
        assert [t.text for t, _ in hits] == ["A: hi", "B: pizza is pepperoni"]
        assert hits[0][1] == pytest.approx(1 / 61 + 1 / 62) and hits[1][1] == pytest.approx(1 / 64 + 1 / 61)
        assert s.turn_count() == 5 and s.count("u") == 0  # turns are not memories
        # Deleting a memory deletes the kept turns it came from (its source turns), and only those.
        r = s.add(["B likes pepperoni pizza"], owner="u", embed_fn=lambda t: np.array([[0, 1, 0]] * len(t)),
                  source_turns=["D1:2"])
        assert s.delete(r.added[0]) and s.turn_count("u") == 3 and s.turn_count("v") == 1
        assert [t.text for t, _ in s.search_turns(np.array([0, 1, 0]), k=1, owner="u")] == ["A: bye"]
        with pytest.raises(ValueError, match="2 embeddings"):
            s.add_turns(texts, fn(texts[:2]), owner="u")
        with pytest.raises(StoreError, match="dims"):
            s.add_turns(["A: hi"], np.ones((1, 4)), owner="u")


# ---------------------------------------------------------------------------------------------------- opening files
def _sqlite(path, *statements, wal=False):
    con = sqlite3.connect(path)
    if wal:
        con.execute("PRAGMA journal_mode=WAL")
    for q in statements:
        con.execute(q)
    con.commit()
    con.close()
    return path


def _legacy(path):
    """A store as memlora wrote them before the application id: no stamp, no memories_text index."""
    with MemoryStore(path) as s:
        s.add(["Caroline lives in Boston"], owner="u", embed_fn=embed, now="2023-05-08T13:56:00")
    return _sqlite(path, "PRAGMA application_id = 0", "PRAGMA user_version = 0", "DROP INDEX memories_text")


def _bytes(path, data):
    path.write_bytes(data)
    return path


FOREIGN = {
    "text file": lambda p: _bytes(p, b"Caroline lives in Boston\n"),
    "binary junk": lambda p: _bytes(p, bytes(range(256)) * 8),
    "truncated SQLite header": lambda p: _bytes(p, b"SQLite format 3\x00\x10\x00"),
    "SQLite of another app": lambda p: _sqlite(p, "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)",
                                               "INSERT INTO notes (body) VALUES ('keep me')"),
    "SQLite of another app, WAL": lambda p: _sqlite(p, "CREATE TABLE notes (body TEXT)",
                                                    "INSERT INTO notes VALUES ('x')", wal=True),
    "another application_id": lambda p: _sqlite(p, "PRAGMA application_id = 1179011410",
                                                "CREATE TABLE memories (id INTEGER PRIMARY KEY, text TEXT)"),
    "SQLite without tables": lambda p: _sqlite(p, "PRAGMA page_size = 4096", "VACUUM"),
    "same table names, other columns": lambda p: _sqlite(
        p, "CREATE TABLE memories (id INTEGER PRIMARY KEY, text TEXT)", "CREATE TABLE history (seq INTEGER)",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "INSERT INTO meta VALUES ('schema_version', '1')"),
}


@pytest.mark.parametrize("kind", list(FOREIGN))
def test_a_file_that_is_not_a_store_is_refused_and_left_untouched(tmp_path, kind):
    path = FOREIGN[kind](tmp_path / "other.db")
    before, listing = path.read_bytes(), sorted(os.listdir(tmp_path))
    with pytest.raises(StoreError, match=f"^{re.escape(str(path))}: not a memlora memory store"):
        MemoryStore(path)
    # Byte-identical (so not switched to WAL, no tables, no stamp) and no -wal / -shm / -journal left next to it.
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == listing


def test_new_store_is_stamped_and_reopens(tmp_path):
    path = tmp_path / "m.sqlite"
    MemoryStore(path).close()
    header = path.read_bytes()[:100]
    assert header[68:72] == b"MemL" and int.from_bytes(header[60:64], "big") == SCHEMA_VERSION
    assert int.from_bytes(header[68:72], "big") == APPLICATION_ID
    with MemoryStore(path) as s:
        assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal" and s.count() == 0
    path.write_bytes(b"")  # an empty file is a new store too
    MemoryStore(path).close()
    assert path.read_bytes()[68:72] == b"MemL"


def test_store_from_before_the_stamp_opens_and_is_stamped(tmp_path):
    path = _legacy(tmp_path / "old.sqlite")
    with MemoryStore(path) as s:
        assert [m.text for m in s.all("u")] == ["Caroline lives in Boston"] and s.dim == 16
        assert s.conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert s.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        plan = s.conn.execute("EXPLAIN QUERY PLAN SELECT id FROM memories WHERE text = ? AND owner IS ?", ("x", "u"))
        assert "USING INDEX memories_text" in " ".join(r[-1] for r in plan)


def test_other_schema_versions_are_refused_untouched(tmp_path):
    stamped = tmp_path / "v2.sqlite"
    MemoryStore(stamped).close()
    _sqlite(stamped, "PRAGMA user_version = 2")
    legacy = _legacy(tmp_path / "old.sqlite")
    _sqlite(legacy, "UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    for path, version in ((stamped, 2), (legacy, 0)):
        before = path.read_bytes()
        with pytest.raises(StoreError, match=f"^{re.escape(str(path))}: memory store schema {version} "):
            MemoryStore(path)
        assert path.read_bytes() == before


def test_sqlite_and_os_failures_are_store_errors_naming_the_file(tmp_path):
    with pytest.raises(StoreError, match=f"^{re.escape(str(tmp_path))}: cannot read the file"):
        MemoryStore(tmp_path)  # a directory
    missing_dir = tmp_path / "no" / "such" / "m.sqlite"
    with pytest.raises(StoreError, match=f"^{re.escape(str(missing_dir))}: unable to open"):
        MemoryStore(missing_dir)
    path = tmp_path / "m.sqlite"
    with MemoryStore(path) as a, MemoryStore(path, timeout=0.05) as b:
        a.add(["x"], owner="u", embed_fn=embed)
        a.conn.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        with pytest.raises(StoreError, match=f"^{re.escape(str(path))}: database is locked"):
            b.add(["y"], owner="u", embed_fn=embed)
        a.conn.execute("ROLLBACK")
        assert [m.text for m in b.all("u")] == ["x"]
        with pytest.raises(StoreError, match=f"^{re.escape(str(path))}: query has 3 dims"):
            b.search(np.ones(3), k=1)
