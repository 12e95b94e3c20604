"""Versioned prompt templates for the memory operations. A bundle's manifest names the template id per op.

These are the v1 texts; the memory pipeline (extract -> update -> generate) renders them. Changing a text means a
new id, never an edit in place, so a bundle always renders exactly the prompts its adapters were trained on.
"""

from __future__ import annotations

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


def template_for(op: str) -> str:
    return DEFAULT_TEMPLATE.get(op, "memlora.generate.v1")


def render(template_id: str, **fields: str) -> list[dict[str, str]]:
    """Chat messages for a template; missing fields raise KeyError naming the field."""
    if template_id not in TEMPLATES:
        raise KeyError(f"unknown prompt template {template_id!r}; known: {sorted(TEMPLATES)}")
    t = TEMPLATES[template_id]
    return [{"role": "system", "content": t["system"]}, {"role": "user", "content": t["user"].format(**fields)}]
