"""Parsing of extract / update outputs: tolerant of wrapping (fences, prose), strict on the JSON's shape."""

import pytest

from runtimes.memory.parse import ParseError, parse_extract, parse_update


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
