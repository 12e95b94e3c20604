"""Few-shot prompting: a model with no adapters shown worked examples of each memory op before its prompt.

The MemLoRA paper's other way to make a small model do the memory ops, and the baseline its adapters are compared
with (README, "The paper's comparisons at our scale"). `FewShotLLM` wraps any LLM of the pipeline (a bundle runtime
or the PyTorch reference): before an op's messages it puts that op's shots as earlier turns of the chat, each shot's
user messages then its target as the assistant's reply; the op's own system message stays first. Everything else
(tokenizer, stop tokens, manifest, the JSON mask) is the wrapped LLM's.

A base model (Gemma-3-270M has no chat template, so its messages are plain lines) does not stop after one answer: it
goes on with the next imagined example. The JSON ops end at the mask's closing brace; a free-text op whose shots
all answer in one line ends its answer at the first line break, as few-shot evaluations do (a stop sequence "\\n").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence


@dataclass(frozen=True)
class Shot:
    messages: list[dict[str, str]]
    """The example's prompt, as the pipeline renders it (its system message is dropped when shown as a shot)."""
    target: str
    """What the op should answer."""


def with_shots(messages: Sequence[Mapping[str, str]], shots: Sequence[Shot]) -> list[dict[str, str]]:
    """`messages` with `shots` put between its system message(s) and the rest."""
    msgs = [dict(m) for m in messages]
    head = [m for m in msgs if m["role"] == "system"]
    rest = [m for m in msgs if m["role"] != "system"]
    shown: list[dict[str, str]] = []
    for s in shots:
        shown += [dict(m) for m in s.messages if m["role"] != "system"]
        shown.append({"role": "assistant", "content": s.target})
    return head + shown + rest


class FewShotLLM:
    """`llm` with `shots[op]` shown before each call of `op` (ops without shots pass through unchanged)."""

    def __init__(self, llm: Any, shots: Mapping[str, Sequence[Shot]]):
        self.llm = llm
        self.shots = {op: list(s) for op, s in shots.items() if s}
        self.one_line = {op: all("\n" not in s.target for s in ss) for op, ss in self.shots.items()}

    def __getattr__(self, name: str) -> Any:  # tokenizer, manifest, stop_token_ids, backend, ...
        return getattr(self.llm, name)

    def generate(self, op: str, messages: Sequence[Mapping[str, str]] | None = None, **kwargs: Any) -> Any:
        shots = self.shots.get(op)
        if not shots or messages is None:
            return self.llm.generate(op, messages=messages, **kwargs)
        g = self.llm.generate(op, messages=with_shots(messages, shots), **kwargs)
        if self.one_line[op] and kwargs.get("constraint") is None and "\n" in g.text.strip():
            g = _first_line(g)
        return g


def _first_line(g: Any) -> Any:
    """The generation cut at its first line break (text only: its tokens and stats stay what was decoded)."""
    text = g.text.strip().split("\n", 1)[0].strip()
    try:
        return replace(g, text=text)
    except TypeError:  # not a dataclass: a caller's own generation object
        g.text = text
        return g
