"""What the model sees: turns, facts and memories rendered as text for the versioned templates of runtimes.prompts.

Memories are shown with temporary integer ids "0", "1", ... (never the store's row ids); the returned `id_map`
maps them back for `MemoryStore.apply_update`. Training data, the pipeline and the Android test vectors all go
through these functions, so a change of layout here is a change of template (new id in runtimes/prompts.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Iterable, Mapping, Sequence

from .. import prompts as _templates
from ..chat import OpPrompt

NO_MEMORIES = "(none)"
LOCOMO_DATE_FORMATS = ("%I:%M %p on %d %B, %Y", "%I:%M %p on %d %b, %Y", "%d %B %Y", "%d %B, %Y", "%Y-%m-%d")


def parse_date(value: str | dt.datetime | dt.date) -> dt.datetime | None:
    """A LoCoMo session date ("1:56 pm on 8 May, 2023"), an ISO string or a datetime; None when unreadable."""
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    s = str(value).strip()
    try:
        return dt.datetime.fromisoformat(s)
    except ValueError:
        pass
    for fmt in LOCOMO_DATE_FORMATS:
        try:
            return dt.datetime.strptime(s, fmt)
        except ValueError:
            continue
    return None


def to_iso(value: str | dt.datetime | dt.date) -> str:
    """The store's timestamp form (ISO 8601, seconds); an unreadable date is kept verbatim."""
    d = parse_date(value)
    return d.isoformat(timespec="seconds") if d else str(value)


def display_date(value: str | dt.datetime | None) -> str:
    """'8 May 2023' — the date shown next to a memory in the generate prompt."""
    if value is None:
        return "unknown date"
    d = parse_date(value)
    return f"{d.day} {d.strftime('%B %Y')}" if d else str(value)


def _get(m: Any, key: str, default: Any = None) -> Any:
    return m.get(key, default) if isinstance(m, Mapping) else getattr(m, key, default)


def format_turns(turns: Iterable[Mapping[str, Any]]) -> str:
    """'Speaker: text' per turn; a shared photo is described by its caption (LoCoMo's blip_caption), or marked
    "[shares a photo]" when its pixels are kept instead (MemLoRA-V)."""
    lines = []
    for t in turns:
        text = " ".join(str(t.get("text", "")).split())
        caption = t.get("blip_caption")
        if caption:
            text = f"{text} [shares a photo: {caption}]".strip()
        elif t.get("shared_image") or t.get("image") is not None:  # kept as pixels (MemLoRA-V), no caption
            text = f"{text} [shares a photo]".strip()
        lines.append(f"{t['speaker']}: {text}")
    return "\n".join(lines)


def format_facts(facts: Sequence[str]) -> str:
    return "\n".join(f"- {f}" for f in facts) if facts else NO_MEMORIES


def format_memories(memories: Sequence[Any], with_dates: bool) -> tuple[str, dict[str, int]]:
    """(text, id_map). Without dates (update prompt): '0: text' lines, temporary ids in order. With dates (generate
    prompt): '[8 May 2023] text' lines, oldest first as given. `memories` are store `Memory` rows or dicts with
    `id`, `text` and optionally `updated_at`; `id_map` maps each temporary id to the row id."""
    id_map: dict[str, int] = {}
    lines = []
    for i, m in enumerate(memories):
        id_map[str(i)] = _get(m, "id")
        text = " ".join(str(_get(m, "text", "")).split())
        if with_dates:
            lines.append(f"[{display_date(_get(m, 'updated_at') or _get(m, 'created_at'))}] {text}")
        else:
            lines.append(f"{i}: {text}")
    return ("\n".join(lines) if lines else NO_MEMORIES), id_map


def render(template: str | OpPrompt, **fields: str) -> list[dict[str, str]]:
    """A bundle's own prompt (schema 2: the text it was exported with) or a built-in template by id."""
    return template.messages(**fields) if isinstance(template, OpPrompt) else _templates.render(template, **fields)


def extract_messages(turns: Sequence[Mapping[str, Any]], date: str,
                     template: str | OpPrompt = "memlora.extract.v1") -> list[dict[str, str]]:
    return render(template, date=str(date), turns=format_turns(turns))


def update_messages(facts: Sequence[str], memories: Sequence[Any], template: str | OpPrompt = "memlora.update.v1"
                    ) -> tuple[list[dict[str, str]], dict[str, int]]:
    text, id_map = format_memories(memories, with_dates=False)
    return render(template, memories=text, facts=format_facts(facts)), id_map


def generate_messages(question: str, memories: Sequence[Any],
                      template: str | OpPrompt = "memlora.generate.v1") -> list[dict[str, str]]:
    text, _ = format_memories(memories, with_dates=True)
    return render(template, memories=text, question=question.strip())
