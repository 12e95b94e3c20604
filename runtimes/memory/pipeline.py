"""`MemoryPipeline(llm, embedder, store)`: extract facts from turns, fold them into the store, answer from it.

- `add_turns(turns, date)`: one `extract` call over the window -> facts; then per batch of facts one `update` call
  showing the top-k stored memories most similar to each fact (temporary ids), its events applied to the store in
  one transaction. Unusable JSON (runtimes.memory.parse) changes nothing; every call is logged in `self.calls`.
- `answer(question)`: the top-k memories by cosine similarity and the `answer_turns` turns of the conversation
  that best match the question (cosine and BM25 by rank fusion; every turn is kept in the store as it was said),
  shown oldest first with their dates, -> `generate`.

Shared images (MemLoRA-V): a turn may carry `image` (a file path, image bytes or a PIL image). With `images="pixels"`
(the default) the image is kept in the store (PNG bytes, with the turn id, date and the text it was shared with) and
the turn reaches `extract` as "... [shares a photo]"; a question that asks about a photo (`VISUAL_WORDS`) and whose
best-matching shared image scores at least `visual_min_score`, and `visual_min_margin` above the next one, is
answered by the `vision` op (the bundle's vqa program, runtimes/vision.py) on that image's pixels. With
`images="caption"` (the paper's caption-based baseline) the same `vision` op writes a caption when the image is
shared (`caption_prompt`), the turn reaches `extract` as "... [shares a photo: caption]" as LoCoMo's own photo turns
do, the pixels are not kept, and every question goes to `generate`.

`llm` is anything with `generate(op, messages=..., max_new_tokens=..., constraint=...) -> obj with .text`: a bundle
runtime (runtimes/base.py) or the PyTorch reference (runtimes/memory/reference.py). With `constrained=True` the
JSON ops decode under their JSON-schema mask (runtimes/memory/constrain.py).
"""

from __future__ import annotations

import io
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .. import prompts as templates
from .parse import ParseError, parse_extract, parse_update
from .prompts import extract_messages, format_turns, generate_messages, to_iso, update_messages
from .store import ApplyResult, Memory, MemoryStore, StoredImage, StoredTurn

log = logging.getLogger("memlora.memory")

VISUAL_WORDS = re.compile(r"\b(photos?|pictures?|pics?|images?|snapshots?|selfies?|photographs?|drawings?)\b", re.I)
"""A question matching this asks about a shared image (and may go to the vision op)."""
TURN_SHOWN_CHARS = 500
"""A kept turn is shown to `generate` cut to this many characters (code points; the longest LoCoMo turn is 497), so
that one very long message cannot push the answer prompt out of the context."""
STORE_IMAGE_SIDE = 448
"""Shared images are kept at most this many pixels on a side (the vision op reads 224 x 224)."""


@dataclass
class PipelineConfig:
    update_batch: int = 4
    """Facts per update call."""
    update_top_k: int = 5
    """Similar stored memories retrieved per fact for the update prompt."""
    update_max_memories: int = 10
    """Cap on the memories one update prompt shows (union over its facts, best first)."""
    answer_top_k: int = 10
    answer_turns: int = 5
    """Conversation turns most similar to the question shown to `generate` beside its memories (each turn is kept in
    the store as it was said, `MemoryStore.add_turns`). A 135M extractor keeps a fact's topic and loses detail (a
    date, a name, the second item of a list); the turn it came from still has it. 0 shows memories only (the MemLoRA
    paper's pipeline). Whole validation conversations, int4 default bundle: QA F1 26.2 with 0, 29.3 with 5 by
    cosine, 30.6 with 5 by the hybrid ranking (docs/memory.md)."""
    turn_ranking: str = "hybrid"
    """How the turns are chosen: "hybrid" (reciprocal rank fusion of MiniLM cosine and BM25 over their words,
    runtimes.memory.lexical: names and rare nouns count) or "cosine"."""
    add_to_empty_store: bool = True
    """With nothing stored for the owner yet, every new fact is an ADD: apply that without an update call. (The
    update op is trained on stores that hold memories; on "(none)" the distilled SmolLM2 adapter tends to answer
    UPDATE of an id that does not exist, which is refused, so the store would stay empty for good.)"""
    constrained: bool = True
    """Decode extract / update under their JSON-schema mask (runtimes.memory.constrain). On by default: unconstrained,
    the int4 default bundle wrote 1.9 % of its extractions (quotes left unescaped inside a fact) and 1.4 % of its
    updates (an event without "event") as JSON the parser refuses, on the validation conversations; constrained,
    none (docs/memory.md). The Android app decodes unconstrained (LlmModule gives no logits), and so does an LLM
    object that has no `tokenizer` to build the mask from."""
    max_new_tokens: dict[str, int] = field(default_factory=dict)
    """Per-op override of the generation length (else the bundle's / runtimes.prompts defaults)."""
    images: str = "pixels"
    """Shared images: "pixels" (kept, questions about them answered by the vision op) or "caption" (a caption
    written at share time goes into the text pipeline; the baseline MemLoRA-V is compared with)."""
    visual_min_score: float = 0.5
    """Cosine between a question and a shared image's text below which the question is not about that image."""
    visual_min_margin: float = 0.1
    """How far the best shared image must score above the second best for the question to be about it: a question
    that matches every shared image alike ("what did Deb share a photo of?") names none of them."""
    caption_prompt: str = "Describe the image."
    caption_max_new_tokens: int = 24


@dataclass
class OpCall:
    op: str
    text: str
    ok: bool | None  # JSON parsed (extract/update); None for generate
    error: str | None
    ms: float
    prompt_tokens: int
    new_tokens: int
    stop_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class AddTurnsResult:
    facts: list[str]
    applied: list[ApplyResult]
    calls: list[OpCall]


@dataclass
class Answer:
    text: str
    memories: list[tuple[Memory, float]]
    call: OpCall
    image: tuple[StoredImage, float] | None = None
    """The shared image the vision op answered from (and its retrieval score)."""
    turns: list[tuple[StoredTurn, float]] = field(default_factory=list)
    """The kept conversation turns shown beside the memories (`PipelineConfig.answer_turns`)."""


class MemoryPipeline:
    def __init__(self, llm: Any, embedder: Any, store: MemoryStore, *, owner: str | None = "user",
                 config: PipelineConfig | None = None, on_call: Callable[[OpCall], None] | None = None,
                 vision: Any = None):
        self.llm, self.embedder, self.store, self.owner = llm, embedder, store, owner
        self.config = config or PipelineConfig()
        if self.config.images not in ("pixels", "caption"):
            raise ValueError(f"images must be 'pixels' or 'caption', got {self.config.images!r}")
        if self.config.turn_ranking not in ("hybrid", "cosine"):
            raise ValueError(f"turn_ranking must be 'hybrid' or 'cosine', got {self.config.turn_ranking!r}")
        self.vision = vision
        """The vision op: anything with `answer(image, question, max_new_tokens=None) -> str` (runtimes.vision)."""
        self.on_call = on_call
        self.calls: list[OpCall] = []
        self._constraints: dict[tuple[str, int | None], Any] = {}

    # ------------------------------------------------------------------------------------------------ plumbing
    def template(self, op: str) -> Any:
        """The bundle's own prompt for `op` (schema 2), its template id (schema 1), or the built-in template."""
        manifest = getattr(self.llm, "manifest", None)
        if manifest is not None and op in manifest.ops:
            return manifest.ops[op].prompt or manifest.ops[op].prompt_template
        return templates.template_for(op)

    def _stops(self, op: str) -> list[int]:
        manifest = getattr(self.llm, "manifest", None)
        if manifest is not None:
            return list(manifest.ops[op].stop_token_ids)
        return list(self.llm.stop_token_ids(op))

    def constraint(self, op: str, n_ids: int | None = None) -> Any | None:
        """The op's JSON constraint (cached); for update, narrowed to the `n_ids` temporary ids of the prompt."""
        if not self.config.constrained or getattr(self.llm, "tokenizer", None) is None:
            return None  # an LLM object that gives no tokenizer (a caller's own, a replay) decodes freely
        key = (op, n_ids)
        if key not in self._constraints:
            from .constrain import JsonConstraint

            self._constraints[key] = JsonConstraint.for_op(op, self.llm.tokenizer, self._stops(op), n_ids=n_ids)
        return self._constraints[key]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.embedder.embed(list(texts)), dtype=np.float32)

    def _call(self, op: str, messages: list[dict[str, str]], parse: Callable[[str], Any] | None,
              n_ids: int | None = None) -> tuple[Any, OpCall]:
        kwargs: dict[str, Any] = {}
        if op in self.config.max_new_tokens:
            kwargs["max_new_tokens"] = self.config.max_new_tokens[op]
        c = self.constraint(op, n_ids) if parse is not None else None
        if c is not None:
            kwargs["constraint"] = c
        t0 = time.perf_counter()
        try:
            g = self.llm.generate(op, messages=messages, **kwargs)
        except ValueError as e:  # the prompt does not fit the model's context: a failed call, logged
            return None, self._record(OpCall(op=op, text="", ok=False if parse else None, error=str(e), ms=0.0,
                                             prompt_tokens=0, new_tokens=0, stop_reason="prompt_too_long"))
        ms = (time.perf_counter() - t0) * 1e3
        value, ok, err = None, None, None
        if parse is not None:
            try:
                value, ok = parse(g.text), True
            except ParseError as e:
                ok, err = False, str(e)
        call = OpCall(op=op, text=g.text, ok=ok, error=err, ms=round(ms, 1),
                      prompt_tokens=len(getattr(g, "prompt_tokens", []) or []),
                      new_tokens=len(getattr(g, "tokens", []) or []), stop_reason=getattr(g, "stop_reason", None))
        return value, self._record(call)

    def _record(self, call: OpCall) -> OpCall:
        self.calls.append(call)
        if self.on_call:
            self.on_call(call)
        return call

    def _vision_call(self, op: str, image: Any, question: str, max_new_tokens: int | None = None) -> OpCall:
        t0 = time.perf_counter()
        # A caption is the whole text; a VQA answer is the op's final answer (runtimes.vision: after answer_after).
        text = self.vision.answer(image, question, max_new_tokens=max_new_tokens, **({"whole": True} if op == "caption"
                                                                                       else {}))
        stats = getattr(self.vision, "last_stats", None) or {}
        return self._record(OpCall(op=op, text=text, ok=None, error=None, ms=round((time.perf_counter() - t0) * 1e3, 1),
                                   prompt_tokens=int(stats.get("prompt_tokens", 0)),
                                   new_tokens=int(stats.get("new_tokens", 0))))

    # ------------------------------------------------------------------------------------------------ images
    def share_image(self, turn: dict[str, Any], date: str) -> dict[str, Any]:
        """Keep the image of a turn (pixels mode) or caption it (caption mode); the turn as `extract` reads it."""
        try:
            image = _to_rgb(turn["image"])
        except Exception as e:  # noqa: BLE001  PIL raises many kinds (OSError, DecompressionBombError, ValueError)
            what = turn["image"] if isinstance(turn["image"], (str, Path)) else type(turn["image"]).__name__
            raise ValueError(f"turn {turn.get('dia_id', '?')}: the shared image {what} cannot be read "
                             f"({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
        out = {k: v for k, v in turn.items() if k != "image"}
        if self.config.images == "caption":
            if self.vision is None:
                raise ValueError("images='caption' needs the vision op to write captions")
            call = self._vision_call("caption", image, self.config.caption_prompt, self.config.caption_max_new_tokens)
            out["blip_caption"] = clean_answer(call.text) or "a photo"
            return out
        context = f"{turn.get('speaker', '')}: {' '.join(str(turn.get('text', '')).split())}".strip()
        self.store.add_image(_png(image), context=context, embedding=self.embed([context])[0], owner=self.owner,
                             turn_id=str(turn["dia_id"]) if turn.get("dia_id") else None, shared_at=to_iso(date))
        out["shared_image"] = True
        return out

    def retrieve_images(self, question: str, k: int = 1) -> list[tuple[StoredImage, float]]:
        return self.store.search_images(self.embed([question])[0], k, owner=self.owner)

    def route_image(self, question: str) -> tuple[StoredImage, float] | None:
        """The shared image a question is about (pixels mode), or None: it asks about a photo (`VISUAL_WORDS`), its
        best image scores at least `visual_min_score` and `visual_min_margin` above the next one."""
        if self.config.images != "pixels" or not VISUAL_WORDS.search(question) or not self.store.image_count(self.owner):
            return None
        best = self.retrieve_images(question, 2)
        if best and best[0][1] >= self.config.visual_min_score \
                and (len(best) == 1 or best[0][1] - best[1][1] >= self.config.visual_min_margin):
            return best[0]
        return None

    # ------------------------------------------------------------------------------------------------ ops
    def extract(self, turns: Sequence[dict[str, Any]], date: str) -> tuple[list[str], OpCall]:
        facts, call = self._call("extract", extract_messages(turns, date, self.template("extract")), parse_extract)
        return facts or [], call

    def similar(self, facts: Sequence[str]) -> list[Memory]:
        """Union of the top-k stored memories of each fact, best score first, at most update_max_memories."""
        if not facts or self.store.count(self.owner) == 0:
            return []
        best: dict[int, tuple[float, Memory]] = {}
        for v in self.embed(facts):
            for m, s in self.store.search(v, self.config.update_top_k, owner=self.owner):
                if m.id not in best or s > best[m.id][0]:
                    best[m.id] = (s, m)
        ranked = sorted(best.values(), key=lambda x: -x[0])[: self.config.update_max_memories]
        return [m for _, m in ranked]

    def update(self, facts: Sequence[str], *, date: str, source_turns: Sequence[str] = ()
               ) -> tuple[ApplyResult | None, OpCall | None]:
        """One update call over `facts` (None as the call when the empty-store rule applied them without one)."""
        memories = self.similar(facts)
        call: OpCall | None = None
        if not memories and self.config.add_to_empty_store:
            events = [{"id": str(i), "text": f, "event": "ADD", "old_memory": None} for i, f in enumerate(facts)]
            id_map: dict[str, int] = {}  # ADD ignores ids; nothing was shown
        else:
            messages, id_map = update_messages(facts, memories, self.template("update"))
            events, call = self._call("update", messages, parse_update, n_ids=len(memories) + len(facts))
        if events is None:
            return None, call
        res = self.store.apply_update(events, id_map, owner=self.owner, source_turns=source_turns, embed_fn=self.embed,
                                      now=to_iso(date), batch=uuid.uuid4().hex[:12])
        return res, call

    def add_turns(self, turns: Sequence[dict[str, Any]], date: str) -> AddTurnsResult:
        calls0 = len(self.calls)
        turns = [self.share_image(t, date) if t.get("image") is not None else t for t in turns]
        self.keep_turns(turns, date)
        facts, _ = self.extract(turns, date)
        ids = [str(t["dia_id"]) for t in turns if t.get("dia_id")]
        applied = []
        n = max(1, self.config.update_batch)
        for i in range(0, len(facts), n):
            res, _ = self.update(facts[i:i + n], date=date, source_turns=ids)
            if res is not None:
                applied.append(res)
        return AddTurnsResult(facts=facts, applied=applied, calls=self.calls[calls0:])

    def keep_turns(self, turns: Sequence[dict[str, Any]], date: str) -> list[int]:
        """Keep each turn as it was said ("Speaker: text", a photo marked as `extract` reads it) with its embedding,
        so the answer step can show it (`answer_turns`); their row ids."""
        if not turns:
            return []
        texts = [format_turns([t]) for t in turns]
        return self.store.add_turns(texts, self.embed(texts), owner=self.owner, said_at=to_iso(date),
                                    turn_ids=[str(t["dia_id"]) if t.get("dia_id") else None for t in turns])

    def retrieve(self, question: str, k: int | None = None) -> list[tuple[Memory, float]]:
        return self.store.search(self.embed([question])[0], k or self.config.answer_top_k, owner=self.owner)

    def answer(self, question: str, k: int | None = None) -> Answer:
        routed = self.route_image(question) if self.vision is not None else None
        if routed is not None:
            try:
                pixels = routed[0].image()
            except Exception as e:  # noqa: BLE001  a store written by something else: answer from text
                log.warning("stored image %s cannot be decoded (%s); answering from text", routed[0].id, e)
            else:
                call = self._vision_call("vqa", pixels, question)
                return Answer(text=clean_answer(call.text), memories=[], call=call, image=routed)
        q = self.embed([question])[0]
        hits = self.store.search(q, k or self.config.answer_top_k, owner=self.owner)
        turns = self.store.search_turns(q, self.config.answer_turns, owner=self.owner,
                                        query_text=question if self.config.turn_ranking == "hybrid" else None) \
            if self.config.answer_turns > 0 else []
        # Memories and turns together, oldest first (a memory before a turn of the same date), each with its date.
        shown = sorted([(m.updated_at, 0, m.id, m) for m, _ in hits]
                       + [(t.said_at, 1, t.id, {"id": t.id, "text": t.text[:TURN_SHOWN_CHARS], "updated_at": t.said_at}) for t, _ in turns],
                       key=lambda x: x[:3])
        _, call = self._call("generate", generate_messages(question, [x[3] for x in shown], self.template("generate")),
                             None)
        return Answer(text=clean_answer(call.text), memories=hits, call=call, turns=turns)


def _to_rgb(image: Any) -> Any:
    """A turn's `image` (path, bytes or PIL image) as an RGB PIL image no larger than STORE_IMAGE_SIDE a side."""
    from PIL import Image

    if isinstance(image, Image.Image):
        im = image.convert("RGB")
    else:
        src = io.BytesIO(image) if isinstance(image, (bytes, bytearray)) else image
        with Image.open(src) as f:
            im = f.convert("RGB")
    im.thumbnail((STORE_IMAGE_SIDE, STORE_IMAGE_SIDE))
    return im


def _png(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def clean_answer(text: str) -> str:
    """The first non-empty line, without surrounding quotes or an 'Answer:' prefix."""
    line = next((ln.strip() for ln in text.strip().splitlines() if ln.strip()), "").strip('"\' ')
    if line.lower().startswith("answer:"):
        line = line[7:]
    return line.strip('"\' ')
