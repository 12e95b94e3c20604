"""LoCoMo-shaped inputs for each memory operation, so profiled prompt lengths are the lengths the app really sees.

Built at run time from the LoCoMo conversations in `../shared/data/locomo_dev.json` (or a path the user gives; the
data is CC BY-NC and never copied into this repository):

- extract: a window of `window` consecutive turns of one session, with the session date;
- update: the facts LoCoMo's annotators wrote for such a window (its `observation` entries — what a good extract
  returns) + the `k` most similar facts of earlier sessions as the stored memories;
- generate: a LoCoMo question (categories 1-4) + `k` memories: its evidence facts, filled up with the most similar
  other facts, dated with their session dates.

Each item also carries a *reference output* (the JSON / answer a correct model would write for it). The profiler
fixes each op's output length to the median token count of those references, and ignores stop tokens while
profiling, so every run of an op decodes exactly that many tokens whatever the (possibly untrained) model says.
Prompts are rendered by the memory pipeline's own formatters (runtimes.memory.prompts) and the versioned templates
of runtimes.prompts, exactly as the app renders them.
"""

from __future__ import annotations

import json
import random
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from . import ProfileError

DATA_NAME = "locomo_dev.json"
OPS = ("extract", "update", "generate")


@dataclass
class WorkItem:
    op: str
    sample_id: str
    messages: list[dict[str, str]]
    reference_output: str
    meta: dict[str, Any] = field(default_factory=dict)


def default_data_path() -> Path | None:
    """`../shared/data/locomo_dev.json` relative to the project root (where the project keeps its shared data)."""
    root = Path(__file__).resolve().parents[2]
    for cand in (root.parent / "shared" / "data" / DATA_NAME, root / "shared" / "data" / DATA_NAME):
        if cand.is_file():
            return cand
    return None


def load_locomo(path: str | Path | None) -> list[dict[str, Any]]:
    p = Path(path) if path else default_data_path()
    if p is None or not p.is_file():
        raise ProfileError(f"LoCoMo data not found ({path or '../shared/data/' + DATA_NAME}); pass --data PATH to "
                           f"locomo10.json-shaped data")
    from runtimes.memory import locomo

    try:  # the same checks as every other reader of LoCoMo-format data: one line naming the file and the field
        locomo.load(p)
    except (FileNotFoundError, ValueError) as e:
        raise ProfileError(str(e)) from None
    return json.loads(p.read_text(encoding="utf-8"))


_WORD = re.compile(r"[a-z0-9']+")


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 2}


def _similar(query: str, pool: Sequence[dict[str, Any]], k: int, exclude: set[str] = frozenset()) -> list[dict[str, Any]]:
    """The `k` facts of `pool` sharing most words with `query` (a cheap stand-in for the embedding search)."""
    q = _words(query)
    scored = [(len(q & _words(m["text"])) / (1 + len(_words(m["text"]))), -i, m)
              for i, m in enumerate(pool) if m["text"] not in exclude]
    scored.sort(key=lambda t: (t[0], t[1]), reverse=True)
    return [m for _, _, m in scored[:k]]


def _sessions(sample: dict[str, Any]) -> list[tuple[int, str, list[dict[str, Any]]]]:
    conv = sample["conversation"]
    out = []
    for key, turns in conv.items():
        m = re.fullmatch(r"session_(\d+)", key)
        if m and isinstance(turns, list) and turns:
            n = int(m.group(1))
            out.append((n, str(conv.get(f"session_{n}_date_time", "")), turns))
    return sorted(out)


def _facts(sample: dict[str, Any], dates: dict[int, str]) -> list[dict[str, Any]]:
    """Every annotated fact: text, dia_id, session number and session date."""
    facts = []
    for key, per_speaker in (sample.get("observation") or {}).items():
        m = re.fullmatch(r"session_(\d+)_observation", key)
        if not m or not isinstance(per_speaker, dict):
            continue
        n = int(m.group(1))
        for entries in per_speaker.values():
            for entry in entries:
                if isinstance(entry, (list, tuple)) and entry and isinstance(entry[0], str):
                    dia = entry[1] if len(entry) > 1 else ""
                    dia = dia[0] if isinstance(dia, list) and dia else dia  # a few entries cite several turns
                    facts.append({"text": entry[0], "dia_id": str(dia), "session": n, "date": dates.get(n, "")})
    return facts


def kind_of(template_id: str) -> str:
    """Which input shape a prompt template takes: 'extract' | 'update' | 'generate' (by the id's middle part)."""
    for kind in OPS:
        if f".{kind}." in f".{template_id}.":
            return kind
    raise ProfileError(f"prompt template {template_id!r} is not one of the memory templates (extract/update/generate)")


def build(data: list[dict[str, Any]], templates: dict[str, str], samples: int = 3, k: int = 5, window: int = 6,
          seed: int = 0) -> dict[str, list[WorkItem]]:
    """`samples` work items per op (`templates`: op -> its prompt template id, from the bundle's manifest), drawn
    deterministically (`seed`) from the conversations."""
    from runtimes.memory.prompts import extract_messages, generate_messages, update_messages

    rng = random.Random(seed)
    windows: list[dict[str, Any]] = []  # candidate extract/update windows: turns with >= 1 annotated fact
    questions: list[dict[str, Any]] = []
    for si, sample in enumerate(data):
        sessions = _sessions(sample)
        dates = {n: d for n, d, _ in sessions}
        facts = _facts(sample, dates)
        by_dia = {}
        for f in facts:
            by_dia.setdefault(f["dia_id"], []).append(f)
        for n, date, turns in sessions:
            for start in range(0, max(len(turns) - window, 0) + 1, window):
                win = turns[start:start + window]
                wfacts = [f for t in win for f in by_dia.get(str(t.get("dia_id")), [])]
                earlier = [f for f in facts if f["session"] < n]
                if wfacts and len(earlier) >= k:
                    windows.append({"sample": si, "session": n, "date": date, "turns": win, "facts": wfacts,
                                    "earlier": earlier, "start": start})
        for qi, qa in enumerate(sample.get("qa", [])):
            if qa.get("category") in (1, 2, 3, 4) and "answer" in qa:
                ev = [f for d in qa.get("evidence", []) for f in by_dia.get(str(d), [])]
                if ev and len(facts) >= k:
                    questions.append({"sample": si, "q": qa, "evidence": ev, "facts": facts, "qi": qi})
    if not windows or not questions:
        raise ProfileError("the LoCoMo data holds no usable windows or questions (observation / qa missing?)")
    win_pick = rng.sample(windows, min(samples, len(windows)))
    q_pick = rng.sample(questions, min(samples, len(questions)))
    out: dict[str, list[WorkItem]] = {}
    for op, tpl in templates.items():
        items: list[WorkItem] = []
        kind = kind_of(tpl)
        if kind == "extract":
            for w in win_pick:
                ref = json.dumps({"facts": [f["text"] for f in w["facts"]]})
                items.append(WorkItem(op, f"conv{w['sample']}-s{w['session']}-t{w['start']}",
                                      extract_messages(w["turns"], w["date"], tpl), ref,
                                      {"turns": len(w["turns"])}))
        elif kind == "update":
            for w in win_pick:
                new = [f["text"] for f in w["facts"]]
                stored = _similar(" ".join(new), w["earlier"], k, exclude=set(new))
                memories = [{"id": i, "text": m["text"]} for i, m in enumerate(stored)]
                messages, _ = update_messages(new, memories, tpl)
                events = [{"id": str(i), "text": m["text"], "event": "NONE"} for i, m in enumerate(stored)]
                events += [{"id": str(len(stored) + j), "text": t, "event": "ADD"} for j, t in enumerate(new)]
                items.append(WorkItem(op, f"conv{w['sample']}-s{w['session']}-t{w['start']}", messages,
                                      json.dumps({"memory": events}), {"facts": len(new), "memories": len(stored)}))
        else:  # generate
            for q in q_pick:
                ev = q["evidence"][:k]
                fill = _similar(q["q"]["question"], q["facts"], k - len(ev), exclude={f["text"] for f in ev})
                mems = sorted(ev + fill, key=lambda f: f["session"])
                memories = [{"id": i, "text": f["text"], "updated_at": f["date"]} for i, f in enumerate(mems)]
                items.append(WorkItem(op, f"conv{q['sample']}-q{q['qi']}",
                                      generate_messages(q["q"]["question"], memories, tpl), str(q["q"]["answer"]),
                                      {"memories": len(memories), "category": q["q"]["category"]}))
        out[op] = items
    return out


def fixed_new_tokens(items: Sequence[WorkItem], count: Callable[[str], int]) -> int:
    """The op's fixed output length: the median token count of its items' reference outputs (at least 1)."""
    return max(1, int(round(statistics.median(count(i.reference_output) for i in items))))
