"""Text and parsing vectors: str.isspace, json raw_decode, the memory output parsers, the embedder's WordPiece."""

from __future__ import annotations

import json
from typing import Any, Callable

from .common import _jsonable


def text_vectors() -> dict[str, Any]:
    return {"isspace": [c for c in range(0x110000) if chr(c).isspace()]}


JSON_DOCS = [
    '{"facts": ["a", "b"]}', '{"facts": []}', '{}', '[]', '{"a": 1}x', '{"a": [1, 2.5, -3e2, true, false, null]}',
    '{"a" 1}', '{"a":1 "b":2}', '{a:1}', '{"a":}', '{"a":1,}', '[1,]', '[1 2]', '{', '[', '{"a"', '{"a":', '{"a":1',
    '{"a":1,', '{"a": tru}', '"abc', '"a\\q"', '"a\x01b"', '"\\u12"', '"\\u12G4"', '"\\ud83d\\ude00"', '"\\ud800"',
    '"\\ud800\\u12"', '{"a": NaN, "b": Infinity, "c": -Infinity}', '123456789012345678901234567890', '-0', '01',
    '1.', '1.5e', '{"k": "caf\\u00e9 \\"q\\" \\\\ \\/ \\b\\f\\n\\r\\t"}', '{"a":{"b":{"c":[{}]}}}', '  {"a": 1}',
    '{"a": 1, "a": 2}', '{"é": "ü", "😀": "x"}', '{"memory": [{"id": 0, "event": "add"}]}', '{\n  "facts": [\n    "x"\n  ]\n}',
    '{"a": "line\nbreak"}', '{"a":1}\n\nmore', '{"a": [}', '{"a": ]}', '{"a": -}', '{"a": .5}', '{"a": 1e5, "b": 1E+2, "c": 2e-3}',
    # what lenient readers (org.json) take and Python's json refuses: single quotes, bare words, hex / octal, comments
    "{'a': 'x'}", '{"a": yes}', '[tru]', '{"a": 0x10}', '{"a": 010}', '{"a": 1} // c', '{"a" = 1}', '{"a": 1; "b": 2}',
    '{"a": "x\n', '{"a": "x\t  ', '{"a": "\\u12', '{"a": "x\\', '{"a": 1.', '{"a": -', '{"a": [1, 2',
]


def json_vectors() -> list[dict[str, Any]]:
    """json.JSONDecoder.raw_decode, which runtimes.memory.parse reads model output with: the value and where it ends,
    or a refusal and whether parse.py calls it truncated (the error at the end of the text, or in an unterminated
    string: then no later '{' is tried)."""
    dec = json.JSONDecoder()
    out = []
    for doc in JSON_DOCS:
        try:
            value, end = dec.raw_decode(doc, 0)
            out.append({"doc": doc, "value": _jsonable(value), "end": end})
        except json.JSONDecodeError as e:
            truncated = e.pos >= len(doc.rstrip()) or e.msg.startswith("Unterminated string")
            out.append({"doc": doc, "error": {"truncated": truncated, "python_message": str(e)}})
    return out


EXTRACT_OK = '{"facts": ["Caroline attended an LGBTQ support group.", "Melanie paints sunrises for her kids."]}'
UPDATE_OK = ('{"memory": [{"id": "0", "text": "Caroline moved to Denver", "event": "UPDATE", '
             '"old_memory": "Caroline lives in Boston"}, {"id": "1", "text": "Melanie has two kids", "event": "NONE"}, '
             '{"id": "2", "text": "Melanie paints sunrises", "event": "ADD"}]}')
PARSE_TEXTS = {
    "extract": [
        EXTRACT_OK, '{"facts": []}', "```json\n" + EXTRACT_OK + "\n```", "Sure! Here you go:\n" + EXTRACT_OK + "\nHope it helps.",
        "```\n{\"facts\": [\"a\"]}\n```", '{"facts": ["  a   b  ", "", "a b", "c\\n d"]}', '{"facts": "x"}',
        '{"facts": ["x", 3]}', '{"fact": ["x"]}', '{"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6}', "no json here",
        '{"facts": ["Caroline', '{"facts": ["x", ', '{"facts": ["x"]', "```json\n{\"facts\": [\"x\"]", "{ not json } {\"facts\": [\"y\"]}",
        '{"facts": ["é ü 😀", "naïve\\u00a0café"]}', '{"facts": [null]}', '{"facts": {"x": 1}}', "", "   ",
        '[{"facts": ["x"]}]', '{"facts": ["x"]} {"facts": ["y"]}', "```JSON\n{\"facts\": [\"z\"]}```", '{"facts": ["a\\u2003b"]}',
        '{"facts":["x"],"extra":true}', 'text {"facts": ["a"]', '{"facts": ["a"] junk', '{"facts": [1.5]}', '{"facts": [true]}',
        # lenient JSON (org.json would read these): Python refuses them
        "{'facts': ['x']}", '{"facts": [yes]}', '{"facts": [tru]}', '{"facts": ["x"], "n": 0x1F}', '{facts: ["x"]}',
        '{"facts": ["x"]; "y": 1}', '{"facts": ["x", {"facts": ["y"]}', '{"facts": ["\\u12', '{"facts": ["x"], "n": -',
    ],
    "update": [
        UPDATE_OK, '{"memory": []}', "```json\n" + UPDATE_OK + "\n```",
        '{"memory": [{"id": 3, "text": "x", "event": "add"}]}', '{"memory": [{"id": "0", "event": "DELETE"}]}',
        '{"memory": [{"id": "0", "text": "x", "event": " update ", "old_memory": "  y  "}]}',
        '{"memory": [{"id": "0", "text": "x", "event": "MERGE"}]}', '{"memory": [{"id": "0", "event": 3}]}',
        '{"memory": [{"id": "0", "text": "", "event": "ADD"}]}', '{"memory": [{"id": "0", "text": "  ", "event": "UPDATE"}]}',
        '{"memory": [{"id": true, "text": "x", "event": "ADD"}]}', '{"memory": [{"id": null, "text": "x", "event": "ADD"}]}',
        '{"memory": [{"id": 1.5, "text": "x", "event": "ADD"}]}', '{"memory": [{"text": "x", "event": "ADD"}]}',
        '{"memory": [{"id": "0", "text": 5, "event": "ADD"}]}', '{"memory": [{"id": "0", "text": "x", "event": "ADD", "old_memory": 4}]}',
        '{"memory": [{"id": "0", "text": "x", "event": "ADD", "old_memory": ""}]}', '{"memory": ["x"]}', '{"memory": {"id": "0"}}',
        '{"memories": []}', '{"memory": [{"id": "0", "text": "x", "event": "ADD"}, {"id": "1", "event": "BAD"}]}',
        '{"memory": [{"id": "0", "text": "Caroline', '{"memory": [{"id": "0", "text": "x", "event": "NONE"}, {"id": "1", ',
        '{"memory": [{"id": " 7 ", "text": "x", "event": "delete"}]}', '{"memory": [{"id": 12345678901234567890123, "text": "x", "event": "ADD"}]}',
        '{"memory": [{"id": "0", "text": "x", "event": null}]}', '{"memory": [{"id": "0", "text": "x", "event": ["ADD"]}]}',
        '{"memory": [{"id": "0", "text": "x", "event": {"a": "b"}}]}', '{"memory": [{"id": "0", "text": "x", "event": "it\'s"}]}',
        '{"memory": [{"id": "0", "text": "x", "event": 2.5}]}', '{"memory": [{"id": "0", "text": "x", "event": "ADD", "old_memory": null}]}',
    ],
}


def hostile_texts() -> list[str]:
    """Outputs at and just past every bound of runtimes.memory.parse, for both ops (vectors of the limits)."""
    from runtimes.memory import parse as P

    ev = '{"id": "0", "text": "x", "event": "DELETE"}'
    emoji = "\U0001f600"  # one code point, two UTF-16 units: lengths count code points on both sides
    return [
        '{"memory": [' + ", ".join([ev] * P.MAX_EVENTS) + "]}", '{"memory": [' + ", ".join([ev] * (P.MAX_EVENTS + 1)) + "]}",
        '{"facts": [' + ", ".join(f'"f{i}"' for i in range(P.MAX_FACTS)) + "]}",
        '{"facts": [' + ", ".join(f'"f{i}"' for i in range(P.MAX_FACTS + 1)) + "]}",
        '{"facts": ["' + "y" * P.MAX_TEXT_CHARS + '"], "memory": [{"id": "1", "text": "' + "y" * P.MAX_TEXT_CHARS
        + '", "event": "UPDATE", "old_memory": "' + "o " * P.MAX_TEXT_CHARS + '"}]}',
        '{"facts": ["' + "y" * (P.MAX_TEXT_CHARS + 1) + '"], "memory": [{"id": "1", "text": "' + "y" * (P.MAX_TEXT_CHARS + 1)
        + '", "event": "ADD"}]}',
        '{"memory": [{"id": "1", "text": "x", "event": "UPDATE", "old_memory": "' + "o" * (P.MAX_TEXT_CHARS + 1) + '"}]}',
        '{"facts": ["' + emoji * P.MAX_TEXT_CHARS + '"]}', '{"facts": ["' + emoji * (P.MAX_TEXT_CHARS + 1) + '"]}',
        '{"facts": ["' + "     ".join(["w"] * 500) + '"]}',  # 2,496 characters, 999 once whitespace is normalised
        '{"memory": [{"id": "' + "7" * P.MAX_ID_CHARS + '", "event": "NONE"}, {"id": ' + "8" * (P.MAX_ID_CHARS + 1)
        + ', "event": "NONE"}]}',
        '{"memory": [{"id": ' + "9" * P.MAX_INT_CHARS + ', "event": "NONE"}]}',
        '{"memory": [{"id": -' + "9" * P.MAX_INT_CHARS + ', "event": "NONE"}]}', '{"facts": [' + "9" * 5000 + "]}",
        '{"facts": [1' + "0" * 400 + ".5, 1e999999]}",
        '{"facts": ' + "[" * (P.MAX_DEPTH - 1) + "]" * (P.MAX_DEPTH - 1) + "}",
        '{"facts": ' + "[" * P.MAX_DEPTH + "]" * P.MAX_DEPTH + "}", '{"facts": ' + "[" * 30_000,
        '{"memory": [{"id": "0", "text": ' + '{"a": ' * 40 + "1" + "}" * 40 + ', "event": "ADD"}]}',
        '{"facts": ' + '["]", ' * 40, '{"facts": ["a \\" ' + "[" * 40 + '", "\\\\", "' + "{" * 40 + '"]}',
        'x {"a": "' + "[" * 40 + '\\"] ' + "[" * 40 + '"} {"facts": ["after"]}', "{ " * 40 + '{"facts": ["x"]}',
        '{"facts": ["\\' + emoji + '"]}', '{"facts": ["' + emoji + '\\"' + "[" * 40 + '"]}',
        "{ x } " * P.MAX_CANDIDATES + '{"facts": ["late"]}', "{ x } " * (P.MAX_CANDIDATES - 1) + '{"facts": ["late"]}',
        "```json\n" + "{ x } " * P.MAX_CANDIDATES + "\n```\n" + '{"facts": ["outside"]}',
        "pad " * 8187 + '{"facts": ["end"]}', "pad " * 8188 + '{"facts": ["end"]}',
        emoji * 16_000 + '{"facts": ["' + emoji + '"]}',  # 16,016 code points, 32,016 UTF-16 units: within the bound
    ]


def _parse_case(fn: Callable[[str], Any], text: str) -> dict[str, Any]:
    from runtimes.memory.parse import ParseError

    try:
        return {"text": text, "value": fn(text)}
    except ParseError as e:  # the message is for people; readers agree on refusing, not on wording
        return {"text": text, "error": str(e)}


def parse_vectors() -> dict[str, Any]:
    from runtimes.memory.parse import parse_extract, parse_update

    fns = {"extract": parse_extract, "update": parse_update}
    cases: dict[str, list[dict[str, Any]]] = {op: [_parse_case(fns[op], t) for t in texts + hostile_texts()]
                                              for op, texts in PARSE_TEXTS.items()}
    # Every truncation of a valid output: what an op cut off by max_new_tokens leaves behind.
    for op, full in (("extract", EXTRACT_OK), ("update", UPDATE_OK)):
        cases[op] += [_parse_case(fns[op], "Output: " + full[:n]) for n in range(0, len(full) + 1, 3)]
    return cases


def wordpiece_vectors() -> dict[str, Any]:
    from exporter.embedder import TOKENIZER, load_tokenizer, max_len, model_dir

    d = model_dir()
    tok = load_tokenizer(d)
    texts = ["Caroline went to an LGBTQ support group yesterday.", "What did Caroline research?", "hi", "",
             "Héllo, WORLD!! naïve café Straße İstanbul ΣΊΣΥΦΟΣ", "你好，世界。日本語のテキスト", "emoji 😀👍🏽 and ©®™",
             "tabs\tand\nnewlines\r\nand\u00a0nbsp\u2003em\u200bzwsp", "control\x00\x07\ufffd chars", "don't stop-believing (x)[y]{z}",
             "supercalifragilisticexpialidocious " * 3, "a" * 120 + " word", "12,345.67 $% 3rd 1990s",
             "The charity race raised awareness for mental health, and afterwards she realised self-care matters. " * 12,
             "Ǆemo ﬁne ½ ①", "ÀÉÎÕÜ àéîõü ÇçÑñ", "mixed中文and English", "\u0301accent-first"]
    return {"source": f"{d}/tokenizer.json with exporter.embedder.load_tokenizer (the bundle's {TOKENIZER})",
            "tokenizer": json.loads(tok.to_str()), "max_len": max_len(d),
            "cases": [{"text": t, "ids": tok.encode(t).ids, "tokens": tok.encode(t).tokens} for t in texts]}
