"""The PyTorch + PEFT reference backend: the float base model, one LoRA adapter per op switched per call; and
`memlora-eval`, the memory evaluation (runtimes/memory/eval.py) with this reference as its default backend.

Same call shape as a bundle runtime (runtimes/base.py): `generate(op, messages=..., max_new_tokens=...)` returns a
`Generation` with `.text`. Ops without an adapter run on the bare base (adapters disabled). Decoding is
transformers' `generate` (greedy unless a temperature is given) with the op's JSON constraint as a logits processor
when one is passed.

It lives on the exporter side because it loads models with the exporter's loader (exporter.load); the runtime side
never imports the exporter, so runtimes/memory/eval.py takes the reference backend from here (`eval_main`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from runtimes import prompts
from runtimes.base import Generation, Stats


class ReferenceLLM:
    backend = "reference"

    def __init__(self, base: str = "smollm2-135m", adapters: dict[str, str | Path] | None = None,
                 threads: int | None = None):
        import torch

        from .load import load_adapter, load_base
        from .pipeline import reference_model, stop_token_ids

        if threads:
            torch.set_num_threads(threads)
        t0 = time.perf_counter()
        self.base = load_base(base)
        self.tokenizer = self.base.tokenizer
        self.stops = stop_token_ids(self.tokenizer, self.base.config)
        self.adapters = {op: str(p) for op, p in (adapters or {}).items()}
        # The exporter's checks (safetensors only, LoRA only, clear errors), then the export's fidelity reference.
        self.model = reference_model(self.base.model, {op: load_adapter(op, p) for op, p in self.adapters.items()})
        self.load_ms = (time.perf_counter() - t0) * 1e3
        self.name = self.base.name + (" + adapters(" + ",".join(self.adapters) + ")" if self.adapters else "")

    def stop_token_ids(self, op: str) -> list[int]:
        return list(self.stops)

    def encode(self, messages: list[dict[str, str]] | None = None, prompt: str | None = None) -> list[int]:
        """The tokens of the model's chat template; a tokenizer without one (Gemma-3-270M base) gets the plain
        framing its bundle would carry (runtimes.chat.PLAIN: a line per message, the tokenizer's <bos>)."""
        if (messages is None) == (prompt is None):
            raise ValueError("give exactly one of messages or prompt")
        msgs = messages if messages is not None else [{"role": "user", "content": prompt}]
        if not getattr(self.tokenizer, "chat_template", None):
            from runtimes.chat import PLAIN

            return self.tokenizer(PLAIN.render(msgs), add_special_tokens=True)["input_ids"]
        text = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def generate(self, op: str, messages=None, prompt=None, *, max_new_tokens: int | None = None,
                 temperature: float | None = None, top_p: float | None = None, seed: int = 0,
                 prompt_tokens: list[int] | None = None, constraint: Any | None = None, **_: Any) -> Generation:
        import contextlib

        import torch

        gen = prompts.DEFAULT_GENERATION.get(op, prompts.FALLBACK_GENERATION)
        max_new = int(max_new_tokens if max_new_tokens is not None else gen["max_new_tokens"])
        temp = float(temperature if temperature is not None else gen["temperature"])
        tp = float(top_p if top_p is not None else gen["top_p"])
        ids = prompt_tokens if prompt_tokens is not None else self.encode(messages, prompt)
        ctx: Any = contextlib.nullcontext()
        if self.adapters:
            if op in self.adapters:
                self.model.set_adapter(f"memlora_{op}")
            else:
                ctx = self.model.disable_adapter()
        procs = []
        cstate = constraint.start(max_new_tokens=max_new) if constraint is not None else None
        if cstate is not None:
            procs.append(cstate.logits_processor(len(ids)))
        kwargs: dict[str, Any] = dict(max_new_tokens=max_new, eos_token_id=self.stops, pad_token_id=self.stops[0],
                                      do_sample=temp > 0)
        if temp > 0:
            torch.manual_seed(seed)
            kwargs.update(temperature=temp, top_p=tp, top_k=0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        t0 = time.perf_counter()
        with ctx, torch.no_grad():
            from transformers import LogitsProcessorList

            out = self.model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                      logits_processor=LogitsProcessorList(procs), **kwargs)
        ms = (time.perf_counter() - t0) * 1e3
        new = out[0, len(ids):].tolist()
        reason = "max_new_tokens"
        if new and new[-1] in self.stops:
            new, reason = new[:-1], "stop_token"
        stats = Stats(prompt_tokens=len(ids), new_tokens=len(new) + (reason == "stop_token"), decode_ms=ms)
        return Generation(op=op, text=self.tokenizer.decode(new, skip_special_tokens=True), tokens=new,
                          prompt_tokens=list(ids), stop_reason=reason, stats=stats)


# ------------------------------------------------------------------------------------------------- memlora-eval
def parse_adapters(items: list[str]) -> dict[str, str]:
    """`OP=DIR` items, or a single DIR holding one sub-directory per op (extract/, update/, generate/)."""
    from runtimes.memory.eval import EvalError

    out: dict[str, str] = {}
    for item in items:
        op, sep, path = item.partition("=")
        if sep:
            out[op] = path
            continue
        d = Path(item)
        if not d.is_dir():
            raise EvalError(f"--adapters {item!r}: not a directory (give DIR with op sub-directories, or OP=DIR)")
        found = {p.name: str(p) for p in sorted(d.iterdir()) if (p / "adapter_config.json").is_file()}
        if not found:
            raise EvalError(f"--adapters {item}: no sub-directory with an adapter_config.json")
        out.update(found)
    return out


def reference_backend(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    """memlora-eval without --bundle: the reference LLM (--base + --adapters) and the PyTorch embedder."""
    from runtimes.memory.embed import make_embedder
    from runtimes.memory.eval import EvalError

    if args.embedder == "bundle":
        raise EvalError("--embedder bundle needs --bundle")
    adapters = parse_adapters(args.adapters or [])
    llm = ReferenceLLM(args.base, adapters)
    embedder = make_embedder("torch")
    return llm, embedder, {"backend": "reference", "model": args.base, "adapters": adapters or None}


def few_shot_examples(args: argparse.Namespace, evaluated: list[str]) -> dict[str, list[Any]]:
    """`memlora-eval --few-shot K`: per op K examples of the adapters' training data (exporter.train.data, the
    training conversations only; cached like memlora-train's), the shortest that show the op at work: an
    extraction with 2-3 facts, an update with more than one kind of event, an answer of a few words whose evidence
    is among the memories shown; each from another conversation where there are enough."""
    from runtimes.memory import locomo
    from runtimes.memory.eval import EvalError
    from runtimes.memory.fewshot import Shot

    from .load import cache_root
    from .train import data as D

    try:
        train_ids = {c.sample_id for c in locomo.split(locomo.load(args.data), "train", args.split_file)}
    except (FileNotFoundError, ValueError) as e:
        raise EvalError(str(e)) from None
    seen = sorted(train_ids & set(evaluated))
    if seen:
        raise EvalError(f"--few-shot draws its examples from the training conversations; {seen} are evaluated too: "
                        "evaluate the validation split")

    def useful(e: Any) -> bool:
        if e.op == "extract":
            return 2 <= len(json.loads(e.target)["facts"]) <= 3
        if e.op == "update":
            return len(set(e.meta.get("kinds", []))) > 1
        return e.meta.get("evidence_shown", 0) >= 1 and 1 <= len(e.target.split()) <= 6

    out: dict[str, list[Any]] = {}
    for op in ("extract", "update", "generate"):
        try:
            examples = D.build(op, "train", args.data, cache_dir=cache_root() / "train-data")
        except D.InputError as e:
            raise EvalError(str(e)) from None
        ranked = sorted((e for e in examples if useful(e)),
                        key=lambda e: sum(len(m["content"]) for m in e.messages) + len(e.target))
        firsts: dict[Any, Any] = {}  # the shortest of each conversation first, then the rest by length
        for e in ranked:
            firsts.setdefault(e.meta.get("sample_id"), e)
        picked = [*firsts.values(), *(e for e in ranked if e not in firsts.values())][: args.few_shot]
        out[op] = [Shot(e.messages, e.target) for e in picked]
    return out


def eval_main(argv: list[str] | None = None) -> int:
    """`memlora-eval`: runtimes/memory/eval.py's CLI with the PyTorch reference as its default backend, and the
    training data for `--few-shot`."""
    from runtimes.memory.eval import main

    return main(argv, reference=reference_backend, shots=few_shot_examples)


if __name__ == "__main__":
    sys.exit(eval_main())
