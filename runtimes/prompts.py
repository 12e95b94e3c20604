"""Versioned prompt templates for the memory operations. A bundle's manifest names the template id per op.

These are the v1 texts; the memory pipeline (extract -> update -> generate) renders them. Changing a text means a
new id, never an edit in place, so a bundle always renders exactly the prompts its adapters were trained on.
"""

from __future__ import annotations

import string as _string

from .chat import OpPrompt

TEMPLATES: dict[str, dict[str, str]] = {
    "memlora.extract.v1": {
        "system": "You extract lasting personal facts from a conversation. Reply only with JSON of the form "
                  '{"facts": ["<fact>", ...]}. Each fact is one short sentence naming the person. '
                  'If there is nothing worth remembering, reply {"facts": []}.',
        "user": "Session date: {date}\nConversation:\n{turns}",
    },
    "memlora.update.v1": {
        "system": "You maintain a memory store. Compare the new facts with the stored memories and reply only with JSON "
                  '{"memory": [{"id": "<id>", "text": "<text>", "event": "ADD|UPDATE|DELETE|NONE", '
                  '"old_memory": "<previous text, for UPDATE>"}]}. Use the ids shown; new memories get new ids.',
        "user": "Stored memories:\n{memories}\nNew facts:\n{facts}",
    },
    "memlora.generate.v1": {
        "system": "You answer questions about the user from their memories. Answer in a few words, no explanation.",
        "user": "Memories:\n{memories}\nQuestion: {question}",
    },
}

DEFAULT_TEMPLATE = {"extract": "memlora.extract.v1", "update": "memlora.update.v1", "generate": "memlora.generate.v1"}

# Generation defaults per op (greedy; lengths sized for the op's typical output).
DEFAULT_GENERATION = {
    "extract": {"max_new_tokens": 192, "temperature": 0.0, "top_p": 1.0},
    "update": {"max_new_tokens": 256, "temperature": 0.0, "top_p": 1.0},
    "generate": {"max_new_tokens": 48, "temperature": 0.0, "top_p": 1.0},
}
FALLBACK_GENERATION = {"max_new_tokens": 128, "temperature": 0.0, "top_p": 1.0}

# Fixed inputs used by the export fidelity check (and handy as smoke-test prompts).
SAMPLE_FIELDS = {
    "memlora.extract.v1": {
        "date": "1:56 pm on 8 May, 2023",
        "turns": "Caroline: I went to an LGBTQ support group yesterday and it was so powerful.\n"
                 "Melanie: That's great! I'm painting a sunrise for my kids this weekend.",
    },
    "memlora.update.v1": {
        "memories": '0: Melanie has two kids\n1: Caroline lives in Boston',
        "facts": "- Caroline moved to Denver last month\n- Melanie likes painting sunrises",
    },
    "memlora.generate.v1": {
        "memories": "[8 May 2023] Caroline attended an LGBTQ support group\n[8 May 2023] Melanie paints sunrises",
        "question": "What did Caroline attend on 7 May 2023?",
    },
}


# The export fidelity check runs every sample of the op's template (the first is SAMPLE_FIELDS): several short
# answers pool into a steadier agreement figure than one.
FIDELITY_SAMPLES = {
    "memlora.extract.v1": [
        SAMPLE_FIELDS["memlora.extract.v1"],
        {"date": "7:30 pm on 14 August, 2023",
         "turns": "Jon: I finally opened my dance studio downtown last week!\n"
                  "Gina: Congrats! I lost my job at the bank, so I'm starting an online clothing store."},
        {"date": "10:04 am on 2 March, 2024",
         "turns": "Maria: My cat Luna turned three today.\n"
                  "Sam: Happy birthday Luna! I'm training for the Berlin marathon in September."},
    ],
    "memlora.update.v1": [
        SAMPLE_FIELDS["memlora.update.v1"],
        {"memories": "0: Jon works at a bank\n1: Jon wants to open a dance studio",
         "facts": "- Jon opened a dance studio downtown"},
        {"memories": "0: Sam runs every morning\n1: Maria has a cat named Luna",
         "facts": "- Sam is training for the Berlin marathon\n- Maria's cat Luna is three years old"},
    ],
    "memlora.generate.v1": [
        SAMPLE_FIELDS["memlora.generate.v1"],
        {"memories": "[14 August 2023] Jon opened a dance studio downtown\n[14 August 2023] Gina lost her job at the bank",
         "question": "Where did Jon open his dance studio?"},
        {"memories": "[2 March 2024] Maria's cat Luna turned three\n[2 March 2024] Sam trains for the Berlin marathon",
         "question": "Which marathon is Sam training for?"},
    ],
}


def template_for(op: str) -> str:
    return DEFAULT_TEMPLATE.get(op, "memlora.generate.v1")


def op_prompt(template_id: str) -> OpPrompt:
    """The template as bundle data (manifest ops.<op>.prompt)."""
    if template_id not in TEMPLATES:
        raise KeyError(f"unknown prompt template {template_id!r}; known: {sorted(TEMPLATES)}")
    t = TEMPLATES[template_id]
    return OpPrompt(id=template_id, system=t["system"], user=t["user"],
                    fields=tuple(dict.fromkeys(f for _, f, _, _ in _string.Formatter().parse(t["user"]) if f)))


def render(template_id: str, **fields: str) -> list[dict[str, str]]:
    """Chat messages for a template; missing fields raise KeyError naming the field."""
    if template_id not in TEMPLATES:
        raise KeyError(f"unknown prompt template {template_id!r}; known: {sorted(TEMPLATES)}")
    t = TEMPLATES[template_id]
    return [{"role": "system", "content": t["system"]}, {"role": "user", "content": t["user"].format(**fields)}]
