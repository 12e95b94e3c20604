"""LoCoMo-format conversations (see ../shared/data/README.md; CC BY-NC 4.0, read in place, never copied):
sessions in order, extraction windows with their gold `observation` facts, QA pairs, and the conversation split.

Split: a JSON file {"train": [sample_id, ...], "val": [...]} when given (the training data's split), else by
conversation index: the last `VAL_COUNT` conversations of the file are validation, the rest training. Always by
conversation, never by question.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

DEFAULT_DATA = Path("..") / "shared" / "data" / "locomo_dev.json"
VAL_COUNT = 2
WINDOW = 6
QA_CATEGORIES = (1, 2, 3, 4)
CATEGORY_NAMES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
_SESSION = re.compile(r"^session_(\d+)$")


@dataclass
class Session:
    index: int
    date: str
    turns: list[dict[str, Any]]


@dataclass
class Window:
    session: int
    date: str
    turns: list[dict[str, Any]]
    gold_facts: list[str] = field(default_factory=list)

    @property
    def dia_ids(self) -> list[str]:
        return [str(t["dia_id"]) for t in self.turns]


@dataclass
class Conversation:
    sample_id: str
    speakers: tuple[str, str]
    sessions: list[Session]
    qa: list[dict[str, Any]]
    observations: dict[str, list[str]]  # dia_id -> facts stated there

    def windows(self, size: int = WINDOW) -> Iterator[Window]:
        """Consecutive windows of `size` turns inside each session (a window never spans two sessions)."""
        for s in self.sessions:
            for i in range(0, len(s.turns), size):
                turns = s.turns[i:i + size]
                gold: list[str] = []
                for t in turns:
                    for f in self.observations.get(str(t["dia_id"]), []):
                        if f not in gold:
                            gold.append(f)
                yield Window(session=s.index, date=s.date, turns=turns, gold_facts=gold)

    def questions(self, categories: tuple[int, ...] = QA_CATEGORIES,
                  sessions: set[int] | None = None) -> list[dict[str, Any]]:
        """QA pairs of `categories`; with `sessions`, only those whose evidence turns all lie in those sessions
        (a slice of the conversation is asked only what it contains)."""
        out = [q for q in self.qa if q.get("category") in categories and "answer" in q]
        if sessions is not None:
            out = [q for q in out if (ev := evidence_sessions(q)) and ev <= sessions]
        return out


_EVIDENCE = re.compile(r"D(\d+):\d+")


def evidence_sessions(q: dict[str, Any]) -> set[int]:
    """Session numbers of a question's evidence turns ("D3:5" is session 3); empty when it has none."""
    return {int(m.group(1)) for e in q.get("evidence") or [] for m in _EVIDENCE.finditer(str(e))}


def load(path: str | Path) -> list[Conversation]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"LoCoMo data not found: {p} (pass --data PATH)")
    try:
        raw = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not JSON: {e}") from e
    if not isinstance(raw, list) or not raw or not all(isinstance(s, dict) and "conversation" in s for s in raw):
        raise ValueError(f"{p}: expected a list of LoCoMo samples with 'conversation'")
    return [parse_sample(s, n) for n, s in enumerate(raw)]


def parse_sample(s: dict[str, Any], n: int = 0) -> Conversation:
    c = s["conversation"]
    sessions = []
    for key, turns in c.items():
        m = _SESSION.match(key)
        if m and isinstance(turns, list) and turns:
            i = int(m.group(1))
            sessions.append(Session(index=i, date=str(c.get(f"session_{i}_date_time", "")), turns=turns))
    sessions.sort(key=lambda x: x.index)
    obs: dict[str, list[str]] = {}
    for per_session in (s.get("observation") or {}).values():
        for facts in per_session.values():
            for fact, dia in facts:
                for d in dia if isinstance(dia, list) else [dia]:
                    obs.setdefault(str(d), []).append(fact)
    return Conversation(sample_id=str(s.get("sample_id", f"conv-{n}")), speakers=(c.get("speaker_a", "A"), c.get("speaker_b", "B")),
                        sessions=sessions, qa=list(s.get("qa", [])), observations=obs)


def split(convs: list[Conversation], which: str, split_file: str | Path | None = None) -> list[Conversation]:
    """'all', 'train' or 'val' (see the module docstring)."""
    if which == "all":
        return convs
    if which not in ("train", "val"):
        raise ValueError(f"split must be all, train or val, got {which!r}")
    if split_file:
        ids = set(json.loads(Path(split_file).read_text())[which])
        return [c for c in convs if c.sample_id in ids]
    cut = max(len(convs) - VAL_COUNT, 1) if len(convs) > 1 else 0
    return convs[cut:] if which == "val" else convs[:cut]
