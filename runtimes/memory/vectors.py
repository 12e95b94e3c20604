"""Shared test vectors for the Android app's JVM module (android_demo/core): `python -m runtimes.memory.vectors OUT_DIR`.

Every expected value here is produced by CALLING the Python implementation the phone must match — never written by
hand: runtimes.prompts (templates, render), runtimes.base.Runtime.apply_chat_template (the jinja2 chat template),
runtimes.manifest.load_manifest, runtimes.memory.parse / prompts / store / pipeline, json's raw_decode (which the
parser relies on), and the embedder's WordPiece tokenizer. The JVM tests (`./build.sh android-test`) read these files
and assert the Java code gives the same results.

Files written (atomically: a temp dir renamed into place):
  meta.json         versions, what was recorded and from which bundle
  text.json         Python's str.isspace table
  json.json         json.JSONDecoder.raw_decode on model-output-like documents (values or error msg + position)
  templates.json    the prompt template table and generation defaults
  parse.json        raw model outputs -> parse_extract / parse_update results or ParseError messages (with hostile
                    ones: over-long, too deep, too many items, long integers / texts / ids, at and past each bound)
  format.json       turns / facts / memories / dates formatting and the rendered op messages
  chat.json         chat templates applied to messages (the bundle's template, none, and common template styles)
  manifest.json     load_manifest on a real exported bundle and on variants of it (under manifests/)
  wordpiece.json    the retrieval embedder's tokenizer: texts -> token ids
  store.json        update events applied to a store: rows, history and results after every step (stores/); files
                    that are or are not memory stores opened (stores/open/): refused with which message, or stamped
  ranking.json      cosine search over real all-MiniLM-L6-v2 embeddings (stores/ranking.sqlite)
  pipeline.json     MemoryPipeline runs with recorded model outputs replayed: every op call, the final store, answers
  bench.json        the profiler's reading (runtimes.profiler.adb.parse_observer) of an ExecuTorch runner stats line
  bpe.json          the LM's byte-level BPE tokenizer (bpe/*.json: the bundle's and two variants): encode / decode cases
  loop.json         runtimes.base.Runtime.stream over scripted steps: streamed pieces, stop reasons, the forward calls

The real bundle: `--bundle DIR` (e.g. the default export ./memlora_bundle) or else a tiny random-weight llama with the
SmolLM2 tokenizer exported once by the real exporter (fp32, one shared program) and cached under
$MEMLORA_CACHE/android-vectors, keyed by the exporter's and runtime's source files.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
VERSION = 2  # 2: bpe.json + loop.json (the ONNX backend's tokenizer and decoding loop)


# ---------------------------------------------------------------------------------------------------- helpers
def _err(e: BaseException) -> dict[str, str]:
    return {"type": type(e).__name__, "message": str(e)}


def _cp_pos(s: str, pos: int) -> int:
    return pos  # Python positions are code-point indices already; the JVM side converts its UTF-16 indices


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return {"$float": repr(v)}
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 2**63:
        return {"$bigint": str(v)}
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def _embed_table(dim: int = 8) -> tuple[dict[str, list[float]], Callable[[list[str]], np.ndarray]]:
    """A deterministic embedder for store and pipeline cases (the store's behaviour does not depend on what the
    vectors mean); every text embedded is recorded so the JVM side replays the very same vectors."""
    table: dict[str, list[float]] = {}

    def embed(texts: list[str]) -> np.ndarray:
        out = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
            table[t] = [float(x) for x in v]
            out.append(v)
        return np.asarray(out, dtype=np.float32).reshape(len(texts), dim)

    return table, embed


def _rows(db: Path) -> dict[str, Any]:
    con = sqlite3.connect(db)
    try:
        mems = [{"id": r[0], "owner": r[1], "text": r[2], "created_at": r[3], "updated_at": r[4],
                 "source_turns": r[5], "embedding": [float(x) for x in np.frombuffer(r[6], dtype=np.float32)]}
                for r in con.execute("SELECT id, owner, text, created_at, updated_at, source_turns, embedding "
                                     "FROM memories ORDER BY id")]
        hist = [dict(zip(("seq", "memory_id", "owner", "event", "old_text", "new_text", "source_turns", "at", "batch"), r))
                for r in con.execute("SELECT seq, memory_id, owner, event, old_text, new_text, source_turns, at, batch "
                                     "FROM history ORDER BY seq")]
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        return {"memories": mems, "history": hist, "meta": meta}
    finally:
        con.close()


def _schema(db: Path) -> list[list[str]]:
    con = sqlite3.connect(db)
    try:
        return [list(r) for r in con.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")]
    finally:
        con.close()


# ---------------------------------------------------------------------------------------------------- sections
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
]


def json_vectors() -> list[dict[str, Any]]:
    dec = json.JSONDecoder()
    out = []
    for doc in JSON_DOCS:
        try:
            value, end = dec.raw_decode(doc, 0)
            out.append({"doc": doc, "value": _jsonable(value), "end": end})
        except json.JSONDecodeError as e:
            out.append({"doc": doc, "error": {"msg": e.msg, "pos": _cp_pos(doc, e.pos), "message": str(e)}})
    return out


def template_vectors() -> dict[str, Any]:
    from runtimes import prompts

    return {"templates": prompts.TEMPLATES, "default_template": prompts.DEFAULT_TEMPLATE,
            "default_generation": prompts.DEFAULT_GENERATION, "fallback_generation": prompts.FALLBACK_GENERATION,
            "ops": ["extract", "update", "generate", "other"],
            "template_for": {op: prompts.template_for(op) for op in ("extract", "update", "generate", "other")}}


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
    except ParseError as e:
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


TURNS = [
    {"speaker": "Caroline", "text": "I went to an LGBTQ support group   yesterday\nand it was so powerful.", "dia_id": "D1:1"},
    {"speaker": "Melanie", "text": "That's great! I'm painting a sunrise for my kids.", "dia_id": "D1:2",
     "blip_caption": "a photo of a painting of a sunrise"},
    {"speaker": "Caroline", "text": "", "dia_id": "D1:3", "blip_caption": "a photo of a rainbow flag"},
    {"speaker": "Melanie", "text": "  Naïve café — «quotes» {braces} 😀  "},
]
DATES = ["1:56 pm on 8 May, 2023", "10:37 am on 27 June, 2023", "1:56 PM on 8 may, 2023", "7:05 am on 1 Sep, 2023",
         "12:00 am on 31 December, 2023", "8 May 2023", "8 May, 2023", "2023-05-08", "2023-5-8", "2023-05-08T13:56:00",
         "2023-05-08 13:56", "2023-05-08T13:56:00+02:00", "2023-05-08T13:56:00Z", "20230508", "2023-05-08T13:56:00.123456",
         "31 February 2023", "13:56 pm on 8 May, 2023", "yesterday", "", "  8 May 2023  ", "1:56 pm on  8 May,  2023",
         "11:59 pm on 29 February, 2024", "1:56 pm on 8 May, 2023 extra", "2023-13-01"]


def format_vectors() -> dict[str, Any]:
    from runtimes.memory import prompts as mp

    mems = [{"id": 11, "text": "Caroline lives in   Boston", "created_at": "2023-05-08T13:56:00", "updated_at": "2023-06-27T10:37:00"},
            {"id": 4, "text": "Melanie has two kids", "created_at": "2023-05-08T13:56:00", "updated_at": ""},
            {"id": 7, "text": "Melanie\npaints sunrises", "created_at": "", "updated_at": None},
            {"id": 9, "text": "undated", "created_at": "yesterday", "updated_at": None}]
    facts = ["Caroline moved to Denver", "Melanie likes painting sunrises"]
    out: dict[str, Any] = {
        "dates": [{"value": d, "to_iso": mp.to_iso(d), "display": mp.display_date(d)} for d in DATES],
        "display_none": mp.display_date(None),
        "turns": {"input": TURNS, "text": mp.format_turns(TURNS)},
        "facts": [{"input": f, "text": mp.format_facts(f)} for f in (facts, [])],
        "memories": [],
        "messages": [],
    }
    for sel in (mems, mems[:1], []):
        for dates in (False, True):
            text, id_map = mp.format_memories(sel, with_dates=dates)
            out["memories"].append({"input": sel, "with_dates": dates, "text": text, "id_map": id_map})
    for date in ("1:56 pm on 8 May, 2023", "2023-05-08"):
        out["messages"].append({"op": "extract", "turns": TURNS, "date": date, "messages": mp.extract_messages(TURNS, date)})
    msgs, id_map = mp.update_messages(facts, mems)
    out["messages"].append({"op": "update", "facts": facts, "memories": mems, "messages": msgs, "id_map": id_map})
    msgs, id_map = mp.update_messages([], [])
    out["messages"].append({"op": "update", "facts": [], "memories": [], "messages": msgs, "id_map": id_map})
    out["messages"].append({"op": "generate", "question": "  Where does Caroline live?\n", "memories": mems,
                            "messages": mp.generate_messages("  Where does Caroline live?\n", mems)})
    return out


# Chat templates in the styles Hugging Face models ship (ChatML, Llama 3, Gemma, Qwen 2.5, Phi 3, Mistral-like):
# test inputs exercising the jinja features such templates use. The expected text always comes from jinja2.
EXTRA_TEMPLATES = {
    "llama3-style": (
        "{{- bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
        " + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"),
    "gemma-style": (
        "{{ bos_token }}\n{%- if messages[0]['role'] == 'system' -%}\n    {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
        "    {%- set loop_messages = messages[1:] -%}\n{%- else -%}\n    {%- set first_user_prefix = \"\" -%}\n"
        "    {%- set loop_messages = messages -%}\n{%- endif -%}\n{%- for message in loop_messages -%}\n"
        "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
        "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n    {%- endif -%}\n"
        "    {%- if (message['role'] == 'assistant') -%}\n        {%- set role = \"model\" -%}\n    {%- else -%}\n"
        "        {%- set role = message['role'] -%}\n    {%- endif -%}\n"
        "    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}\n"
        "    {%- if message['content'] is string -%}\n        {{ message['content'] | trim }}\n    {%- else -%}\n"
        "        {{ raise_exception(\"Invalid content type\") }}\n    {%- endif -%}\n    {{ '<end_of_turn>\\n' }}\n{%- endfor -%}\n"
        "{%- if add_generation_prompt -%}\n    {{'<start_of_turn>model\\n'}}\n{%- endif -%}\n"),
    "qwen-style": (
        "{%- if tools %}\n    {{- '<|im_start|>system\\n' + 'tools' + '<|im_end|>\\n' }}\n{%- else %}\n"
        "    {%- if messages[0]['role'] == 'system' %}\n        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
        "    {%- else %}\n        {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n"
        "{%- for message in messages %}\n"
        "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
        "(message.role == \"assistant\" and not message.tool_calls) %}\n"
        "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n    {%- endif %}\n"
        "{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n"),
    "phi3-style": (
        "{% for message in messages %}\n{% if message['role'] == 'system' %}\n{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}\n"
        "{% elif message['role'] == 'user' %}\n{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}\n"
        "{% elif message['role'] == 'assistant' %}\n{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}\n{% endif %}\n"
        "{% endfor %}\n{% if add_generation_prompt %}\n{{ '<|assistant|>\\n' }}\n{% else %}\n{{ eos_token }}\n{% endif %}\n"),
    "mistral-like": (
        "{%- set ns = namespace(sys='', n=0) -%}\n{%- for m in messages if m.role == 'system' -%}"
        "{%- set ns.sys = ns.sys ~ m.content -%}{%- endfor -%}\n"
        "{{ bos_token }}{%- for m in messages if m.role not in ['system'] -%}\n{%- set ns.n = ns.n + 1 -%}\n"
        "{%- if m.role == 'user' -%}[INST] {% if loop.last and ns.sys|length > 0 %}{{ ns.sys }}\\n\\n{% endif %}"
        "{{ m.content }} [/INST]{%- else -%}{{ m.content }}{{ eos_token }}{%- endif -%}\n{%- endfor -%}\n{# a comment #}\n"
        "{{- '\\n' ~ (messages|length) ~ ' messages, ' ~ ns.n ~ ' turns; roles=' ~ (messages|map(attribute='role')|join(','))"
        " ~ ' ' ~ {'k': messages[0].role, 'a': 1, 'h': '<&>'}|tojson ~ ' ' ~ (messages[-1].content[:5]) ~ ' ' ~ (7 // 2) ~ (7 % 3) ~ (1 / 2)"
        " ~ ' ' ~ (messages|selectattr('role', 'equalto', 'user')|list|length) ~ ('x' if messages|length > 1 else 'y') }}\n"),
}


def chat_vectors(bundle_template: str | None, bos: str, eos: str, op_messages: list[list[dict[str, str]]]) -> list[dict[str, Any]]:
    from runtimes.base import Runtime

    templates = {"bundle": bundle_template, "none": None, **EXTRA_TEMPLATES}
    edge = [
        [{"role": "user", "content": "Hello there"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "What is {{ 1 + 1 }} or {% if %}?"}],
        [{"role": "system", "content": ""}, {"role": "user", "content": "  padded\n\n  "}],
        [{"role": "system", "content": "S"}, {"role": "user", "content": "u1"}, {"role": "user", "content": "u2"}],
        [{"role": "user", "content": "CRLF\r\nline ’quotes’ 😀 naïve"}],
    ]
    out = []
    for name, tpl in templates.items():
        for messages in [*op_messages, *edge]:
            shim = SimpleNamespace(manifest=SimpleNamespace(chat_template=tpl, raw={"tokenizer": {"bos_token": bos, "eos_token": eos}}),
                                   _template=None)
            case = {"template_name": name, "template": tpl, "bos_token": bos, "eos_token": eos, "messages": messages}
            try:
                case["text"] = Runtime.apply_chat_template(shim, messages)
            except Exception as e:  # noqa: BLE001 - jinja errors and raise_exception's ValueError alike
                case["error"] = _err(e)
            out.append(case)
    return out


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


STORE_NOW = ["2023-05-08T13:56:00", "2023-06-27T10:37:00", "2023-07-01T09:00:00", "2023-07-02T09:00:00", "2023-07-03T09:00:00",
             "2023-07-04T09:00:00", "2023-07-05T09:00:00"]


def store_vectors(out: Path) -> dict[str, Any]:
    from runtimes.memory.parse import parse_update
    from runtimes.memory.prompts import format_memories
    from runtimes.memory.store import MemoryStore

    table, embed = _embed_table()
    db = out / "stores" / "steps.sqlite"
    db.parent.mkdir(parents=True, exist_ok=True)
    steps: list[dict[str, Any]] = []
    store = MemoryStore(db)

    def snap(step: dict[str, Any], result: Any) -> None:
        step["result"] = result.to_dict() if hasattr(result, "to_dict") else result
        step["after"] = _rows(db)
        steps.append(step)

    seed = ["Caroline lives in Boston", "Melanie has two kids", "Caroline likes hiking"]
    snap({"kind": "add", "texts": seed, "owner": "user", "source_turns": ["D1:1", "D1:2"], "now": STORE_NOW[0]},
         store.add(seed, owner="user", embed_fn=embed, source_turns=["D1:1", "D1:2"], now=STORE_NOW[0]))
    shown = store.all("user")
    _, id_map = format_memories(shown, with_dates=False)
    raw = ('{"memory": [{"id": "0", "text": "Caroline moved to Denver", "event": "UPDATE", "old_memory": "Caroline lives in Boston"}, '
           '{"id": "1", "text": "Melanie has two kids", "event": "NONE"}, {"id": "9", "text": "Melanie paints sunrises", "event": "ADD"}, '
           '{"id": "2", "text": "", "event": "DELETE"}]}')
    events = parse_update(raw)
    snap({"kind": "update", "raw": raw, "events": events, "id_map": id_map, "owner": "user", "source_turns": ["D2:5"],
          "now": STORE_NOW[1], "batch": "b1"},
         store.apply_update(events, id_map, owner="user", source_turns=["D2:5"], embed_fn=embed, now=STORE_NOW[1], batch="b1"))
    # Events that cannot apply: unknown id, DELETE of a deleted memory, ADD of a stored text, UPDATE to the same text.
    events = [{"id": "7", "text": "x", "event": "UPDATE", "old_memory": None},
              {"id": "2", "text": "", "event": "DELETE", "old_memory": None},
              {"id": "5", "text": "Melanie paints sunrises", "event": "ADD", "old_memory": None},
              {"id": "0", "text": "Caroline moved to Denver", "event": "UPDATE", "old_memory": None},
              {"id": "1", "text": "", "event": "NONE", "old_memory": None},
              {"id": "1", "text": "Melanie has two kids, Ana and Ben", "event": "UPDATE", "old_memory": "Melanie has two kids"}]
    snap({"kind": "update", "events": events, "id_map": id_map, "owner": "user", "source_turns": ["D3:1", "D2:5"],
          "now": STORE_NOW[2], "batch": "b2"},
         store.apply_update(events, id_map, owner="user", source_turns=["D3:1", "D2:5"], embed_fn=embed, now=STORE_NOW[2], batch="b2"))
    snap({"kind": "delete", "memory_id": id_map["0"], "now": STORE_NOW[3]}, store.delete(id_map["0"], now=STORE_NOW[3]))
    snap({"kind": "delete", "memory_id": 999, "now": STORE_NOW[4]}, store.delete(999, now=STORE_NOW[4]))
    snap({"kind": "add", "texts": ["A shared fact", "Melanie has two kids"], "owner": None, "source_turns": [], "now": STORE_NOW[5]},
         store.add(["A shared fact", "Melanie has two kids"], owner=None, embed_fn=embed, now=STORE_NOW[5]))
    snap({"kind": "add", "texts": ["Other owner’s naïve fact 😀", "Melanie has two kids"], "owner": "bob", "source_turns": ["x"],
          "now": STORE_NOW[6]},
         store.add(["Other owner’s naïve fact 😀", "Melanie has two kids"], owner="bob", embed_fn=embed, source_turns=["x"],
                   now=STORE_NOW[6]))
    counts = {"all": store.count(), "user": store.count("user"), "bob": store.count("bob")}
    history_1 = store.history(id_map["1"])
    store.close()
    return {"steps": steps, "embeddings": table, "schema": _schema(db), "counts": counts,
            "history_of": {"memory_id": id_map["1"], "rows": history_1}, "db": "stores/steps.sqlite",
            "open": open_vectors(out, db)}


def open_vectors(out: Path, store_db: Path) -> list[dict[str, Any]]:
    """Files opened as a store (each on a copy, the original kept under stores/open/ for the JVM side): Python's
    StoreError message with the path as <db>, or what opening made of the file (stamp, rows)."""
    from runtimes.memory.store import MemoryStore, StoreError

    d = out / "stores" / "open"
    d.mkdir(parents=True, exist_ok=True)

    def sql(name: str, *statements: str, wal: bool = False, base: Path | None = None) -> Path:
        path = d / name
        if base is not None:
            shutil.copyfile(base, path)
        con = sqlite3.connect(path)
        if wal:
            con.execute("PRAGMA journal_mode=WAL")
        for q in statements:
            con.execute(q)
        con.commit()
        if wal:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        return path

    def raw(name: str, data: bytes) -> Path:
        (d / name).write_bytes(data)
        return d / name

    files = [
        raw("text.txt", "Caroline lives in Boston\n".encode()), raw("junk.bin", bytes(range(256)) * 4),
        raw("short-header.db", b"SQLite format 3\x00\x10\x00"), raw("empty.db", b""),
        sql("notes.db", "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)", "INSERT INTO notes (body) VALUES ('x')"),
        sql("notes-wal.db", "CREATE TABLE notes (body TEXT)", wal=True),
        sql("many-tables.db", *[f"CREATE TABLE t{i} (x)" for i in range(7)]),
        sql("other-app.db", "PRAGMA application_id = 1179011410", "CREATE TABLE memories (id INTEGER PRIMARY KEY)"),
        sql("no-tables.db", "PRAGMA page_size = 4096", "VACUUM"),
        sql("lookalike.db", "CREATE TABLE memories (id INTEGER PRIMARY KEY, text TEXT)", "CREATE TABLE history (seq INTEGER)",
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)", "INSERT INTO meta VALUES ('schema_version', '1')"),
        sql("legacy.db", "PRAGMA application_id = 0", "PRAGMA user_version = 0", "DROP INDEX memories_text", base=store_db),
        sql("legacy-v0.db", "PRAGMA application_id = 0", "PRAGMA user_version = 0",
            "UPDATE meta SET value = '0' WHERE key = 'schema_version'", base=store_db),
        sql("stamped-v2.db", "PRAGMA user_version = 2", base=store_db),
    ]
    cases = []
    for path in files:
        case: dict[str, Any] = {"db": f"stores/open/{path.name}"}
        work = out / "stores" / f"opening-{path.name}"
        shutil.copyfile(path, work)
        before = work.read_bytes()
        try:
            MemoryStore(work).close()
            con = sqlite3.connect(work)
            case["opened"] = {"application_id": con.execute("PRAGMA application_id").fetchone()[0],
                              "user_version": con.execute("PRAGMA user_version").fetchone()[0]}
            con.close()
            case["opened"].update(_rows(work))
        except StoreError as e:
            case["error"] = str(e).replace(str(work), "<db>")
            case["untouched"] = work.read_bytes() == before
        for side in ("", "-wal", "-shm", "-journal"):
            Path(str(work) + side).unlink(missing_ok=True)
        cases.append(case)
    return cases


RANK_MEMORIES = ["Caroline attended an LGBTQ support group", "Melanie paints sunrises with her kids", "Caroline moved to Denver",
                 "Melanie has two kids", "Caroline is researching adoption agencies", "Melanie ran a charity race for mental health",
                 "Caroline's favourite book is Becoming Nicole", "Melanie went camping with her family in June",
                 "Caroline wants to become a counsellor", "Melanie plays the clarinet", "Caroline likes hiking in the mountains",
                 "Melanie's son got hurt in a car accident"]
RANK_QUERIES = ["What did Caroline research?", "Where does Caroline live?", "What instrument does Melanie play?",
                "What does Melanie paint?", "When did Melanie go camping?"]


def ranking_vectors(out: Path) -> dict[str, Any]:
    from runtimes.memory.embed import TorchEmbedder
    from runtimes.memory.store import MemoryStore

    emb = TorchEmbedder()
    db = out / "stores" / "ranking.sqlite"
    db.parent.mkdir(parents=True, exist_ok=True)
    with MemoryStore(db) as store:
        store.add(RANK_MEMORIES[:8], owner="user", embed_fn=emb.embed, now="2023-05-08T13:56:00")
        store.add(RANK_MEMORIES[8:], owner="other", embed_fn=emb.embed, now="2023-05-09T13:56:00")
        cases = []
        q_emb = emb.embed(RANK_QUERIES)
        for q, v in zip(RANK_QUERIES, q_emb):
            for k, owner in ((3, "user"), (5, None), (20, "other"), (0, None)):
                hits = store.search(v, k, owner=owner)
                cases.append({"query": q, "embedding": [float(x) for x in v], "k": k, "owner": owner,
                              "ids": [m.id for m, _ in hits], "scores": [s for _, s in hits]})
    return {"embedder": emb.name, "dim": emb.dim, "db": "stores/ranking.sqlite", "cases": cases}


class _Replay:
    """Replays recorded model outputs in order (the same outputs the JVM test replays), recording each call; stands in
    for the model so the two pipelines' orchestration (prompts, retrieval, store changes) can be compared."""

    def __init__(self, outputs: list[str]):
        self.outputs = list(outputs)
        self.calls: list[dict[str, Any]] = []

    def generate(self, op: str, messages=None, max_new_tokens=None, **_: Any) -> Any:
        text = self.outputs.pop(0)
        self.calls.append({"op": op, "messages": messages, "max_new_tokens": max_new_tokens, "output": text})
        return SimpleNamespace(text=text, tokens=[], prompt_tokens=[], stop_reason="stop_token")


PIPELINE_SCRIPT = {
    "turns": [
        {"date": "1:56 pm on 8 May, 2023", "turns": TURNS[:2]},
        {"date": "10:37 am on 27 June, 2023",
         "turns": [{"speaker": "Caroline", "text": "We moved to Denver last month!", "dia_id": "D2:1"},
                   {"speaker": "Melanie", "text": "Ana and Ben loved the camping trip.", "dia_id": "D2:2"}]},
        {"date": "7:05 am on 1 Sep, 2023", "turns": [{"speaker": "Caroline", "text": "Nothing new today."}]},
    ],
    "outputs": [
        '{"facts": ["Caroline attended an LGBTQ support group", "Melanie paints sunrises for her kids", "Melanie has kids", '
        '"Caroline finds support groups powerful", "Caroline lives in Boston"]}',
        # (the first batch of four facts meets an empty store: added without an update call, add_to_empty_store)
        '```json\n{"memory": [{"id": "0", "text": "Caroline attended an LGBTQ support group", "event": "NONE"}, '
        '{"id": "4", "text": "Caroline lives in Boston", "event": "ADD"}]}\n```',
        'Facts: {"facts": ["Caroline moved to Denver", "Melanie has two kids named Ana and Ben", "Melanie went camping"]}',
        '{"memory": [{"id": "0", "text": "Caroline moved to Denver", "event": "UPDATE", "old_memory": "Caroline lives in Boston"}, '
        '{"id": "1", "text": "Melanie has two kids named Ana and Ben", "event": "UPDATE", "old_memory": "Melanie has kids"}, '
        '{"id": "9", "text": "Melanie went camping", "event": "ADD"}, {"id": "42", "text": "x", "event": "DELETE"}]}',
        '{"facts": ["Caroline',
        "Answer: Denver\nbecause she moved",
        '\n\n  "Ana and Ben"  \n',
        "",
    ],
    "questions": [("Where does Caroline live?", None), ("What are Melanie's kids called?", 3), ("Anything?", None)],
}


def pipeline_vectors(out: Path) -> dict[str, Any]:
    from runtimes.memory.pipeline import MemoryPipeline, PipelineConfig, clean_answer
    from runtimes.memory.store import MemoryStore

    table, embed = _embed_table(dim=16)
    db = out / "stores" / "pipeline.sqlite"
    llm = _Replay(PIPELINE_SCRIPT["outputs"])
    config = PipelineConfig()
    with MemoryStore(db) as store:
        pipe = MemoryPipeline(llm, SimpleNamespace(embed=embed), store, owner="user", config=config)
        added = []
        for step in PIPELINE_SCRIPT["turns"]:
            r = pipe.add_turns(step["turns"], step["date"])
            added.append({"facts": r.facts, "applied": [a.to_dict() for a in r.applied],
                          "calls": [{"op": c.op, "ok": c.ok, "error": c.error} for c in r.calls]})
        answers = []
        for q, k in PIPELINE_SCRIPT["questions"]:
            a = pipe.answer(q, k)
            answers.append({"question": q, "k": k, "text": a.text, "memories": [m.id for m, _ in a.memories],
                            "scores": [s for _, s in a.memories]})
    clean = ["Answer: Denver\nx", "  \n\"Paris\" ", "ANSWER:   'Rome'", "", "\n\n", "plain", "answer:", "  “curly”  "]
    return {"config": {k: v for k, v in config.__dict__.items()}, "script": PIPELINE_SCRIPT, "calls": llm.calls,
            "add_turns": added, "answers": answers, "final": _rows(db), "embeddings": table,
            "clean_answer": [{"text": t, "clean": clean_answer(t)} for t in clean]}


# A `PyTorchObserver` stats line as ExecuTorch 1.5.1's LLM runner (TextLLMRunner, what Android's LlmModule wraps)
# printed it in this project for a separate-adapter bundle: the app's LlmCallback.onStats receives this JSON.
RUNNER_STATS = ('{"prefill_token_per_sec":16000,"decode_token_per_sec":4875,"prompt_tokens":128,"generated_tokens":39,'
                '"model_load_start_ms":1795353505223,"model_load_end_ms":1795353505225,"inference_start_ms":1795353505225,'
                '"inference_end_ms":1795353505241,"model_execution_start_ms":1795353505241,"model_execution_end_ms":1795353505241,'
                '"prompt_eval_end_ms":1795353505233,"first_token_ms":1795353505233,"aggregate_sampling_time_ms":1,'
                '"aggregate_model_execution_time_ms":15,"SCALING_FACTOR_UNITS_PER_SECOND":1000}')


def bench_vectors() -> dict[str, Any]:
    """The profiler's reading of a runner stats line (runtimes.profiler.adb.parse_observer) and of a device result."""
    from runtimes.profiler.adb import parse_observer

    run = parse_observer("PyTorchObserver " + RUNNER_STATS)
    run.pop("raw", None)
    return {"stats": RUNNER_STATS, "run": run}


# ---------------------------------------------------------------------------------------------------- ONNX path: BPE + loop
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
                r"\s+(?!\S)|\s+")
BPE_TEXTS = [
    "", "Hello world", "Hello  world!!   I'm   here", "I'm you're they've we'll she'd it's DON'T We'RE", "12345 3.14159 1,000,000 2023-05-08",
    "   leading and trailing   ", "tabs\tand\nnewlines\r\n\r\nand  \n  mixed", "\n\n\n", "a" * 70 + " " + "ab" * 40,
    "Naïve café — «quotes» {braces} [brackets] (parens) <angle>", "Straße İstanbul ΣΊΣΥΦΟΣ ǅemo ﬁne ½ ①", "你好，世界。日本語のテキスト 한국어",
    "emoji 😀👍🏽 👨‍👩‍👧‍👦 🇫🇷 and ©®™", "nbsp\u00a0em\u2003thin\u2009zwsp\u200bline\u2028para\u2029ideo\u3000end", "control\x00\x07\x1b chars \ufffd",
    "\u0301accent-first e\u0301 é", "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", "x<|im_end|>y<|endoftext|><|im_start|>",
    "<|im_start|><|im_start|> <|im_end|> text", "memlora memloras xmemlora memlora!", "<|im_star", "don't stop-believing (x)[y]{z} !!! ??? ...",
    "{\"facts\": [\"Caroline moved to Denver\", \"Melanie has two kids\"]}", "```json\n{\"memory\": []}\n```", "\x85next line",
    "x\u00a0<|im_end|>\u00a0\u2003y \u00a0<|im_start|>z\t<|im_end|>\n\n", "memlora_x _memlora ½memlora memlora½ émemlora memlora\u0301 (memlora)",
]


def _bpe_variants(tokenizer_file: Path) -> dict[str, Any]:
    """The bundle's tokenizer and two variants built with the tokenizers library itself: a Llama-3 / Qwen-style one
    (NFC, Split regex + ByteLevel without regex, ignore_merges) and one with add_prefix_space, lstrip / rstrip
    specials and a non-special single-word added token."""
    from tokenizers import AddedToken, Tokenizer, normalizers, pre_tokenizers
    from tokenizers import Regex

    base = Tokenizer.from_file(str(tokenizer_file))
    split = Tokenizer.from_str(base.to_str())
    split.normalizer = normalizers.NFC()
    split.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    raw = json.loads(split.to_str())
    raw["model"]["ignore_merges"] = True
    split = Tokenizer.from_str(json.dumps(raw))
    prefix = Tokenizer.from_str(base.to_str())
    prefix.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    raw = json.loads(prefix.to_str())
    for a in raw["added_tokens"]:
        if a["content"] == "<|im_start|>":
            a["lstrip"] = True
        if a["content"] == "<|im_end|>":
            a["rstrip"] = True
    prefix = Tokenizer.from_str(json.dumps(raw))
    prefix.add_tokens([AddedToken("memlora", single_word=True, normalized=True)])
    return {"bundle": base, "split-nfc": split, "prefix-strip": prefix}


def bpe_vectors(tokenizer_file: Path, prompts_: list[str], out: Path) -> dict[str, Any]:
    """The language model's byte-level BPE tokenizer (what the app's ONNX backend tokenizes with): texts -> ids with
    tokenizers' encode(add_special_tokens=False), ids -> text with decode(skip_special_tokens=True/False)."""
    variants = _bpe_variants(tokenizer_file)
    (out / "bpe").mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"variants": []}
    for name, tok in variants.items():
        (out / "bpe" / f"{name}.json").write_text(tok.to_str())
        texts = [*prompts_, *BPE_TEXTS] if name == "bundle" else [*prompts_[:3], *BPE_TEXTS]
        enc = [{"text": t, "ids": tok.encode(t, add_special_tokens=False).ids} for t in texts]
        dec: list[dict[str, Any]] = []
        emoji = tok.encode("ok 😀👍🏽 é", add_special_tokens=False).ids
        id_lists = [c["ids"] for c in enc[-len(BPE_TEXTS):]] + [emoji[:n] for n in range(len(emoji) + 1)]
        id_lists += [[1, 2, 0, 3], [1] + emoji + [2], [49151, 0, 1234, 17], [242], [242, 218], [218, 218, 218], [10813, 1, 242, 218]]
        for ids in id_lists:
            for skip in (True, False):
                dec.append({"ids": ids, "skip_special_tokens": skip, "text": tok.decode(ids, skip_special_tokens=skip)})
        result["variants"].append({"name": name, "file": f"bpe/{name}.json", "encode": enc, "decode": dec,
                                   "added": {a.content: i for i, a in tok.get_added_tokens_decoder().items()}})
    return result


class _ScriptedRuntime:
    """runtimes.base.Runtime's decoding loop (stream) over a scripted step: each forward returns logits whose maximum
    sits on the script's next ids (several ids: a tie, which argmax breaks towards the smallest). It tests the loop
    (stop ids, lengths, streamed pieces, the calls made), not a model; the JVM test replays the same script."""

    @staticmethod
    def run(manifest: Any, op: str, prompt_ids: list[int], script: list[list[int]], **kwargs: Any) -> dict[str, Any]:
        from runtimes.base import Generation, Runtime

        calls: list[dict[str, Any]] = []
        vocab = int(manifest.raw["model"]["vocab_size"])

        class Scripted(Runtime):
            backend = "scripted"

            def _load(self, op: str) -> None:
                pass

            def _forward(self, op: str, tokens: list[int], start_pos: int) -> np.ndarray:
                step = script[len(calls)]
                calls.append({"tokens": list(tokens), "start_pos": start_pos})
                logits = np.zeros(vocab, dtype=np.float32)
                logits[step] = 1.0
                return logits

        rt = Scripted(manifest)
        case: dict[str, Any] = {"op": op, "prompt_ids": prompt_ids, "script": script, "kwargs": kwargs, "calls": calls}
        try:
            pieces: list[str] = []
            for item in rt.stream(op, prompt_tokens=prompt_ids, **kwargs):
                if isinstance(item, Generation):
                    case["result"] = {"text": item.text, "tokens": item.tokens, "stop_reason": item.stop_reason,
                                      "new_tokens": item.stats.new_tokens, "prompt_tokens": item.stats.prompt_tokens}
                else:
                    pieces.append(item)
            case["pieces"] = pieces
        except ValueError as e:
            case["error"] = str(e)
        return case


def loop_vectors(manifest: Any) -> dict[str, Any]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(manifest.tokenizer_file))
    ids = lambda t: tok.encode(t, add_special_tokens=False).ids  # noqa: E731
    prompt = ids("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    text = [[i] for i in ids("Hi 😀 naïve café — 👍🏽!")]
    stops = manifest.ops["extract"].stop_token_ids
    cases = [
        _ScriptedRuntime.run(manifest, "extract", prompt, text + [[stops[-1]]]),
        _ScriptedRuntime.run(manifest, "generate", prompt, text[:3] + [[1]] + text[3:] + [[stops[0]]]),
        _ScriptedRuntime.run(manifest, "extract", prompt, text + [[5]], max_new_tokens=4),
        _ScriptedRuntime.run(manifest, "update", prompt, [[stops[-1]]]),
        _ScriptedRuntime.run(manifest, "extract", prompt, [[40, 7], [9, 300, 12], [49151, 0]] + [[stops[0], stops[-1]]]),
        _ScriptedRuntime.run(manifest, "extract", prompt, text, max_new_tokens=2),  # ends inside an emoji
        _ScriptedRuntime.run(manifest, "extract", [17] * (manifest.max_seq_len - 5), text * 2),  # context_full
        _ScriptedRuntime.run(manifest, "extract", [17] * manifest.max_seq_len, text),  # prompt does not fit
    ]
    return {"max_seq_len": manifest.max_seq_len, "vocab_size": int(manifest.raw["model"]["vocab_size"]),
            "stop_token_ids": {op: e.stop_token_ids for op, e in manifest.ops.items()},
            "generation": {op: e.generation for op, e in manifest.ops.items()}, "cases": cases}


# ---------------------------------------------------------------------------------------------------- bundle + manifest
def _source_key() -> str:
    h = hashlib.sha256()
    for pattern in ("exporter/*.py", "exporter/targets/*.py", "runtimes/manifest.py", "runtimes/prompts.py"):
        for p in sorted(ROOT.glob(pattern)):
            h.update(p.name.encode())
            h.update(p.read_bytes())
    for pkg in ("executorch", "torch", "transformers"):
        try:
            h.update(md.version(pkg).encode())
        except md.PackageNotFoundError:
            pass
    return h.hexdigest()[:16]


def tiny_bundle() -> Path:
    """A real export (the exporter's own code path) of a tiny random llama with the SmolLM2 tokenizer, cached."""
    cache = Path(os.environ.get("MEMLORA_CACHE", Path.home() / ".cache" / "memlora")) / "android-vectors"
    bundle = cache / f"bundle-{_source_key()}"
    if (bundle / "manifest.json").is_file():
        return bundle
    cache.mkdir(parents=True, exist_ok=True)
    for old in cache.glob("bundle-*"):
        shutil.rmtree(old, ignore_errors=True)
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from exporter.cli import main as export_main
    from exporter.load import resolve_base

    print("vectors: exporting a tiny bundle once (the real exporter; about a minute) ...", file=sys.stderr)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
                                         max_position_embeddings=256))
    model.config.architectures = ["LlamaForCausalLM"]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "tiny-llama"
        model.save_pretrained(src, safe_serialization=True)
        AutoTokenizer.from_pretrained(resolve_base("smollm2-135m")[1]).save_pretrained(src)
        rc = export_main(["--base", str(src), "--quant", "fp32", "--skip-fidelity", "--max-seq-len", "256",
                          "--no-embedder", "--out", str(bundle), "--force"])
    if rc != 0:
        raise SystemExit(f"vectors: the tiny export failed (exit {rc})")
    return bundle


def _link_bundle(src: Path, dst: Path, raw: dict[str, Any] | None, drop: tuple[str, ...] = ()) -> None:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.name != "manifest.json" and f.name not in drop:
            try:  # a bundle is a closed world: a symlink leading out of it is refused, a hard link is its own file
                os.link(f, dst / f.name)
            except OSError:
                shutil.copy2(f, dst / f.name)
    (dst / "manifest.json").write_text(json.dumps(raw, indent=2) if raw is not None else "{ not json")


def manifest_vectors(bundle: Path, out: Path) -> list[dict[str, Any]]:
    from runtimes.manifest import load_manifest

    base = json.loads((bundle / "manifest.json").read_text())
    big = max(base["files"], key=lambda n: base["files"][n]["bytes"])
    first_op = next(iter(base["ops"]))

    def variant(name: str, mutate: Callable[[dict[str, Any]], Any] | None, drop: tuple[str, ...] = ()) -> Path:
        raw = json.loads(json.dumps(base))
        if mutate is not None:
            mutate(raw)
        d = out / "manifests" / name
        _link_bundle(bundle, d, raw if name != "invalid-json" else None, drop)
        return d

    cases = [("real", bundle, True), ("real-noverify", bundle, False)]
    cases += [
        ("missing-keys", variant("missing-keys", lambda r: (r.pop("ops"), r.pop("versions"))), True),
        ("schema-2", variant("schema-2", lambda r: r.update(schema_version=2)), True),
        ("unknown-keys", variant("unknown-keys", lambda r: r.update(zeta=1, alpha={"x": 1})), True),
        ("size-mismatch", variant("size-mismatch", lambda r: r["files"][big].update(bytes=r["files"][big]["bytes"] - 1)), True),
        ("sha-mismatch", variant("sha-mismatch", lambda r: r["files"][big].update(sha256="0" * 64)), True),
        ("sha-mismatch-noverify", out / "manifests" / "sha-mismatch", False),
        ("file-missing", variant("file-missing", None, drop=(big,)), True),
        ("op-unlisted-file", variant("op-unlisted-file", lambda r: r["ops"][first_op]["data_files"].append("foundation.ptd")), True),
        ("backend-unlisted-file", variant("backend-unlisted-file", lambda r: r["ops"][first_op].update(
            backends={"onnx": {"program": "model.onnx", "data_files": [], "adapter_file": None}})), False),
        ("embedder-incomplete", variant("embedder-incomplete", lambda r: r.update(embedder={"program": "embedder.pte"})), False),
        ("embedder-unlisted", variant("embedder-unlisted", lambda r: r.update(embedder={
            "program": "embedder.pte", "tokenizer": "embedder_tokenizer.json", "dim": 384, "max_len": 256, "pooling": "mean"})), False),
        ("invalid-json", variant("invalid-json", None), True),
        ("no-manifest", out / "manifests" / "does-not-exist", True),
    ]
    results = []
    for name, d, verify in cases:
        case: dict[str, Any] = {"name": name, "dir": os.path.relpath(d, out) if d != bundle else None, "verify": verify}
        try:
            m = load_manifest(d, verify=verify)
            case["ok"] = {"ops": {op: {"program": e.program, "data_files": e.data_files, "prompt_template": e.prompt_template,
                                       "generation": e.generation, "stop_token_ids": e.stop_token_ids, "adapter": e.adapter,
                                       "backends": getattr(e, "backends", {})}
                                  for op, e in m.ops.items()},
                          "max_seq_len": m.max_seq_len, "chat_template": m.chat_template, "tokenizer_file": m.raw["tokenizer"]["file"],
                          "strategy": m.raw["strategy"], "format": m.raw["format"], "versions": m.raw["versions"],
                          "embedder": m.raw.get("embedder")}
        except Exception as e:  # noqa: BLE001 - BundleError and whatever else Python raises, recorded as is
            case["error"] = {"type": type(e).__name__, "message": str(e).replace(str(d), "<bundle>")}
        results.append(case)
    return results


# ---------------------------------------------------------------------------------------------------- main
def write(out_dir: Path, bundle: Path | None = None) -> dict[str, Any]:
    from runtimes.manifest import load_manifest

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        src_bundle = Path(bundle) if bundle else tiny_bundle()
        m = load_manifest(src_bundle, verify=False)
        tok = m.raw["tokenizer"]
        fmt = format_vectors()
        op_messages = [c["messages"] for c in fmt["messages"]]
        chat = chat_vectors(m.chat_template, tok.get("bos_token") or "", tok.get("eos_token") or "", op_messages)
        files = {
            "text.json": text_vectors(),
            "json.json": json_vectors(),
            "templates.json": template_vectors(),
            "parse.json": parse_vectors(),
            "format.json": fmt,
            "chat.json": chat,
            "manifest.json": {"bundle": str(src_bundle), "cases": manifest_vectors(src_bundle, tmp)},
            "wordpiece.json": wordpiece_vectors(),
            "store.json": store_vectors(tmp),
            "ranking.json": ranking_vectors(tmp),
            "pipeline.json": pipeline_vectors(tmp),
            "bench.json": bench_vectors(),
            "bpe.json": bpe_vectors(m.tokenizer_file, [c["text"] for c in chat if c["template_name"] == "bundle" and "text" in c], tmp),
            "loop.json": loop_vectors(m),
        }
        for name, data in files.items():
            (tmp / name).write_text(json.dumps(data, indent=1))
        meta = {"version": VERSION, "bundle": str(src_bundle), "seconds": round(time.perf_counter() - t0, 1),
                "python": sys.version.split()[0], "files": sorted(files),
                "versions": {p: md.version(p) for p in ("executorch", "tokenizers", "jinja2") if _installed(p)}}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
        return meta
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _installed(pkg: str) -> bool:
    try:
        md.version(pkg)
        return True
    except md.PackageNotFoundError:
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runtimes.memory.vectors", description=__doc__.split("\n")[0])
    p.add_argument("out", help="directory to (re)create with the vectors")
    p.add_argument("--bundle", help="a real exported bundle to record the manifest of (default: a cached tiny export)")
    a = p.parse_args(argv)
    import logging
    import warnings

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")
    warnings.filterwarnings("ignore")
    if a.bundle and not (Path(a.bundle) / "manifest.json").is_file():
        print(f"vectors: error: {a.bundle} is not a memlora bundle (no manifest.json)", file=sys.stderr)
        return 1
    meta = write(Path(a.out), Path(a.bundle) if a.bundle else None)
    print(f"vectors: wrote {len(meta['files'])} files to {a.out} in {meta['seconds']} s (bundle {meta['bundle']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
