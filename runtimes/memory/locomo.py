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


class DataError(ValueError):
    """LoCoMo-format data or a split file that cannot be used; the message names the file and the field."""


def _read_json(p: Path, what: str) -> Any:
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: {what} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise DataError(f"{p}: cannot read {what}: {e.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{p}: {what} is not JSON: {e}") from None
    except RecursionError:
        raise DataError(f"{p}: {what} is nested too deeply") from None


def load(path: str | Path) -> list[Conversation]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"LoCoMo data not found: {p} (pass --data PATH)")
    raw = _read_json(p, "LoCoMo data")
    if not isinstance(raw, list) or not raw:
        raise DataError(f"{p}: expected a non-empty list of LoCoMo samples, got {type(raw).__name__}")
    convs = []
    for n, s in enumerate(raw):
        try:
            convs.append(parse_sample(s, n))
        except DataError as e:
            raise DataError(f"{p}: {e}") from None
    ids = [c.sample_id for c in convs]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise DataError(f"{p}: sample_id {dup[0]!r} appears more than once")
    return convs


def _want(cond: bool, where: str, expected: str, value: Any) -> None:
    if not cond:
        shown = repr(value)
        raise DataError(f"{where}: expected {expected}, got {shown[:60] + '...' if len(shown) > 60 else shown}")


def _scalar(v: Any) -> bool:
    return isinstance(v, (str, int, float)) and not isinstance(v, bool)


def parse_sample(s: Any, n: int = 0) -> Conversation:
    """One LoCoMo sample, with every field the pipeline reads checked for its type (DataError names the field)."""
    _want(isinstance(s, dict), f"sample {n}", "an object", s)
    sid = s.get("sample_id", f"conv-{n}")
    _want(_scalar(sid) and str(sid) != "", f"sample {n}: sample_id", "a string", sid)
    where = f"sample {n} ({sid})"
    c = s.get("conversation")
    _want(isinstance(c, dict), f"{where}: conversation", "an object", c)
    for k in ("speaker_a", "speaker_b"):
        _want(isinstance(c.get(k, ""), str), f"{where}: conversation.{k}", "a string", c.get(k))
    sessions = []
    for key, turns in c.items():
        m = _SESSION.match(key)
        if not m:
            continue
        _want(isinstance(turns, list), f"{where}: conversation.{key}", "a list of turns", turns)
        for j, t in enumerate(turns):
            tw = f"{where}: conversation.{key}[{j}]"
            _want(isinstance(t, dict), tw, "a turn object", t)
            _want("dia_id" in t and _scalar(t["dia_id"]) and str(t["dia_id"]) != "", f"{tw}.dia_id", "a string id",
                  t.get("dia_id"))
            _want(isinstance(t.get("speaker"), str), f"{tw}.speaker", "a string", t.get("speaker"))
            _want(isinstance(t.get("text", ""), str), f"{tw}.text", "a string", t.get("text"))
            _want(isinstance(t.get("blip_caption") or "", str), f"{tw}.blip_caption", "a string", t.get("blip_caption"))
            _want(isinstance(t.get("image", ""), str), f"{tw}.image", "an image file path", t.get("image"))
        if turns:
            i = int(m.group(1))
            date = c.get(f"session_{i}_date_time", "")
            _want(_scalar(date), f"{where}: conversation.session_{i}_date_time", "a string", date)
            sessions.append(Session(index=i, date=str(date), turns=turns))
    sessions.sort(key=lambda x: x.index)
    qa = s.get("qa", [])
    _want(isinstance(qa, list), f"{where}: qa", "a list", qa)
    for j, q in enumerate(qa):
        qw = f"{where}: qa[{j}]"
        _want(isinstance(q, dict), qw, "an object", q)
        _want(isinstance(q.get("question"), str), f"{qw}.question", "a string", q.get("question"))
        if "answer" in q:
            _want(_scalar(q["answer"]), f"{qw}.answer", "a string or number", q["answer"])
        _want(isinstance(q.get("category"), int) and not isinstance(q.get("category"), bool), f"{qw}.category",
              "an integer", q.get("category"))
        _want(isinstance(q.get("evidence") or [], list), f"{qw}.evidence", "a list of dia_ids", q.get("evidence"))
    obs: dict[str, list[str]] = {}
    observation = s.get("observation") or {}
    _want(isinstance(observation, dict), f"{where}: observation", "an object", observation)
    for sk, per_session in observation.items():
        _want(isinstance(per_session, dict), f"{where}: observation.{sk}", "an object", per_session)
        for spk, facts in per_session.items():
            fw = f"{where}: observation.{sk}.{spk}"
            _want(isinstance(facts, list), fw, "a list of [fact, dia_id] pairs", facts)
            for item in facts:
                _want(isinstance(item, list) and len(item) == 2 and isinstance(item[0], str), fw,
                      "[fact, dia_id] pairs", item)
                fact, dia = item
                for d in dia if isinstance(dia, list) else [dia]:
                    _want(_scalar(d), fw, "dia_ids", d)
                    obs.setdefault(str(d), []).append(fact)
    return Conversation(sample_id=str(sid), speakers=(c.get("speaker_a", "A"), c.get("speaker_b", "B")),
                        sessions=sessions, qa=list(qa), observations=obs)


def split(convs: list[Conversation], which: str, split_file: str | Path | None = None) -> list[Conversation]:
    """'all', 'train' or 'val' (see the module docstring)."""
    if which == "all":
        return convs
    if which not in ("train", "val"):
        raise ValueError(f"split must be all, train or val, got {which!r}")
    if split_file:
        p = Path(split_file)
        if not p.is_file():
            raise DataError(f"split file not found: {p}")
        raw = _read_json(p, "split file")
        _want(isinstance(raw, dict) and which in raw, f"{p}", f'an object with a "{which}" list of sample_ids', raw)
        ids = raw[which]
        _want(isinstance(ids, list) and all(isinstance(i, str) for i in ids), f"{p}: {which}",
              "a list of sample_id strings", ids)
        return [c for c in convs if c.sample_id in set(ids)]
    cut = max(len(convs) - VAL_COUNT, 1) if len(convs) > 1 else 0
    return convs[cut:] if which == "val" else convs[:cut]
