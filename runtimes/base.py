"""`Runtime`: load a bundle, then `generate(op, messages | prompt)` with one shared decoding loop.

Backends implement `_load(op)` (returns nothing; loads the op's program) and `_forward(op, tokens, start_pos)`
(returns the logits of the last position as a float32 numpy array). Everything else — chat template, tokenizer,
greedy / sampled decoding, stop tokens, streaming, stats — is here, identical for every backend.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .chat import PromptError
from .manifest import BundleError, Manifest, load_manifest, one_line


@dataclass
class Stats:
    load_ms: float = 0.0
    prompt_tokens: int = 0
    prefill_ms: float = 0.0
    new_tokens: int = 0
    decode_ms: float = 0.0
    ttft_ms: float = 0.0
    adapter_switch_ms: float = 0.0  # ONNX separate adapters: set_active_adapter on the op's fresh generator

    @property
    def prefill_tok_s(self) -> float:
        return self.prompt_tokens / (self.prefill_ms / 1e3) if self.prefill_ms else 0.0

    @property
    def decode_tok_s(self) -> float:
        # The first new token comes out of prefill; decode covers the rest.
        steps = max(self.new_tokens - 1, 0)
        return steps / (self.decode_ms / 1e3) if self.decode_ms and steps else 0.0

    def to_dict(self) -> dict[str, float]:
        d = asdict(self)
        d.update(prefill_tok_s=round(self.prefill_tok_s, 2), decode_tok_s=round(self.decode_tok_s, 2))
        return d


@dataclass
class Generation:
    op: str
    text: str
    tokens: list[int]
    prompt_tokens: list[int]
    stop_reason: str  # "stop_token" | "max_new_tokens" | "context_full"
    stats: Stats = field(default_factory=Stats)


def sample_next(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> int:
    if temperature <= 0.0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p)
        keep = order[: int(np.searchsorted(np.cumsum(p[order]), top_p)) + 1]
        q = np.zeros_like(p)
        q[keep] = p[keep]
        p = q / q.sum()
    return int(rng.choice(len(p), p=p))


def bundle_tokenizer(manifest: Manifest) -> Any:
    """The bundle's LM tokenizer (a `tokenizers.Tokenizer`); BundleError when it cannot be read."""
    from tokenizers import Tokenizer

    path = manifest.tokenizer_file  # checked: a plain name the bundle lists, inside it (sha256 checked by verify)
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception for a file it cannot parse
        raise BundleError(f"tokenizer {path.name} cannot be read: {one_line(e)}") from e


class Runtime(ABC):
    backend = "abstract"

    def __init__(self, manifest: Manifest):
        self.manifest = manifest
        self.tokenizer = bundle_tokenizer(manifest)
        self._template = None
        self.load_ms: dict[str, float] = {}

    @classmethod
    def from_bundle(cls, bundle: str | Path, verify: bool = True, **kwargs: Any) -> "Runtime":
        return cls(load_manifest(bundle, verify=verify), **kwargs)

    # ------------------------------------------------------------------ backend hooks
    @abstractmethod
    def _load(self, op: str) -> None: ...

    @abstractmethod
    def _forward(self, op: str, tokens: list[int], start_pos: int) -> np.ndarray: ...

    # ------------------------------------------------------------------ shared
    def ensure_loaded(self, op: str) -> float:
        """Load the op's program once; returns the milliseconds the load took (0 when already loaded)."""
        if op not in self.manifest.ops:
            raise BundleError(f"op {op!r} is not in this bundle; ops: {sorted(self.manifest.ops)}")
        if op in self.load_ms:
            return 0.0
        t0 = time.perf_counter()
        self._load(op)
        self.load_ms[op] = (time.perf_counter() - t0) * 1e3
        return self.load_ms[op]

    def forward(self, op: str, tokens: list[int], start_pos: int) -> np.ndarray:
        self.ensure_loaded(op)
        if start_pos + len(tokens) > self.manifest.max_seq_len:
            raise ValueError(f"{start_pos + len(tokens)} tokens exceed the bundle's max_seq_len {self.manifest.max_seq_len}")
        return self._forward(op, tokens, start_pos)

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        fmt = self.manifest.chat_format
        if fmt is not None:  # schema 2: the framing the exporter rendered from the template, by concatenation
            try:
                return fmt.render(messages)
            except PromptError as e:
                raise BundleError(str(e)) from None
        tpl = self.manifest.chat_template  # schema 1: the model's Jinja template, rendered here
        if not tpl:
            return "\n".join(m["content"] for m in messages) + "\n"
        from jinja2 import TemplateError

        try:  # the template is bundle data: whatever it does wrong (sandbox refusal, syntax, recursion) is one line
            if self._template is None:
                from jinja2.sandbox import ImmutableSandboxedEnvironment

                def raise_exception(msg: str) -> None:
                    raise TemplateError(msg)

                env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
                env.globals["raise_exception"] = raise_exception
                self._template = env.from_string(tpl)
            tok = self.manifest.raw["tokenizer"]
            return self._template.render(messages=messages, add_generation_prompt=True,
                                         bos_token=tok.get("bos_token") or "", eos_token=tok.get("eos_token") or "")
        except (TemplateError, RecursionError, TypeError, ValueError, AttributeError, KeyError, IndexError) as e:
            raise BundleError(f"the bundle's chat template cannot be rendered: {type(e).__name__}: "
                              f"{' '.join(str(e).split())[:200]}") from None

    def encode(self, messages: list[dict[str, str]] | None = None, prompt: str | None = None) -> list[int]:
        if (messages is None) == (prompt is None):
            raise ValueError("give exactly one of messages or prompt")
        text = self.apply_chat_template(messages if messages is not None else [{"role": "user", "content": prompt}])
        # A chat template writes its own special tokens; plain text (a base model without one, e.g. Gemma 3 270M)
        # gets the tokenizer's post-processing, as transformers encodes it (Gemma's <bos>: without it the model
        # answers <eos> at once).
        fmt = self.manifest.chat_format
        special = fmt.add_special_tokens if fmt is not None else not self.manifest.chat_template
        return self.tokenizer.encode(text, add_special_tokens=special).ids

    def stream(self, op: str, messages=None, prompt=None, *, max_new_tokens: int | None = None,
               temperature: float | None = None, top_p: float | None = None, seed: int = 0,
               prompt_tokens: list[int] | None = None, constraint: Any | None = None) -> Iterator[str | Generation]:
        """Yields text pieces as they decode, then the final `Generation`. `constraint` (e.g. a
        runtimes.memory.constrain.JsonConstraint) masks the logits of each step to the tokens its `start()` state
        allows and is told every chosen token."""
        entry = self.manifest.ops.get(op)
        if entry is None:
            raise BundleError(f"op {op!r} is not in this bundle; ops: {sorted(self.manifest.ops)}")
        gen = entry.generation
        max_new = int(max_new_tokens if max_new_tokens is not None else gen.get("max_new_tokens", 128))
        temp = float(temperature if temperature is not None else gen.get("temperature", 0.0))
        tp = float(top_p if top_p is not None else gen.get("top_p", 1.0))
        stops = set(entry.stop_token_ids)
        ids = prompt_tokens if prompt_tokens is not None else self.encode(messages, prompt)
        rng = np.random.default_rng(seed)
        cstate = constraint.start(max_new_tokens=max_new) if constraint is not None else None
        stats = Stats(load_ms=self.ensure_loaded(op) or self.load_ms[op], prompt_tokens=len(ids))
        room = self.manifest.max_seq_len - len(ids)
        if room <= 0:
            raise ValueError(f"prompt of {len(ids)} tokens does not fit the bundle's max_seq_len {self.manifest.max_seq_len}")
        t0 = time.perf_counter()
        logits = self.forward(op, ids, 0)
        stats.prefill_ms = (time.perf_counter() - t0) * 1e3
        out: list[int] = []
        reason = "max_new_tokens"
        # Incremental detokenization: each step decodes only the tokens since the last piece (plus the ones before
        # it, for context), not the whole answer again; a piece is held back while it ends in an incomplete
        # character (a multi-byte emoji split over tokens).
        prefix, read = 0, 0
        t_dec = time.perf_counter()
        while True:
            if cstate is not None:
                logits = cstate.apply(logits)
            tok = sample_next(logits, temp, tp, rng)
            if cstate is not None:
                cstate.advance(tok)
            if not out:
                stats.ttft_ms = (time.perf_counter() - t0) * 1e3
            if tok in stops:
                reason = "stop_token"
                break
            out.append(tok)
            seen = self.tokenizer.decode(out[prefix:read], skip_special_tokens=True)
            now = self.tokenizer.decode(out[prefix:], skip_special_tokens=True)
            if len(now) > len(seen) and not now.endswith("\ufffd") and now.startswith(seen):
                yield now[len(seen):]
                prefix, read = read, len(out)
            if len(out) >= max_new:
                break
            if len(ids) + len(out) >= self.manifest.max_seq_len:
                reason = "context_full"
                break
            logits = self.forward(op, [tok], len(ids) + len(out) - 1)
        stats.decode_ms = (time.perf_counter() - t_dec) * 1e3
        stats.new_tokens = len(out) + (1 if reason == "stop_token" else 0)
        yield Generation(op=op, text=self.tokenizer.decode(out, skip_special_tokens=True), tokens=out,
                         prompt_tokens=ids, stop_reason=reason, stats=stats)

    def generate(self, op: str, messages=None, prompt=None, on_token: Callable[[str], None] | None = None,
                 **kwargs: Any) -> Generation:
        result = None
        for item in self.stream(op, messages, prompt, **kwargs):
            if isinstance(item, Generation):
                result = item
            elif on_token is not None:
                on_token(item)
        assert result is not None
        return result
