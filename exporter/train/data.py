"""Distillation data for the extract / update / generate adapters, from LoCoMo-format conversations.

Source: ../shared/data/locomo_dev.json (CC BY-NC 4.0; read in place, never copied into the repository). Loading,
extraction windows and the train / validation split are runtimes.memory.locomo's, so training and `memlora-eval`
agree: the split is by conversation, never by question (the last `locomo.VAL_COUNT` = 2 conversations of the file
are validation: conv-47 and conv-48 in locomo_dev.json; the others are training). Every prompt is rendered by the
pipeline's own functions (runtimes.memory.prompts -> runtimes.prompts.render) and targets are compact JSON with a
fixed key order (`dumps`), so a training example is byte-for-byte what the pipeline shows the model at inference.

extract
    One example per extraction window (`locomo.WINDOW` consecutive turns of one session, with the session date):
    target `{"facts": [...]}` = the `observation` facts whose dia_id is one of the window's turns (possibly empty).

update
    The pipeline's update calls replayed with the gold facts, per conversation on a fresh SQLite `MemoryStore`:
    each window's facts in batches of `PipelineConfig.update_batch`; the memories shown are those
    `MemoryPipeline.similar` retrieves (top-k per fact by all-MiniLM-L6-v2 cosine, union, capped), with temporary
    ids from `format_memories`; the target events are applied to the store with `apply_update` (which must skip
    nothing), so later calls see the store the earlier ones left. One event per new fact, in the facts' order:
    - ADD (natural): no shown memory says the same; id = the next free temporary id (len(shown) + n).
    - NONE (natural): a shown memory has cosine >= `NONE_COSINE` with the fact, or the same text: the fact is
      already known (id = that memory's, text = its text).
    Synthetic cases, seeded per conversation (random.Random(f"{seed}:{sample_id}")), each with its own chance per
    batch (`Rates`):
    - UPDATE ("a more detailed version arrives"): a fact F of the batch that has a clause boundary (", and ",
      " which ", " because ", ...; `clause_head`) gets its head H ("Melanie painted a lake sunrise last year.")
      stored first, as an earlier memory; F then UPDATEs it: {"id": id(H), "text": F, "event": "UPDATE",
      "old_memory": H}.
    - DELETE ("a contradiction arrives"): a stored memory M about a speaker whose verb has a safe negation
      (`negate`: "X is <verb>ing ..." -> "X is no longer <verb>ing ...", "X likes/plays/works/... ..." ->
      "X no longer like/play/work ...") is contradicted by a new fact N = negate(M) inserted at a random place of
      the batch: {"id": id(M), "text": M, "event": "DELETE"}; M is removed from the store.
    - NONE (repeat): a stored memory is told again verbatim as a new fact.
    A synthetic case is dropped when its memory is not among the memories the retrieval shows.

generate
    Per conversation a store holding every gold fact with its session date (and source dia_id); each QA pair of
    categories 1-4 is put through `MemoryPipeline.answer` with a recorder in place of the model, so the prompt
    is exactly the pipeline's (its retrieval, top-k, ordering, dates); target = the gold answer text.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable, Sequence

import numpy as np

from runtimes.memory import locomo
from runtimes.memory.pipeline import MemoryPipeline, PipelineConfig
from runtimes.memory.prompts import extract_messages, to_iso, update_messages
from runtimes.memory.store import MemoryStore

from ..errors import InputError

log = logging.getLogger("memlora.train.data")

OPS = ("extract", "update", "generate")
DATA_VERSION = 1
"""Bump when the procedure changes: it keys the example cache and is written into training_config.json."""
NONE_COSINE = 0.9
"""A new fact this close (all-MiniLM-L6-v2 cosine) to a shown memory is already known: NONE."""


@dataclass(frozen=True)
class Rates:
    """Chance per update batch of adding each synthetic case (see the module docstring)."""

    update: float = 0.25
    delete: float = 0.15
    repeat: float = 0.1


@dataclass
class Example:
    op: str
    messages: list[dict[str, str]]
    target: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dumps(obj: Any) -> str:
    """The target JSON: one line, ", " / ": " separators (what the constrained decoder writes), keys in the order
    given, non-ASCII kept."""
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": "))


def event(mid: str, text: str, ev: str, old: str | None = None) -> dict[str, Any]:
    """One update event with the fixed key order id, text, event[, old_memory] (old_memory only for UPDATE)."""
    e: dict[str, Any] = {"id": str(mid), "text": text, "event": ev}
    if ev == "UPDATE":
        e["old_memory"] = old
    return e


# ------------------------------------------------------------------------------------------------ synthetic cases
_CLAUSE_MARKERS = (", and ", ", which ", " which ", ", where ", " because ", ", but ", " after ", " while ",
                   " since ", " so that ", " with ", " and ", ", ")
_MIN_HEAD_WORDS, _MIN_TAIL_WORDS = 5, 3

_HABIT_VERBS = {
    "likes": "like", "loves": "love", "enjoys": "enjoy", "plays": "play", "works": "work", "lives": "live",
    "owns": "own", "wants": "want", "plans": "plan", "volunteers": "volunteer", "paints": "paint", "runs": "run",
    "writes": "write", "collects": "collect", "teaches": "teach", "studies": "study", "attends": "attend",
    "practices": "practice", "goes": "go", "uses": "use", "drives": "drive", "visits": "visit", "cooks": "cook",
    "bakes": "bake", "reads": "read", "watches": "watch", "volunteers at": "volunteer at", "trains": "train",
    "keeps": "keep", "hikes": "hike", "swims": "swim", "dances": "dance", "sings": "sing", "mentors": "mentor",
}
_SUBJECT = re.compile(r"^(?P<subj>[A-Z][\w'-]+) (?P<verb>[a-z]+) (?P<rest>\S.*)$")


def clause_head(fact: str) -> str | None:
    """The leading clause of a fact that says more than it ("A did X, and Y" -> "A did X."), or None."""
    best: int | None = None
    for marker in _CLAUSE_MARKERS:
        i = fact.find(marker)
        if i < 0:
            continue
        head, tail = fact[:i], fact[i + len(marker):]
        if len(head.split()) >= _MIN_HEAD_WORDS and len(tail.split()) >= _MIN_TAIL_WORDS and (best is None or i < best):
            best = i
    if best is None:
        return None
    return fact[:best].rstrip(" ,;:") + "."


def negate(fact: str, speakers: Iterable[str]) -> str | None:
    """A fact contradicting `fact` by a safe rule (see the module docstring), or None when no rule applies."""
    m = _SUBJECT.match(fact.strip())
    if not m or m["subj"] not in set(speakers):
        return None
    subj, verb, rest = m["subj"], m["verb"], m["rest"]
    if verb == "is":
        words = rest.split(" ", 1)
        if words[0] == "currently" and len(words) > 1:
            words = words[1].split(" ", 1)
        if len(words) == 2 and words[0].endswith("ing") and len(words[0]) > 4:
            return f"{subj} is no longer {words[0]} {words[1]}"
        return None
    if verb in _HABIT_VERBS:
        return f"{subj} no longer {_HABIT_VERBS[verb]} {rest}"
    return None


# ------------------------------------------------------------------------------------------------ embeddings
class CachedEmbedder:
    """Wraps an embedder (`.embed(texts) -> [n, d]`) with a per-text cache: the same fact is embedded once."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.cache: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            for t, v in zip(missing, np.asarray(self.inner.embed(missing), dtype=np.float32)):
                self.cache[t] = v
        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        return np.stack([self.cache[t] for t in texts])

    __call__ = embed


def default_embedder() -> CachedEmbedder:
    from runtimes.memory.embed import TorchEmbedder

    return CachedEmbedder(TorchEmbedder())


def _prewarm(embedder: Any, conv: locomo.Conversation) -> None:
    """Embed a conversation's gold facts in one batch when the embedder caches (instead of one call per turn)."""
    if isinstance(embedder, CachedEmbedder):
        embedder.embed(list(dict.fromkeys(f for facts in conv.observations.values() for f in facts)))


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(n > 0, n, 1.0)


# ------------------------------------------------------------------------------------------------ builders
def extract_examples(convs: Sequence[locomo.Conversation], window: int = locomo.WINDOW) -> list[Example]:
    out = []
    for c in convs:
        for w in c.windows(window):
            out.append(Example("extract", extract_messages(w.turns, w.date), dumps({"facts": list(w.gold_facts)}),
                               {"sample_id": c.sample_id, "session": w.session, "turns": w.dia_ids,
                                "kind": "facts" if w.gold_facts else "empty"}))
    return out


def _pipeline(embedder: Any, config: PipelineConfig, llm: Any = None) -> MemoryPipeline:
    return MemoryPipeline(llm, embedder, MemoryStore(":memory:"), config=config)


def update_examples(convs: Sequence[locomo.Conversation], embedder: Any, *, seed: int = 0, rates: Rates = Rates(),
                    config: PipelineConfig | None = None, window: int = locomo.WINDOW) -> list[Example]:
    config = config or PipelineConfig(constrained=False)  # the recorder stands in for the model: no mask
    out = []
    for c in convs:
        _prewarm(embedder, c)
        rng = random.Random(f"{seed}:{c.sample_id}")
        pipe = _pipeline(embedder, config)
        store, owner = pipe.store, pipe.owner
        for w in c.windows(window):
            now = to_iso(w.date)
            n = max(1, config.update_batch)
            for b0 in range(0, len(w.gold_facts), n):
                batch = list(w.gold_facts[b0:b0 + n])
                ex = _update_call(pipe, c, batch, now, w.dia_ids, rng, rates)
                if ex is not None:
                    ex.meta.update(sample_id=c.sample_id, session=w.session, turns=w.dia_ids)
                    out.append(ex)
        store.close()
    return out


def _update_call(pipe: MemoryPipeline, conv: locomo.Conversation, batch: list[str], now: str, turns: list[str],
                 rng: random.Random, rates: Rates) -> Example | None:
    store, owner = pipe.store, pipe.owner
    planned: dict[int, dict[str, Any]] = {}  # position in the batch -> synthetic case
    # Draw every random number in a fixed order, whatever is applicable, so one case never shifts another's draws.
    r_upd, r_del, r_rep = rng.random(), rng.random(), rng.random()
    pick_upd, pick_del, pick_rep, pos_del, pos_rep = (rng.random() for _ in range(5))
    stored = store.all(owner)

    if r_upd < rates.update:
        cands = [(i, h) for i, f in enumerate(batch) if (h := clause_head(f)) and h not in {m.text for m in stored}]
        if cands:
            i, head = cands[int(pick_upd * len(cands))]
            res = store.add([head], owner=owner, embed_fn=pipe.embed, source_turns=[], now=now)
            if res.added:
                planned[i] = {"kind": "UPDATE", "mid": res.added[0], "old": head}
                stored = store.all(owner)
    if r_del < rates.delete:
        used = {p["mid"] for p in planned.values()}
        cands = [(m, neg) for m in stored if m.id not in used and (neg := negate(m.text, conv.speakers))
                 and neg not in batch]
        if cands:
            m, neg = cands[int(pick_del * len(cands))]
            pos = int(pos_del * (len(batch) + 1))
            batch.insert(pos, neg)
            planned = {(k + 1 if k >= pos else k): v for k, v in planned.items()}
            planned[pos] = {"kind": "DELETE", "mid": m.id, "old": m.text}
    if r_rep < rates.repeat:
        used = {p["mid"] for p in planned.values()}
        cands = [m for m in stored if m.id not in used and m.text not in batch]
        if cands:
            m = cands[int(pick_rep * len(cands))]
            pos = int(pos_rep * (len(batch) + 1))
            batch.insert(pos, m.text)
            planned = {(k + 1 if k >= pos else k): v for k, v in planned.items()}
            planned[pos] = {"kind": "REPEAT", "mid": m.id, "old": m.text}

    memories = pipe.similar(batch)
    shown = {m.id: str(i) for i, m in enumerate(memories)}
    # A synthetic case whose memory the retrieval does not show cannot be answered: drop it (and its new fact).
    for pos in sorted([p for p, v in planned.items() if v["mid"] not in shown], reverse=True):
        if planned[pos]["kind"] in ("DELETE", "REPEAT"):
            del batch[pos]
            planned = {(k - 1 if k > pos else k): v for k, v in planned.items() if k != pos}
        else:
            del planned[pos]
    if not batch:
        return None
    memories = pipe.similar(batch)
    messages, id_map = update_messages(batch, memories)
    shown = {m.id: tid for tid, m in zip(id_map, memories)}
    text_of = {m.id: m.text for m in memories}
    emb = _unit(pipe.embed(batch))
    mem_emb = _unit(pipe.embed([m.text for m in memories])) if memories else np.zeros((0, emb.shape[1]), np.float32)

    events, kinds, used, next_id = [], [], set(), len(memories)
    for i, fact in enumerate(batch):
        p = planned.get(i)
        if p is not None and p["mid"] in shown:
            tid = shown[p["mid"]]
            if p["kind"] == "UPDATE":
                events.append(event(tid, fact, "UPDATE", p["old"]))
            elif p["kind"] == "DELETE":
                events.append(event(tid, p["old"], "DELETE"))
            else:
                events.append(event(tid, p["old"], "NONE"))
            kinds.append(p["kind"])
            used.add(p["mid"])
            continue
        sims = mem_emb @ emb[i] if len(memories) else np.zeros(0)
        best = None
        for j in np.argsort(-sims, kind="stable"):
            m = memories[int(j)]
            if m.id in used or m.id in {q["mid"] for q in planned.values()}:
                continue
            if m.text == fact or sims[int(j)] >= NONE_COSINE:
                best = m
            break
        if best is not None:
            events.append(event(shown[best.id], text_of[best.id], "NONE"))
            kinds.append("NONE")
            used.add(best.id)
        else:
            events.append(event(str(next_id), fact, "ADD"))
            kinds.append("ADD")
            next_id += 1
    target = dumps({"memory": events})
    # Apply what the target says, through the store's own parser-shaped events: the next call sees the result.
    from runtimes.memory.parse import parse_update

    res = store.apply_update(parse_update(target), id_map, owner=owner, source_turns=turns, embed_fn=pipe.embed, now=now)
    if res.skipped:
        raise AssertionError(f"update target not applicable to the store: {res.skipped}")
    return Example("update", messages, target, {"kinds": kinds, "shown": len(memories)})


class _Recorder:
    """Stands in for the model in `MemoryPipeline.answer`: keeps the messages it is given, answers nothing."""

    def __init__(self) -> None:
        self.messages: list[dict[str, str]] | None = None

    def generate(self, op: str, messages: list[dict[str, str]] | None = None, **_: Any) -> Any:
        self.messages = messages
        return SimpleNamespace(text="")


def generate_examples(convs: Sequence[locomo.Conversation], embedder: Any, *,
                      config: PipelineConfig | None = None) -> list[Example]:
    config = config or PipelineConfig(constrained=False)  # the recorder stands in for the model: no mask
    out = []
    for c in convs:
        _prewarm(embedder, c)
        rec = _Recorder()
        pipe = _pipeline(embedder, config, rec)
        for s in c.sessions:
            now = to_iso(s.date)
            for t in s.turns:
                facts = c.observations.get(str(t["dia_id"]), [])
                if facts:
                    pipe.store.add(facts, owner=pipe.owner, embed_fn=pipe.embed, source_turns=[str(t["dia_id"])], now=now)
        # The store holds the gold facts only, no kept turns: the prompts show memories alone, as the shipped
        # generate adapter was trained (PipelineConfig.answer_turns adds turns at answer time).
        for q in c.questions():
            ans = pipe.answer(str(q["question"]))
            shown_turns = {d for m, _ in ans.memories for d in m.source_turns}
            evidence = [str(e) for e in q.get("evidence", [])]
            out.append(Example("generate", rec.messages or [], str(q["answer"]).strip(),
                               {"sample_id": c.sample_id, "category": q["category"], "question": q["question"],
                                "evidence_shown": sum(e in shown_turns for e in evidence), "evidence": len(evidence)}))
        pipe.store.close()
    return out


# ------------------------------------------------------------------------------------------------ entry point
def data_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_conversations(data: str | Path, split: str) -> list[locomo.Conversation]:
    try:
        return locomo.split(locomo.load(data), split)
    except (FileNotFoundError, ValueError) as e:
        raise InputError(str(e)) from e


def build(op: str, split: str, data: str | Path = locomo.DEFAULT_DATA, *, seed: int = 0, embedder: Any = None,
          cache_dir: str | Path | None = None) -> list[Example]:
    """The examples of one op and split ('train' / 'val'), cached as JSONL under `cache_dir` (keyed by the data
    file's hash, the op, split, seed and DATA_VERSION) when given."""
    if op not in OPS:
        raise InputError(f"op must be one of {list(OPS)}, got {op!r}")
    path = Path(data)
    convs = load_conversations(path, split)
    cache = None
    if cache_dir is not None:
        cfg = asdict(PipelineConfig(constrained=False))
        key = hashlib.sha256(json.dumps([data_sha256(path), op, split, seed, DATA_VERSION, locomo.WINDOW, NONE_COSINE,
                                         asdict(Rates()), cfg], sort_keys=True).encode()).hexdigest()[:16]
        cache = Path(cache_dir) / f"{op}-{split}-{key}.jsonl"
        if cache.exists():
            return [Example(**json.loads(line)) for line in cache.read_text().splitlines() if line.strip()]
    if op == "extract":
        examples = extract_examples(convs)
    else:
        embedder = embedder or default_embedder()
        examples = (update_examples(convs, embedder, seed=seed) if op == "update" else generate_examples(convs, embedder))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(e.to_dict(), ensure_ascii=False) + "\n" for e in examples))
        tmp.replace(cache)
    return examples


def summary(examples: Sequence[Example]) -> dict[str, Any]:
    from collections import Counter

    kinds: Counter[str] = Counter()
    for e in examples:
        for k in e.meta.get("kinds", [e.meta.get("kind", e.meta.get("category"))]):
            kinds[str(k)] += 1
    return {"examples": len(examples), "conversations": sorted({e.meta.get("sample_id") for e in examples}),
            "kinds": dict(sorted(kinds.items()))}
