"""Prompt vectors: turns / facts / memories / dates formatting, the op messages from the bundle's prompts, and the
prompt text and token ids of messages framed by the bundle's chat format."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

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
         "11:59 pm on 29 February, 2024", "1:56 pm on 8 May, 2023 extra", "2023-13-01", "1:056 pm on 8 May, 2023",
         "01:5 pm on 008 May, 2023", "1:56 pm on 8 May, 02023", "8 May 23"]


def format_vectors(manifest: Any) -> dict[str, Any]:
    """Formatting, and the op messages built from the bundle's own prompts (manifest ops.*.prompt)."""
    from runtimes.memory import prompts as mp

    prompt = {op: e.prompt for op, e in manifest.ops.items()}
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
        out["messages"].append({"op": "extract", "turns": TURNS, "date": date,
                                "messages": mp.extract_messages(TURNS, date, prompt["extract"])})
    msgs, id_map = mp.update_messages(facts, mems, prompt["update"])
    out["messages"].append({"op": "update", "facts": facts, "memories": mems, "messages": msgs, "id_map": id_map})
    msgs, id_map = mp.update_messages([], [], prompt["update"])
    out["messages"].append({"op": "update", "facts": [], "memories": [], "messages": msgs, "id_map": id_map})
    out["messages"].append({"op": "generate", "question": "  Where does Caroline live?\n", "memories": mems,
                            "messages": mp.generate_messages("  Where does Caroline live?\n", mems, prompt["generate"])})
    return out


def chat_vectors(manifest: Any, op_messages: list[list[dict[str, str]]]) -> list[dict[str, Any]]:
    """Prompts as the runtime builds them (runtimes.base.Runtime.apply_chat_template + encode: the bundle's
    tokenizer.chat_format, concatenated) and, for the bundle, their token ids; next to them what the model's own Jinja
    chat template gives (the prompt before schema 2), which the concatenation must equal for the op messages."""
    from tokenizers import Tokenizer

    from runtimes.base import Runtime
    from runtimes.chat import PLAIN

    edge = [
        [{"role": "user", "content": "Hello there"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "What is {{ 1 + 1 }} or {% if %}?"}],
        [{"role": "system", "content": ""}, {"role": "user", "content": "  padded\n\n  "}],
        [{"role": "system", "content": "S"}, {"role": "user", "content": "u1"}, {"role": "user", "content": "u2"}],
        [{"role": "user", "content": "CRLF\r\nline ’quotes’ 😀 naïve"}],
    ]
    tok = Tokenizer.from_file(str(manifest.tokenizer_file))
    jinja = SimpleNamespace(_template=None, manifest=SimpleNamespace(chat_format=None, chat_template=manifest.chat_template,
                                                                     raw=manifest.raw))
    out = []
    for name, fmt in (("bundle", manifest.chat_format), ("plain", PLAIN)):
        rt = SimpleNamespace(manifest=SimpleNamespace(chat_format=fmt, chat_template=None))
        for k, messages in enumerate([*op_messages, *edge]):
            case: dict[str, Any] = {"format_name": name, "chat_format": fmt.to_dict(), "messages": messages,
                                    "text": Runtime.apply_chat_template(rt, messages)}
            if name == "bundle":
                case["ids"] = tok.encode(case["text"], add_special_tokens=fmt.add_special_tokens).ids  # Runtime.encode
                if manifest.chat_template:
                    case["template_text"] = Runtime.apply_chat_template(jinja, messages)
                    if k < len(op_messages) and case["template_text"] != case["text"]:
                        raise SystemExit(f"vectors: op prompt {k}: chat_format gives {case['text']!r}, the chat template "
                                         f"{case['template_text']!r}")
            out.append(case)
    return out
