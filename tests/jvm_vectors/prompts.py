"""Prompt vectors: the template table, turns / facts / memories / dates formatting and the op messages, chat
templates applied to messages."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from .common import _err


def template_vectors() -> dict[str, Any]:
    from runtimes import prompts

    return {"templates": prompts.TEMPLATES, "default_template": prompts.DEFAULT_TEMPLATE,
            "default_generation": prompts.DEFAULT_GENERATION, "fallback_generation": prompts.FALLBACK_GENERATION,
            "ops": ["extract", "update", "generate", "other"],
            "template_for": {op: prompts.template_for(op) for op in ("extract", "update", "generate", "other")}}


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
