"""Store vectors: update events applied step by step, files opened as stores, cosine ranking over real
embeddings, MemoryPipeline runs with recorded model outputs replayed."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .common import _embed_table, _rows, _schema
from .prompts import TURNS


STORE_NOW = ["2023-05-08T13:56:00", "2023-06-27T10:37:00", "2023-07-01T09:00:00", "2023-07-02T09:00:00", "2023-07-03T09:00:00",
             "2023-07-04T09:00:00", "2023-07-05T09:00:00"]


def store_vectors(out: Path) -> dict[str, Any]:
    from runtimes.memory.parse import parse_update
    from runtimes.memory.prompts import format_memories
    from runtimes.memory.store import MemoryStore

    table, embed = _embed_table()
    db = out / "stores" / "steps.sqlite"
    db.parent.mkdir(parents=True, exist_ok=True)
    steps: list[dict[str, Any]] = []
    store = MemoryStore(db)

    def snap(step: dict[str, Any], result: Any) -> None:
        step["result"] = result.to_dict() if hasattr(result, "to_dict") else result
        step["after"] = _rows(db)
        steps.append(step)

    seed = ["Caroline lives in Boston", "Melanie has two kids", "Caroline likes hiking"]
    snap({"kind": "add", "texts": seed, "owner": "user", "source_turns": ["D1:1", "D1:2"], "now": STORE_NOW[0]},
         store.add(seed, owner="user", embed_fn=embed, source_turns=["D1:1", "D1:2"], now=STORE_NOW[0]))
    shown = store.all("user")
    _, id_map = format_memories(shown, with_dates=False)
    raw = ('{"memory": [{"id": "0", "text": "Caroline moved to Denver", "event": "UPDATE", "old_memory": "Caroline lives in Boston"}, '
           '{"id": "1", "text": "Melanie has two kids", "event": "NONE"}, {"id": "9", "text": "Melanie paints sunrises", "event": "ADD"}, '
           '{"id": "2", "text": "", "event": "DELETE"}]}')
    events = parse_update(raw)
    snap({"kind": "update", "raw": raw, "events": events, "id_map": id_map, "owner": "user", "source_turns": ["D2:5"],
          "now": STORE_NOW[1], "batch": "b1"},
         store.apply_update(events, id_map, owner="user", source_turns=["D2:5"], embed_fn=embed, now=STORE_NOW[1], batch="b1"))
    # Events that cannot apply: unknown id, DELETE of a deleted memory, ADD of a stored text, UPDATE to the same text.
    events = [{"id": "7", "text": "x", "event": "UPDATE", "old_memory": None},
              {"id": "2", "text": "", "event": "DELETE", "old_memory": None},
              {"id": "5", "text": "Melanie paints sunrises", "event": "ADD", "old_memory": None},
              {"id": "0", "text": "Caroline moved to Denver", "event": "UPDATE", "old_memory": None},
              {"id": "1", "text": "", "event": "NONE", "old_memory": None},
              {"id": "1", "text": "Melanie has two kids, Ana and Ben", "event": "UPDATE", "old_memory": "Melanie has two kids"}]
    snap({"kind": "update", "events": events, "id_map": id_map, "owner": "user", "source_turns": ["D3:1", "D2:5"],
          "now": STORE_NOW[2], "batch": "b2"},
         store.apply_update(events, id_map, owner="user", source_turns=["D3:1", "D2:5"], embed_fn=embed, now=STORE_NOW[2], batch="b2"))
    snap({"kind": "delete", "memory_id": id_map["0"], "now": STORE_NOW[3]}, store.delete(id_map["0"], now=STORE_NOW[3]))
    snap({"kind": "delete", "memory_id": 999, "now": STORE_NOW[4]}, store.delete(999, now=STORE_NOW[4]))
    snap({"kind": "add", "texts": ["A shared fact", "Melanie has two kids"], "owner": None, "source_turns": [], "now": STORE_NOW[5]},
         store.add(["A shared fact", "Melanie has two kids"], owner=None, embed_fn=embed, now=STORE_NOW[5]))
    snap({"kind": "add", "texts": ["Other owner’s naïve fact 😀", "Melanie has two kids"], "owner": "bob", "source_turns": ["x"],
          "now": STORE_NOW[6]},
         store.add(["Other owner’s naïve fact 😀", "Melanie has two kids"], owner="bob", embed_fn=embed, source_turns=["x"],
                   now=STORE_NOW[6]))
    counts = {"all": store.count(), "user": store.count("user"), "bob": store.count("bob")}
    history_1 = store.history(id_map["1"])
    store.close()
    return {"steps": steps, "embeddings": table, "schema": _schema(db), "counts": counts,
            "history_of": {"memory_id": id_map["1"], "rows": history_1}, "db": "stores/steps.sqlite",
            "open": open_vectors(out, db)}


def open_vectors(out: Path, store_db: Path) -> list[dict[str, Any]]:
    """Files opened as a store (each on a copy, the original kept under stores/open/ for the JVM side): Python's
    StoreError message with the path as <db>, or what opening made of the file (stamp, rows)."""
    from runtimes.memory.store import MemoryStore, StoreError

    d = out / "stores" / "open"
    d.mkdir(parents=True, exist_ok=True)

    def sql(name: str, *statements: str, wal: bool = False, base: Path | None = None) -> Path:
        path = d / name
        if base is not None:
            shutil.copyfile(base, path)
        con = sqlite3.connect(path)
        if wal:
            con.execute("PRAGMA journal_mode=WAL")
        for q in statements:
            con.execute(q)
        con.commit()
        if wal:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        return path

    def raw(name: str, data: bytes) -> Path:
        (d / name).write_bytes(data)
        return d / name

    files = [
        raw("text.txt", "Caroline lives in Boston\n".encode()), raw("junk.bin", bytes(range(256)) * 4),
        raw("short-header.db", b"SQLite format 3\x00\x10\x00"), raw("empty.db", b""),
        sql("notes.db", "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)", "INSERT INTO notes (body) VALUES ('x')"),
        sql("notes-wal.db", "CREATE TABLE notes (body TEXT)", wal=True),
        sql("many-tables.db", *[f"CREATE TABLE t{i} (x)" for i in range(7)]),
        sql("other-app.db", "PRAGMA application_id = 1179011410", "CREATE TABLE memories (id INTEGER PRIMARY KEY)"),
        sql("no-tables.db", "PRAGMA page_size = 4096", "VACUUM"),
        sql("lookalike.db", "CREATE TABLE memories (id INTEGER PRIMARY KEY, text TEXT)", "CREATE TABLE history (seq INTEGER)",
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)", "INSERT INTO meta VALUES ('schema_version', '1')"),
        sql("legacy.db", "PRAGMA application_id = 0", "PRAGMA user_version = 0", "DROP INDEX memories_text", base=store_db),
        sql("legacy-v0.db", "PRAGMA application_id = 0", "PRAGMA user_version = 0",
            "UPDATE meta SET value = '0' WHERE key = 'schema_version'", base=store_db),
        sql("stamped-v2.db", "PRAGMA user_version = 2", base=store_db),
    ]
    cases = []
    for path in files:
        case: dict[str, Any] = {"db": f"stores/open/{path.name}"}
        work = out / "stores" / f"opening-{path.name}"
        shutil.copyfile(path, work)
        before = work.read_bytes()
        try:
            MemoryStore(work).close()
            con = sqlite3.connect(work)
            case["opened"] = {"application_id": con.execute("PRAGMA application_id").fetchone()[0],
                              "user_version": con.execute("PRAGMA user_version").fetchone()[0]}
            con.close()
            case["opened"].update(_rows(work))
        except StoreError as e:
            case["error"] = str(e).replace(str(work), "<db>")
            case["untouched"] = work.read_bytes() == before
        for side in ("", "-wal", "-shm", "-journal"):
            Path(str(work) + side).unlink(missing_ok=True)
        cases.append(case)
    return cases


RANK_MEMORIES = ["Caroline attended an LGBTQ support group", "Melanie paints sunrises with her kids", "Caroline moved to Denver",
                 "Melanie has two kids", "Caroline is researching adoption agencies", "Melanie ran a charity race for mental health",
                 "Caroline's favourite book is Becoming Nicole", "Melanie went camping with her family in June",
                 "Caroline wants to become a counsellor", "Melanie plays the clarinet", "Caroline likes hiking in the mountains",
                 "Melanie's son got hurt in a car accident"]
RANK_QUERIES = ["What did Caroline research?", "Where does Caroline live?", "What instrument does Melanie play?",
                "What does Melanie paint?", "When did Melanie go camping?"]


def ranking_vectors(out: Path) -> dict[str, Any]:
    from runtimes.memory.embed import TorchEmbedder
    from runtimes.memory.store import MemoryStore

    emb = TorchEmbedder()
    db = out / "stores" / "ranking.sqlite"
    db.parent.mkdir(parents=True, exist_ok=True)
    with MemoryStore(db) as store:
        store.add(RANK_MEMORIES[:8], owner="user", embed_fn=emb.embed, now="2023-05-08T13:56:00")
        store.add(RANK_MEMORIES[8:], owner="other", embed_fn=emb.embed, now="2023-05-09T13:56:00")
        cases = []
        q_emb = emb.embed(RANK_QUERIES)
        for q, v in zip(RANK_QUERIES, q_emb):
            for k, owner in ((3, "user"), (5, None), (20, "other"), (0, None)):
                hits = store.search(v, k, owner=owner)
                cases.append({"query": q, "embedding": [float(x) for x in v], "k": k, "owner": owner,
                              "ids": [m.id for m, _ in hits], "scores": [s for _, s in hits]})
    return {"embedder": emb.name, "dim": emb.dim, "db": "stores/ranking.sqlite", "cases": cases}


IMAGE_SHARES = [("D1:3", "Caroline", "Here is a photo of the sign for the garage sale.", (220, 20, 20)),
                ("D2:1", "Melanie", "Look at this picture of the kite from the beach trip!", (20, 20, 220)),
                ("D2:5", "Caroline", "I took a photo of the cake topper for the wedding, have a look.", (20, 200, 20))]
IMAGE_QUESTIONS = ["In the photo of the kite from the beach trip that Melanie shared, what color is the shape?",
                   "What shape was on the sign for the garage sale in Caroline's picture?",
                   "Is there a green shape in the photo of the wedding cake topper?",
                   "What did Caroline share a photo of?",  # about a photo, but names none of them: generate
                   "What did Melanie paint for her kids?",  # not about a photo: generate
                   "Show me the photo of the quantum physics lecture notes"]  # about a photo, but none matches well


def image_vectors(out: Path) -> dict[str, Any]:
    """Shared images kept in a store by the Python pipeline (pixels mode, real MiniLM embeddings), and where each
    question goes: the vision op on which image, or generate. The JVM side reads the same file and routes alike."""
    import io

    from PIL import Image

    from runtimes.memory.embed import TorchEmbedder
    from runtimes.memory.pipeline import MemoryPipeline, PipelineConfig, VISUAL_WORDS
    from runtimes.memory.store import MemoryStore

    emb = TorchEmbedder()
    db = out / "stores" / "images.sqlite"
    db.parent.mkdir(parents=True, exist_ok=True)
    table: dict[str, list[float]] = {}

    def embed(texts: list[str]) -> Any:
        v = emb.embed(texts)
        table.update({t: [float(x) for x in row] for t, row in zip(texts, v)})
        return v

    class _Embedder:
        def embed(self, texts: list[str]) -> Any:
            return embed(texts)

    class _Vision:  # records which image it was given
        def answer(self, image: Any, question: str, max_new_tokens: Any = None, whole: bool = False) -> str:
            return "seen " + "-".join(str(c) for c in image.getpixel((0, 0)))

    shares = []
    with MemoryStore(db) as store:
        pipe = MemoryPipeline(None, _Embedder(), store, owner="user", vision=_Vision(), config=PipelineConfig())
        for dia_id, speaker, text, rgb in IMAGE_SHARES:
            buf = io.BytesIO()
            Image.new("RGB", (16, 16), rgb).save(buf, format="PNG")
            turn = pipe.share_image({"speaker": speaker, "dia_id": dia_id, "text": text, "image": buf.getvalue()},
                                    "1:56 pm on 8 May, 2023")
            shares.append({"dia_id": dia_id, "rgb": list(rgb), "turn_for_extract": turn})
        cases = []
        for q in IMAGE_QUESTIONS:
            best = pipe.retrieve_images(q, 3)
            routed = bool(VISUAL_WORDS.search(q)) and best[0][1] >= pipe.config.visual_min_score \
                and best[0][1] - best[1][1] >= pipe.config.visual_min_margin
            cases.append({"question": q, "visual_words": bool(VISUAL_WORDS.search(q)),
                          "hits": [{"turn_id": im.turn_id, "score": sc, "shared_at": im.shared_at, "context": im.context}
                                   for im, sc in best],
                          "route": "vqa" if routed else "generate",
                          "answer": pipe.answer(q).text if routed else None})
    return {"db": "stores/images.sqlite", "embeddings": table, "shares": shares, "cases": cases,
            "visual_min_score": PipelineConfig().visual_min_score, "visual_min_margin": PipelineConfig().visual_min_margin}


class _Replay:
    """Replays recorded model outputs in order (the same outputs the JVM test replays), recording each call; stands in
    for the model so the two pipelines' orchestration (prompts, retrieval, store changes) can be compared."""

    def __init__(self, outputs: list[str], manifest: Any):
        self.outputs = list(outputs)
        self.manifest = manifest  # the pipeline sends the bundle's prompts, as the app does
        self.calls: list[dict[str, Any]] = []

    def generate(self, op: str, messages=None, max_new_tokens=None, **_: Any) -> Any:
        text = self.outputs.pop(0)
        self.calls.append({"op": op, "messages": messages, "max_new_tokens": max_new_tokens, "output": text})
        return SimpleNamespace(text=text, tokens=[], prompt_tokens=[], stop_reason="stop_token")


PIPELINE_SCRIPT = {
    "turns": [
        {"date": "1:56 pm on 8 May, 2023", "turns": TURNS[:2]},
        {"date": "10:37 am on 27 June, 2023",
         "turns": [{"speaker": "Caroline", "text": "We moved to Denver last month!", "dia_id": "D2:1"},
                   {"speaker": "Melanie", "text": "Ana and Ben loved the camping trip.", "dia_id": "D2:2"}]},
        {"date": "7:05 am on 1 Sep, 2023", "turns": [{"speaker": "Caroline", "text": "Nothing new today."},
                                                    # shown cut at TURN_SHOWN_CHARS code points, an emoji astride the cut
                                                    {"speaker": "Melanie", "text": "x" * 487 + "\U0001F600" * 4 + " end",
                                                     "dia_id": "D3:2"}]},
    ],
    "outputs": [
        '{"facts": ["Caroline attended an LGBTQ support group", "Melanie paints sunrises for her kids", "Melanie has kids", '
        '"Caroline finds support groups powerful", "Caroline lives in Boston"]}',
        # (the first batch of four facts meets an empty store: added without an update call, add_to_empty_store)
        '```json\n{"memory": [{"id": "0", "text": "Caroline attended an LGBTQ support group", "event": "NONE"}, '
        '{"id": "4", "text": "Caroline lives in Boston", "event": "ADD"}]}\n```',
        'Facts: {"facts": ["Caroline moved to Denver", "Melanie has two kids named Ana and Ben", "Melanie went camping"]}',
        '{"memory": [{"id": "0", "text": "Caroline moved to Denver", "event": "UPDATE", "old_memory": "Caroline lives in Boston"}, '
        '{"id": "1", "text": "Melanie has two kids named Ana and Ben", "event": "UPDATE", "old_memory": "Melanie has kids"}, '
        '{"id": "9", "text": "Melanie went camping", "event": "ADD"}, {"id": "42", "text": "x", "event": "DELETE"}]}',
        '{"facts": ["Caroline',
        "Answer: Denver\nbecause she moved",
        '\n\n  "Ana and Ben"  \n',
        "",
    ],
    "questions": [("Where does Caroline live?", None), ("What are Melanie's kids called?", 3), ("Anything?", None)],
}


def pipeline_vectors(out: Path, manifest: Any) -> dict[str, Any]:
    from runtimes.memory.pipeline import MemoryPipeline, PipelineConfig, clean_answer
    from runtimes.memory.store import MemoryStore

    table, embed = _embed_table(dim=16)
    db = out / "stores" / "pipeline.sqlite"
    llm = _Replay(PIPELINE_SCRIPT["outputs"], manifest)
    config = PipelineConfig(constrained=False)  # replayed outputs, decoded freely as the app does
    with MemoryStore(db) as store:
        pipe = MemoryPipeline(llm, SimpleNamespace(embed=embed), store, owner="user", config=config)
        added = []
        for step in PIPELINE_SCRIPT["turns"]:
            r = pipe.add_turns(step["turns"], step["date"])
            added.append({"facts": r.facts, "applied": [a.to_dict() for a in r.applied],
                          "calls": [{"op": c.op, "ok": c.ok, "error": c.error} for c in r.calls]})
        answers = []
        for q, k in PIPELINE_SCRIPT["questions"]:
            a = pipe.answer(q, k)
            answers.append({"question": q, "k": k, "text": a.text, "memories": [m.id for m, _ in a.memories],
                            "turns": [t.id for t, _ in a.turns], "turn_scores": [s for _, s in a.turns],
                            "scores": [s for _, s in a.memories]})
    clean = ["Answer: Denver\nx", "  \n\"Paris\" ", "ANSWER:   'Rome'", "", "\n\n", "plain", "answer:", "  “curly”  "]
    return {"config": {k: v for k, v in config.__dict__.items()}, "script": PIPELINE_SCRIPT, "calls": llm.calls,
            "add_turns": added, "answers": answers, "final": _rows(db), "embeddings": table,
            "clean_answer": [{"text": t, "clean": clean_answer(t)} for t in clean]}
