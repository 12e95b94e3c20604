"""Parsing of extract / update outputs: tolerant of wrapping (fences, prose), strict on the JSON's shape, bounded."""

import pytest

from runtimes.memory.parse import MAX_EVENTS, MAX_FACTS, MAX_TEXT_CHARS, ParseError, parse_extract, parse_update


@pytest.mark.parametrize("text, facts", [
    ('{"facts": ["Caroline went to a support group", "Melanie has two kids"]}',
     ["Caroline went to a support group", "Melanie has two kids"]),
    ('```json\n{"facts": ["Caroline paints"]}\n```', ["Caroline paints"]),
    ('Here are the facts:\n{"facts": ["A", "B"]}\nHope this helps! {"x": 1}', ["A", "B"]),
    ('{"facts": ["  Caroline   likes  hiking ", "", "Caroline likes hiking"]}', ["Caroline likes hiking"]),
    ('{"facts": []}', []),
    ('```\n{"facts": ["fenced without a language"]}', ["fenced without a language"]),
])
def test_extract_accepts(text, facts):
    assert parse_extract(text) == facts


@pytest.mark.parametrize("text, reason", [
    ('{"facts": ["Caroline went to', "truncated JSON"),
    ("Caroline went to a support group.", "no JSON object"),
    ('{"fact": ["x"]}', "no 'facts' key"),
    ('{"facts": "Caroline paints"}', "not a list"),
    ('{"facts": ["ok", 3]}', "not a string"),
    ("{'facts': ['single quotes are not JSON']}", "no JSON object"),
    ('["a bare list"]', "no JSON object"),
])
def test_extract_refuses(text, reason):
    with pytest.raises(ParseError, match=reason):
        parse_extract(text)


def test_update_normalises_safe_variants():
    out = parse_update('Sure.\n```json\n{"memory": [{"id": 0, "text": "Caroline moved to Denver", "event": "update", '
                       '"old_memory": "Caroline lives in Boston"}, {"id": "1", "text": "", "event": "DELETE"}, '
                       '{"id": "2", "text": "Melanie paints", "event": "NONE", "old_memory": ""}]}\n```')
    assert out == [
        {"id": "0", "text": "Caroline moved to Denver", "event": "UPDATE", "old_memory": "Caroline lives in Boston"},
        {"id": "1", "text": "", "event": "DELETE", "old_memory": None},
        {"id": "2", "text": "Melanie paints", "event": "NONE", "old_memory": None},
    ]


@pytest.mark.parametrize("text, reason", [
    ('{"memory": [{"id": "0", "text": "x", "event": "MERGE"}]}', "event 'MERGE'"),
    ('{"memory": [{"id": "0", "text": "x"}]}', "event None"),
    ('{"memory": [{"id": "0", "text": "", "event": "ADD"}]}', "ADD without text"),
    ('{"memory": [{"id": "0", "text": "  ", "event": "UPDATE"}]}', "UPDATE without text"),
    ('{"memory": [{"id": null, "text": "x", "event": "ADD"}]}', "id None"),
    ('{"memory": [{"id": true, "text": "x", "event": "ADD"}]}', "id True"),
    ('{"memory": [{"id": "0", "text": ["x"], "event": "ADD"}]}', "text is a list"),
    ('{"memory": [{"id": "0", "text": "x", "event": "UPDATE", "old_memory": 5}]}', "old_memory is a int"),
    ('{"memory": ["Caroline moved"]}', "item 0 is a str"),
    ('{"memory": {"id": "0"}}', "not a list"),
    ('{"memory": [{"id": "0", "text": "ok", "event": "ADD"}, {"id": "1", "text": "x", "event": "?"}]}', "item 1"),
    ('{"memory": [{"id": "0", "text": "Caroline', "truncated JSON"),
    ('{"facts": ["x"]}', "no 'memory' key"),
])
def test_update_refuses_whole_output(text, reason):
    with pytest.raises(ParseError, match=reason):
        parse_update(text)


EV = '{"id": "0", "text": "x", "event": "DELETE"}'


@pytest.mark.parametrize("parse, text, reason", [
    (parse_update, '{"memory": [' + ", ".join([EV] * 50_000) + "]}", r"output of 2250012 characters \(at most 32768\)"),
    (parse_update, '{"memory": [' + ", ".join([EV] * (MAX_EVENTS + 1)) + "]}", r"'memory' has 65 items \(at most 64\)"),
    (parse_extract, '{"facts": [' + ", ".join(['"a"'] * (MAX_FACTS + 1)) + "]}",
     r"'facts' has 65 items \(at most 64\)"),
    (parse_extract, '{"facts": ["' + "word " * 200 + 'w"]}', r"a fact of 1001 characters \(at most 1000\)"),
    (parse_update, '{"memory": [{"id": "0", "text": "' + "y" * 1001 + '", "event": "ADD"}]}',
     r"memory item 0: text of 1001 characters"),
    (parse_update, '{"memory": [{"id": "0", "text": "x", "event": "UPDATE", "old_memory": "' + "y" * 1001 + '"}]}',
     r"memory item 0: old_memory of 1001 characters"),
    (parse_update, '{"memory": [{"id": "' + "7" * 33 + '", "event": "NONE"}]}', r"memory item 0: id of 33 characters"),
    (parse_extract, '{"facts": ' + "[" * 100_000, r"output of 100010 characters"),
    (parse_extract, '{"facts": ' + "[" * 30_000, r"JSON nested deeper than 32 levels"),
    (parse_extract, '{"facts": ' + "[" * 32 + "]" * 32 + "}", r"JSON nested deeper than 32 levels"),
    (parse_update, '{"memory": [{"id": "0", "text": ' + '{"a": ' * 40 + "1" + "}" * 40 + "}]}", "nested deeper"),
    (parse_extract, '{"facts": ' + '["]", ' * 40, "nested deeper"),  # brackets inside strings do not close anything
    (parse_extract, '{"facts": [' + "9" * 5000 + "]}", r"JSON integer of 5000 characters \(at most 64\)"),
    (parse_extract, "{ x } " * 16 + '{"facts": ["late"]}', r"no JSON object in the output \(only the first 16 '\{'"),
])
def test_bounds_refuse_with_parse_error(parse, text, reason):
    with pytest.raises(ParseError, match=reason):
        parse(text)


def test_bounds_admit_what_they_name():
    assert parse_extract('{"facts": [' + ", ".join(f'"fact {i}"' for i in range(MAX_FACTS)) + "]}")[-1] == "fact 63"
    assert len(parse_update('{"memory": [' + ", ".join([EV] * MAX_EVENTS) + "]}")) == MAX_EVENTS
    assert parse_extract('{"facts": ["' + "y" * MAX_TEXT_CHARS + '"]}') == ["y" * MAX_TEXT_CHARS]
    # Whitespace is normalised first: 1,500 characters of which 1,000 remain.
    assert parse_extract('{"facts": ["' + "y   " * 250 + "y" * 249 + '"]}')[0].count("y") == 499
    with pytest.raises(ParseError, match="a fact is a list"):
        parse_extract('{"facts": ' + "[" * 31 + "]" * 31 + "}")  # 32 levels with the object: allowed, then typed
    assert parse_extract("{ x } " * 15 + '{"facts": ["late"]}') == ["late"]
    assert parse_update('{"memory": [{"id": ' + "7" * 32 + ', "event": "NONE"}]}')[0]["id"] == "7" * 32
    assert parse_extract("pad " * 8000 + '{"facts": ["end"]}') == ["end"]  # 32,018 characters
