"""The memory ops under hostile model output (issue #13): every op-output parser, given any text, any JSON, deeply
nested or huge input, returns a result inside the documented bounds or raises ParseError, never anything else; an
update as large as the parser admits applies with indexed statements only (linear), and a larger one is refused
before the store is touched."""

import json
import sqlite3

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from runtimes.memory import constrain
from runtimes.memory.parse import (EVENTS, MAX_DEPTH, MAX_EVENTS, MAX_FACTS, MAX_ID_CHARS, MAX_OUTPUT_CHARS,
                                   MAX_TEXT_CHARS, ParseError, parse_extract, parse_update)
from runtimes.memory.pipeline import clean_answer
from runtimes.memory.prompts import format_memories
from runtimes.memory.store import MemoryStore

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                           HealthCheck.data_too_large])


def check_extract(text):
    """parse_extract's contract: ParseError, or at most MAX_FACTS distinct, normalised, bounded strings."""
    try:
        facts = parse_extract(text)
    except ParseError as e:
        assert str(e)
        return None
    assert isinstance(facts, list) and len(facts) <= MAX_FACTS and len(set(facts)) == len(facts)
    for f in facts:
        assert isinstance(f, str) and 0 < len(f) <= MAX_TEXT_CHARS and f == " ".join(f.split())
    return facts


def check_update(text):
    """parse_update's contract: ParseError, or at most MAX_EVENTS well-typed events inside the bounds."""
    try:
        events = parse_update(text)
    except ParseError as e:
        assert str(e)
        return None
    assert isinstance(events, list) and len(events) <= MAX_EVENTS
    for e in events:
        assert set(e) == {"id", "text", "event", "old_memory"} and e["event"] in EVENTS
        assert isinstance(e["id"], str) and len(e["id"]) <= MAX_ID_CHARS
        assert isinstance(e["text"], str) and len(e["text"]) <= MAX_TEXT_CHARS
        assert e["text"] or e["event"] in ("DELETE", "NONE")
        old = e["old_memory"]
        assert old is None or (isinstance(old, str) and 0 < len(old) <= MAX_TEXT_CHARS)
    return events


def check_all(text):
    check_extract(text)
    check_update(text)
    answer = clean_answer(text)  # generate's output is not parsed, only cleaned: never raises
    assert isinstance(answer, str) and "\n" not in answer


# ---------------------------------------------------------------------------------------------------- strategies
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=8), c,
                                                                                          max_size=5), max_leaves=40)
event_like = st.fixed_dictionaries(
    {"id": st.one_of(st.text(max_size=40), st.integers(), st.none(), st.booleans()),
     "event": st.one_of(st.sampled_from(EVENTS + ("add", " update ", "MERGE")), json_values),
     "text": st.one_of(st.text(max_size=30), st.text(alphabet="ab ", min_size=990, max_size=1100), json_values)},
    optional={"old_memory": st.one_of(st.none(), st.text(max_size=30), json_values)})
wrappers = st.sampled_from(["{}", "```json\n{}\n```", "Sure! Here:\n{}\nHope it helps.", "```\n{}",
                            '{} {{"facts": []}}', "prose {{ not json }} {}"])


def dumps(value, indent):
    return json.dumps(value, indent=indent, ensure_ascii=False)


@SETTINGS
@given(st.text(max_size=400))
def test_any_text(text):
    check_all(text)


@SETTINGS
@given(st.text(alphabet='{}[]":,\\ 0a\n', max_size=600))
def test_json_punctuation_soup(text):
    check_all(text)


@SETTINGS
@given(json_values, st.sampled_from(["facts", "memory", "other"]), wrappers, st.sampled_from([None, 1]))
def test_any_json_under_either_key(value, key, wrapper, indent):
    check_all(wrapper.replace("{}", dumps({key: value}, indent), 1))


@SETTINGS
@given(st.lists(st.text(max_size=60) | json_values, max_size=80), wrappers, st.integers(0, 400))
def test_fact_lists_whole_and_cut_off(facts, wrapper, cut):
    text = wrapper.replace("{}", dumps({"facts": facts}, None), 1)
    check_all(text)
    check_all(text[: max(0, len(text) - cut)])


@SETTINGS
@given(st.lists(event_like, max_size=80), wrappers, st.integers(0, 400))
def test_event_lists_whole_and_cut_off(events, wrapper, cut):
    text = wrapper.replace("{}", dumps({"memory": events}, None), 1)
    check_all(text)
    check_all(text[: max(0, len(text) - cut)])


@SETTINGS
@given(st.lists(st.sampled_from(["[", '{"a": ', '{"facts": ', '{"memory": [', '["]", ', '"\\"[', " "]), min_size=1,
                max_size=8),
       st.integers(1, 5000), st.sampled_from(["", "1", "]", "}", "]}", "\"x\"" + "]" * 40 + "}" * 40]), st.booleans())
def test_deeply_nested(unit, times, tail, close):
    body = "".join(unit) * times
    closer = "".join("]" if u.endswith("[") else "}" if u.startswith("{") else "" for u in reversed(unit)) * times
    check_all(body + tail + (closer if close else ""))


@SETTINGS
@given(st.sampled_from(['{"facts": ["a"', ', "b"', "{", "[", '"', "\\", "x", '{"memory": [{"id": "0", "event": "NONE"}',
                        ", " + json.dumps({"id": "1", "text": "t" * 900, "event": "ADD"}), "9", "  \n"]),
       st.integers(1, 80_000), st.sampled_from(["", "]}", "}]}", "```"]))
def test_huge_inputs(unit, times, tail):
    text = unit * times + tail
    assume(len(text) > 1000)
    check_all(text)


# ---------------------------------------------------------------------------------------------------- directed cases
@pytest.mark.parametrize("depth", [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 900, 1100, 5000, 100_000])
@pytest.mark.parametrize("opener", ["[", '{"a": '])
def test_nesting_never_escapes_as_recursion_error(depth, opener):
    for closed in (False, True):
        inner = opener * depth + "1" + ("]" if opener == "[" else "}") * depth * closed
        for text in ('{"facts": ' + inner + "}", '{"memory": [' + inner + "]}", "junk " + inner):
            check_all(text)


def test_constrained_outputs_are_inside_the_parser_bounds():
    assert constrain.MAX_TEXT <= MAX_TEXT_CHARS
    assert constrain.EXTRACT_SCHEMA["properties"]["facts"]["maxItems"] <= MAX_FACTS
    assert constrain.UPDATE_SCHEMA["properties"]["memory"]["maxItems"] <= MAX_EVENTS
    assert constrain.update_schema(10_000)["properties"]["memory"]["maxItems"] == MAX_EVENTS


# ---------------------------------------------------------------------------------------------------- the store
def embed(texts):
    out = np.zeros((len(texts), 8), dtype=np.float32)
    for i, t in enumerate(texts):
        out[i, hash(t) % 8] = 1.0
        out[i, len(t) % 8] += 0.5
    return out


def largest_update(id_map):
    """The largest update output the parser admits: MAX_EVENTS events, texts as long as allowed, within
    MAX_OUTPUT_CHARS; ADD / UPDATE / DELETE / NONE of every kind, some impossible (skipped)."""
    ids = sorted(id_map, key=int) + ["999"]  # 999: never shown
    events, n = [], 0
    while len(events) < MAX_EVENTS:
        kind = ("ADD", "UPDATE", "DELETE", "NONE", "UPDATE")[n % 5]
        text = f"event {n} " + "z" * 300 if kind in ("ADD", "UPDATE") else ""
        events.append({"id": ids[n % len(ids)] if kind != "ADD" else str(n), "text": text, "event": kind,
                       "old_memory": None})
        n += 1
    raw = json.dumps({"memory": events})
    assert len(raw) <= MAX_OUTPUT_CHARS
    return raw


@pytest.fixture
def big_store(tmp_path):
    with MemoryStore(tmp_path / "big.sqlite") as s:
        s.add([f"memory {i}" for i in range(3000)], owner="u", embed_fn=embed, now="2023-05-08T13:56:00")
        yield s


def test_largest_admitted_update_applies_with_indexed_statements_only(big_store):
    shown = big_store.all("u")[::97][:40]
    _, id_map = format_memories(shown, with_dates=False)
    events = parse_update(largest_update(id_map))
    assert len(events) == MAX_EVENTS
    statements = []
    big_store.conn.set_trace_callback(statements.append)
    res = big_store.apply_update(events, id_map, owner="u", source_turns=["D9:1"], embed_fn=embed,
                                 now="2023-06-01T10:00:00", batch="big")
    big_store.conn.set_trace_callback(None)
    assert res.changed + res.unchanged + len(res.skipped) == MAX_EVENTS and res.added and res.updated and res.deleted
    assert res.skipped  # unknown ids, UPDATE / DELETE of what this call already deleted
    # A fixed number of statements per event ...
    assert len(statements) <= 3 * MAX_EVENTS + 2
    # ... each a look-up by row id or by text: nothing scans the memories, or all of one owner's (the duplicate
    # check of every ADD did, which made the cost quadratic).
    plans = set()
    for sql in {s for s in statements if s.split()[0] in ("SELECT", "UPDATE", "DELETE", "INSERT")}:
        for row in big_store.conn.execute("EXPLAIN QUERY PLAN " + sql):
            plans.add(row[-1])
    assert plans == {"SEARCH memories USING INTEGER PRIMARY KEY (rowid=?)",
                     "SEARCH memories USING INDEX memories_text (text=?)"}


def test_an_update_of_fifty_thousand_events_is_refused_before_the_store(big_store, tmp_path):
    _, id_map = format_memories(big_store.all("u")[:10], with_dates=False)
    raw = json.dumps({"memory": [{"id": str(i % 10), "text": f"t{i}", "event": "UPDATE"} for i in range(50_000)]})
    with pytest.raises(ParseError, match="at most"):
        parse_update(raw)
    # Even a JSON document within the length bound but over the event bound never reaches apply_update.
    raw = json.dumps({"memory": [{"id": "0", "event": "NONE"}] * (MAX_EVENTS + 1)})
    assert len(raw) < MAX_OUTPUT_CHARS
    with pytest.raises(ParseError, match=f"at most {MAX_EVENTS}"):
        parse_update(raw)


def test_many_direct_adds_apply_in_linear_statements(tmp_path):
    """`add` (seeding) is not bounded by the parser; it stays two indexed writes + one look-up per memory."""
    with MemoryStore(tmp_path / "seed.sqlite") as s:
        statements = []
        s.conn.set_trace_callback(statements.append)
        res = s.add([f"seed {i}" for i in range(20_000)] + ["seed 7"], owner="u", embed_fn=embed)
        s.conn.set_trace_callback(None)
        assert len(res.added) == 20_000 and len(res.skipped) == 1
        assert len(statements) <= 3 * 20_001 + 2
        con = sqlite3.connect(tmp_path / "seed.sqlite")
        assert con.execute("SELECT COUNT(*) FROM history").fetchone()[0] == 20_000
        con.close()
