"""Parse the model's JSON for extract and update: tolerant where it is safe, strict where it matters.

Tolerated (the JSON itself is unchanged by them): a Markdown code fence around it, prose before or after it, an
integer id where a string id is expected, lower-case event names, surrounding whitespace in strings, exact
duplicate facts. Refused with `ParseError` (and so nothing is applied): no JSON object, truncated JSON, a missing
or mistyped key, an unknown event, an ADD/UPDATE without text, non-string facts. One bad item rejects the whole
update: a half-understood update is not applied in part.
"""

from __future__ import annotations

import json
import re
from typing import Any

EVENTS = ("ADD", "UPDATE", "DELETE", "NONE")
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)(?:```|$)", re.S)


class ParseError(ValueError):
    """The model output is not usable for this op; the message says why in a few words."""


def _first_object(body: str) -> dict[str, Any] | None:
    """The first JSON object in `body` that decodes; raises ParseError when the first candidate is cut off."""
    dec = json.JSONDecoder()
    first = True
    for i, ch in enumerate(body):
        if ch != "{":
            continue
        try:
            value, _ = dec.raw_decode(body, i)
            return value
        except json.JSONDecodeError as e:
            if first and (e.pos >= len(body.rstrip()) or e.msg.startswith("Unterminated string")):
                raise ParseError("truncated JSON") from None
        first = False
    return None


def _object(text: str) -> dict[str, Any]:
    if not isinstance(text, str):
        raise ParseError(f"expected text, got {type(text).__name__}")
    m = _FENCE.search(text)
    for body in ([m.group(1)] if m else []) + [text]:
        value = _first_object(body)
        if value is not None:
            return value
    raise ParseError("no JSON object in the output")


def _top(text: str, key: str) -> Any:
    value = _object(text)
    if key not in value:
        raise ParseError(f"JSON object has no {key!r} key (keys: {sorted(value)[:5]})")
    return value[key]


def _clean(s: str) -> str:
    return " ".join(s.split())


def parse_extract(text: str) -> list[str]:
    """`{"facts": [str, ...]}` -> the facts (whitespace-normalised, empty and duplicate ones dropped)."""
    facts = _top(text, "facts")
    if not isinstance(facts, list):
        raise ParseError(f"'facts' is a {type(facts).__name__}, not a list")
    out: list[str] = []
    for f in facts:
        if not isinstance(f, str):
            raise ParseError(f"a fact is a {type(f).__name__}, not a string")
        f = _clean(f)
        if f and f not in out:
            out.append(f)
    return out


def parse_update(text: str) -> list[dict[str, Any]]:
    """`{"memory": [{"id", "text", "event", "old_memory"}, ...]}` -> events with id:str, text:str, event in EVENTS,
    old_memory:str|None."""
    items = _top(text, "memory")
    if not isinstance(items, list):
        raise ParseError(f"'memory' is a {type(items).__name__}, not a list")
    out = []
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise ParseError(f"memory item {n} is a {type(item).__name__}, not an object")
        event = item.get("event")
        if not isinstance(event, str) or event.strip().upper() not in EVENTS:
            raise ParseError(f"memory item {n}: event {event!r} is not one of {list(EVENTS)}")
        event = event.strip().upper()
        mid = item.get("id")
        if isinstance(mid, bool) or not isinstance(mid, (str, int)):
            raise ParseError(f"memory item {n}: id {mid!r} is not a string")
        text_ = item.get("text", "")
        if not isinstance(text_, str):
            raise ParseError(f"memory item {n}: text is a {type(text_).__name__}, not a string")
        text_ = _clean(text_)
        if event in ("ADD", "UPDATE") and not text_:
            raise ParseError(f"memory item {n}: {event} without text")
        old = item.get("old_memory")
        if old is not None and not isinstance(old, str):
            raise ParseError(f"memory item {n}: old_memory is a {type(old).__name__}, not a string")
        out.append({"id": str(mid).strip(), "text": text_, "event": event,
                    "old_memory": _clean(old) if isinstance(old, str) and old.strip() else None})
    return out
