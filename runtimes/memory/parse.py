"""Parse the model's JSON for extract and update: tolerant where it is safe, strict where it matters, bounded.

Tolerated (the JSON itself is unchanged by them): a Markdown code fence around it, prose before or after it, an
integer id where a string id is expected, lower-case event names, surrounding whitespace in strings, exact
duplicate facts. Refused with `ParseError` (and so nothing is applied): no JSON object, truncated JSON, a missing
or mistyped key, an unknown event, an ADD/UPDATE without text, non-string facts. One bad item rejects the whole
update: a half-understood update is not applied in part.

Bounded, so that no model output, however long or deep, costs more than linear time or escapes as anything but
`ParseError` (each limit is named in the message): the output's length (`MAX_OUTPUT_CHARS`), how deep the JSON
nests (`MAX_DEPTH`, checked before decoding: the decoder recurses), how many `{` are tried as the start of the JSON
(`MAX_CANDIDATES`), an integer's length (`MAX_INT_CHARS`), facts per extract (`MAX_FACTS`), events per update
(`MAX_EVENTS`), a fact's / text's / old_memory's length after whitespace normalisation (`MAX_TEXT_CHARS`), an
id's length (`MAX_ID_CHARS`). The JSON-schema constraint (constrain.py) stays well inside them. Lengths count code
points.
"""

from __future__ import annotations

import json
import re
from typing import Any

EVENTS = ("ADD", "UPDATE", "DELETE", "NONE")
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)(?:```|$)", re.S)

MAX_OUTPUT_CHARS = 32_768
"""A model output longer than this is refused unread (the ops write a few hundred tokens)."""
MAX_DEPTH = 32
"""Arrays / objects nested deeper than this are refused (the ops' JSON nests 3 deep)."""
MAX_CANDIDATES = 16
"""At most this many `{` of an output (of the fenced block, then of the whole output) are tried as the JSON's start."""
MAX_INT_CHARS = 64
"""A JSON integer literal longer than this is refused (Python would refuse one of 4300 digits with a ValueError)."""
MAX_FACTS = 64
"""Facts per extract output (the constrained schema allows 12)."""
MAX_EVENTS = 64
"""Events per update output (the constrained schema allows one per id in play, at most this)."""
MAX_TEXT_CHARS = 1_000
"""A fact, an event's text or old_memory, after whitespace normalisation (the constrained schema allows 300)."""
MAX_ID_CHARS = 32
"""An event's id (the temporary ids are "0", "1", ...)."""

_OUT_OF_STRING = re.compile(r'["{}\[\]]')
_IN_STRING = re.compile(r'["\\]')


class ParseError(ValueError):
    """The model output is not usable for this op; the message says why in a few words."""


def _too_deep(body: str, start: int) -> bool:
    """Whether the JSON value that starts at `body[start]` nests deeper than MAX_DEPTH before it closes: strings and
    brackets tracked as the decoder reads them (where the text stops being JSON the decoder stops too, never deeper
    than this scan), so decoding a value that passes cannot recurse more than MAX_DEPTH levels."""
    depth, i, n = 0, start, len(body)
    while i < n:
        m = _OUT_OF_STRING.search(body, i)
        if m is None:
            return False
        c, i = m.group(), m.end()
        if c == '"':
            while True:  # to the end of the string
                m = _IN_STRING.search(body, i)
                if m is None:
                    return False
                if m.group() == '"':
                    i = m.end()
                    break
                i = m.end() + 1  # a backslash escapes the next character
        elif c in "{[":
            depth += 1
            if depth > MAX_DEPTH:
                return True
        else:
            depth -= 1
            if depth <= 0:
                return False
    return False


class _IntTooLong(Exception):
    pass


def _parse_int(s: str) -> int:
    if len(s) > MAX_INT_CHARS:
        raise _IntTooLong(len(s))
    return int(s)


_DECODER = json.JSONDecoder(parse_int=_parse_int)


def _first_object(body: str) -> tuple[dict[str, Any] | None, bool]:
    """The first JSON object in `body` that decodes (None if none does), and whether candidates were left untried
    (MAX_CANDIDATES); raises ParseError when the first candidate is cut off."""
    first = True
    tried = 0
    i = body.find("{")
    while i >= 0:
        if tried == MAX_CANDIDATES:
            return None, True
        tried += 1
        if _too_deep(body, i):
            raise ParseError(f"JSON nested deeper than {MAX_DEPTH} levels")
        try:
            value, _ = _DECODER.raw_decode(body, i)
            return value, False
        except _IntTooLong as e:
            raise ParseError(f"JSON integer of {e.args[0]} characters (at most {MAX_INT_CHARS})") from None
        except json.JSONDecodeError as e:
            if first and (e.pos >= len(body.rstrip()) or e.msg.startswith("Unterminated string")):
                raise ParseError("truncated JSON") from None
        first = False
        i = body.find("{", i + 1)
    return None, False


def _object(text: str) -> dict[str, Any]:
    if not isinstance(text, str):
        raise ParseError(f"expected text, got {type(text).__name__}")
    if len(text) > MAX_OUTPUT_CHARS:
        raise ParseError(f"output of {len(text)} characters (at most {MAX_OUTPUT_CHARS})")
    m = _FENCE.search(text)
    capped = False
    for body in ([m.group(1)] if m else []) + [text]:
        value, left = _first_object(body)
        if value is not None:
            return value
        capped = capped or left
    if capped:
        raise ParseError(f"no JSON object in the output (only the first {MAX_CANDIDATES} '{{' are tried)")
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
    if len(facts) > MAX_FACTS:
        raise ParseError(f"'facts' has {len(facts)} items (at most {MAX_FACTS})")
    out: list[str] = []
    seen: set[str] = set()
    for f in facts:
        if not isinstance(f, str):
            raise ParseError(f"a fact is a {type(f).__name__}, not a string")
        f = _clean(f)
        if len(f) > MAX_TEXT_CHARS:
            raise ParseError(f"a fact of {len(f)} characters (at most {MAX_TEXT_CHARS})")
        if f and f not in seen:
            seen.add(f)
            out.append(f)
    return out


def parse_update(text: str) -> list[dict[str, Any]]:
    """`{"memory": [{"id", "text", "event", "old_memory"}, ...]}` -> events with id:str, text:str, event in EVENTS,
    old_memory:str|None."""
    items = _top(text, "memory")
    if not isinstance(items, list):
        raise ParseError(f"'memory' is a {type(items).__name__}, not a list")
    if len(items) > MAX_EVENTS:
        raise ParseError(f"'memory' has {len(items)} items (at most {MAX_EVENTS})")
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
        mid = str(mid).strip()
        if len(mid) > MAX_ID_CHARS:
            raise ParseError(f"memory item {n}: id of {len(mid)} characters (at most {MAX_ID_CHARS})")
        text_ = item.get("text", "")
        if not isinstance(text_, str):
            raise ParseError(f"memory item {n}: text is a {type(text_).__name__}, not a string")
        text_ = _clean(text_)
        if event in ("ADD", "UPDATE") and not text_:
            raise ParseError(f"memory item {n}: {event} without text")
        if len(text_) > MAX_TEXT_CHARS:
            raise ParseError(f"memory item {n}: text of {len(text_)} characters (at most {MAX_TEXT_CHARS})")
        old = item.get("old_memory")
        if old is not None and not isinstance(old, str):
            raise ParseError(f"memory item {n}: old_memory is a {type(old).__name__}, not a string")
        old = _clean(old) if isinstance(old, str) and old.strip() else None
        if old is not None and len(old) > MAX_TEXT_CHARS:
            raise ParseError(f"memory item {n}: old_memory of {len(old)} characters (at most {MAX_TEXT_CHARS})")
        out.append({"id": mid, "text": text_, "event": event, "old_memory": old})
    return out
