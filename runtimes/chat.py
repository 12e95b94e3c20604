"""Prompts as data (stdlib only): what a bundle carries so that any reader builds an op's prompt by string
substitution, with no template engine.

- `ChatFormat` (manifest `tokenizer.chat_format`): per role the literal text before and after a message, the
  generation prompt, the system text the model's template inserts when a conversation has none, and whether the
  tokenizer adds its special tokens (plain-text models without a chat template: Gemma 3 270M base). The exporter
  derives it from the model's real chat template and checks it there against that template on the ops' message
  shapes (exporter/chatformat.py); readers only concatenate.
- `OpPrompt` (manifest `ops.<op>.prompt`): the op's system text and its user template with named `{fields}`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

ROLES = ("system", "user", "assistant")
_FIELD = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


class PromptError(ValueError):
    """A chat format or op prompt that is malformed, or fields that do not fit it."""


@dataclass(frozen=True)
class ChatFormat:
    roles: Mapping[str, tuple[str, str]]
    generation_prompt: str
    default_system: str | None = None
    add_special_tokens: bool = False

    def render(self, messages: Sequence[Mapping[str, str]]) -> str:
        """The text the model's chat template gives for `messages` followed by the generation prompt."""
        msgs = list(messages)
        if self.default_system is not None and (not msgs or msgs[0]["role"] != "system"):
            msgs.insert(0, {"role": "system", "content": self.default_system})
        parts = []
        for m in msgs:
            if m["role"] not in self.roles:
                raise PromptError(f"role {m['role']!r} is not in this bundle's chat format ({sorted(self.roles)})")
            before, after = self.roles[m["role"]]
            parts += [before, m["content"], after]
        return "".join(parts) + self.generation_prompt

    def to_dict(self) -> dict[str, Any]:
        return {"roles": {r: {"before": b, "after": a} for r, (b, a) in self.roles.items()},
                "generation_prompt": self.generation_prompt, "default_system": self.default_system,
                "add_special_tokens": self.add_special_tokens}

    @classmethod
    def from_dict(cls, d: Any, where: str = "chat_format") -> "ChatFormat":
        if not isinstance(d, dict):
            raise PromptError(f"{where}: expected an object")
        roles = d.get("roles")
        if not isinstance(roles, dict) or not roles:
            raise PromptError(f"{where}.roles: expected an object of roles")
        out = {}
        for r, ba in roles.items():
            if not isinstance(ba, dict) or not isinstance(ba.get("before"), str) or not isinstance(ba.get("after"), str):
                raise PromptError(f"{where}.roles.{r}: expected {{before: string, after: string}}")
            out[r] = (ba["before"], ba["after"])
        gp, ds, sp = d.get("generation_prompt"), d.get("default_system"), d.get("add_special_tokens", False)
        if not isinstance(gp, str):
            raise PromptError(f"{where}.generation_prompt: expected a string")
        if ds is not None and not isinstance(ds, str):
            raise PromptError(f"{where}.default_system: expected a string or null")
        if not isinstance(sp, bool):
            raise PromptError(f"{where}.add_special_tokens: expected true or false")
        return cls(roles=out, generation_prompt=gp, default_system=ds, add_special_tokens=sp)


# Models without a chat template: each message on its own line, the tokenizer adds its special tokens (<bos>).
PLAIN = ChatFormat(roles={r: ("", "\n") for r in ROLES}, generation_prompt="", default_system=None,
                   add_special_tokens=True)


@dataclass(frozen=True)
class OpPrompt:
    id: str
    system: str
    user: str
    """The user message with `{field}` placeholders; no other braces."""
    fields: tuple[str, ...] = field(default=())

    def messages(self, **values: str) -> list[dict[str, str]]:
        """[system, user] with the fields substituted (KeyError-like PromptError naming a missing field)."""
        missing = [f for f in self.fields if f not in values]
        if missing:
            raise PromptError(f"prompt {self.id!r} needs the field(s) {missing}")
        user = _FIELD.sub(lambda m: str(values[m.group(1)]), self.user)
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "system": self.system, "user": self.user, "fields": list(self.fields)}

    @classmethod
    def from_dict(cls, d: Any, where: str = "prompt") -> "OpPrompt":
        if not isinstance(d, dict):
            raise PromptError(f"{where}: expected an object")
        for k in ("id", "system", "user"):
            if not isinstance(d.get(k), str):
                raise PromptError(f"{where}.{k}: expected a string")
        fields = d.get("fields")
        if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
            raise PromptError(f"{where}.fields: expected a list of field names")
        named = _FIELD.findall(d["user"])
        stripped = _FIELD.sub("", d["user"])
        if "{" in stripped or "}" in stripped or sorted(set(named)) != sorted(set(fields)):
            raise PromptError(f"{where}.user: its {{placeholders}} {sorted(set(named))} must be exactly the fields "
                              f"{sorted(fields)}, with no other braces")
        return cls(id=d["id"], system=d["system"], user=d["user"], fields=tuple(fields))
