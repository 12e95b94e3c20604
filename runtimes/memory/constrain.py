"""Decoding constrained to the JSON shape of an op, with llguidance (a Rust JSON-schema -> token-mask engine).

`JsonConstraint.for_op(op, tokenizer_json, stop_token_ids)` compiles the op's schema once for a tokenizer;
`.start()` gives a per-generation state whose `apply(logits)` masks every token that cannot continue valid JSON of
that shape (stop tokens only once the JSON is complete) and whose `advance(token)` consumes the chosen token.
The same state drives the bundle runtimes (runtimes/base.py `stream(..., constraint=)`) and the PyTorch reference
(`logits_processor()` for transformers' generate), so both decode under the same mask.

Compact separators (", " and ": ") and no free whitespace: the model cannot loop on blanks, and what it writes is
exactly what `json.dumps` writes. Schemas mirror runtimes.memory.parse, inside its bounds (MAX_TEXT < parse's
MAX_TEXT_CHARS, maxItems <= MAX_FACTS / MAX_EVENTS; tests/test_memory_hostile.py checks); lists are capped
(maxItems) so a looping model has to close the JSON.

Closing within the token budget: given `max_new_tokens`, once fewer than `CLOSE_MARGIN` tokens remain the mask
keeps only the allowed tokens made of closing characters (`"`, `]`, `}`) whenever there is one - those starting
with a quote first, since inside a string `]` and `}` are mere text - so a long output ends as complete JSON
instead of being cut off mid-string (the grammar itself forces any required key left).
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any, Sequence

import numpy as np

from .parse import MAX_EVENTS

MAX_TEXT = 300
EXTRACT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"facts": {"type": "array", "maxItems": 12,
                             "items": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT}}},
    "required": ["facts"],
    "additionalProperties": False,
}
UPDATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"memory": {"type": "array", "maxItems": 16, "items": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9]{1,3}$"},
            "text": {"type": "string", "maxLength": MAX_TEXT},
            "event": {"enum": ["ADD", "UPDATE", "DELETE", "NONE"]},
            "old_memory": {"type": ["string", "null"], "maxLength": MAX_TEXT},
        },
        "required": ["id", "text", "event"],
        "additionalProperties": False,
    }}},
    "required": ["memory"],
    "additionalProperties": False,
}
SCHEMAS: dict[str, dict[str, Any]] = {"extract": EXTRACT_SCHEMA, "update": UPDATE_SCHEMA}


def update_schema(n_ids: int) -> dict[str, Any]:
    """The update schema for one prompt: ids limited to the temporary ids in play ("0" .. n_ids-1: the shown
    memories, then one new id per fact), at least one item (every new fact yields an event, if only NONE) and at
    most n_ids (and at most parse.MAX_EVENTS, which the parser refuses beyond)."""
    import copy

    s = copy.deepcopy(UPDATE_SCHEMA)
    arr = s["properties"]["memory"]
    arr["minItems"] = 1
    arr["maxItems"] = max(1, min(n_ids, MAX_EVENTS))
    arr["items"]["properties"]["id"] = {"enum": [str(i) for i in range(max(1, n_ids))]}
    return s
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
CLOSE_MARGIN = 24
_CLOSERS = frozenset(b'"]}')


@functools.lru_cache(maxsize=4)
def _ll_tokenizer(tokenizer_json: str, stops: tuple[int, ...]) -> Any:
    import llguidance

    # ~0.7 s for a 49k vocabulary: cached per (tokenizer, stop tokens).
    return llguidance.LLTokenizer(tokenizer_json, eos_token=list(stops) if stops else None)


@functools.lru_cache(maxsize=4)
def _closer_ids(ll_tokenizer: Any) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of the token ids whose bytes are only closing characters (", ], }), e.g. `"]}`, and of those
    among them that start with a quote."""
    out = np.zeros(ll_tokenizer.vocab_size, dtype=bool)
    quote = np.zeros(ll_tokenizer.vocab_size, dtype=bool)
    for i in range(ll_tokenizer.vocab_size):
        b = ll_tokenizer.decode_bytes([i])
        out[i] = bool(b) and set(b) <= _CLOSERS
        quote[i] = out[i] and b[:1] == b'"'
    return out, quote


def tokenizer_json_of(tokenizer: Any) -> str:
    """The tokenizers-library JSON of a `tokenizers.Tokenizer` or a transformers fast tokenizer (padding and
    truncation off)."""
    import copy

    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    backend = copy.copy(backend)
    backend.no_padding()
    backend.no_truncation()
    return backend.to_str()


_TJ: dict[int, tuple[Any, str]] = {}  # id -> (tokenizer kept alive so the id stays its own, JSON)


def _tokenizer_json_cached(tokenizer: Any) -> str:
    if id(tokenizer) not in _TJ:
        _TJ[id(tokenizer)] = (tokenizer, tokenizer_json_of(tokenizer))
    return _TJ[id(tokenizer)][1]


class JsonConstraint:
    def __init__(self, schema: dict[str, Any], tokenizer_json: str, stop_token_ids: Sequence[int]):
        import llguidance

        self.schema = schema
        self.stop_token_ids = sorted({int(t) for t in stop_token_ids})
        self.tokenizer = _ll_tokenizer(tokenizer_json, tuple(self.stop_token_ids))
        self.grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS)
        ok, msgs = llguidance.LLMatcher.validate_grammar_with_warnings(self.grammar, self.tokenizer)
        if ok:  # the first value is is_error
            raise ValueError(f"JSON schema does not compile: {msgs}")
        self.key = hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()[:12]

    @classmethod
    def for_op(cls, op: str, tokenizer: Any, stop_token_ids: Sequence[int], n_ids: int | None = None
               ) -> "JsonConstraint | None":
        """The constraint of a JSON op (extract, update); None for a free-text op (generate). For update, `n_ids`
        (shown memories + new facts) narrows the ids to those in play (see `update_schema`)."""
        if op not in SCHEMAS:
            return None
        tj = tokenizer if isinstance(tokenizer, str) else _tokenizer_json_cached(tokenizer)
        schema = update_schema(n_ids) if op == "update" and n_ids is not None else SCHEMAS[op]
        return cls(schema, tj, stop_token_ids)

    def start(self, max_new_tokens: int | None = None) -> "ConstraintState":
        return ConstraintState(self, max_new_tokens)


class ConstraintState:
    """One generation under the constraint. Not thread-safe; make one per generation."""

    def __init__(self, c: JsonConstraint, max_new_tokens: int | None = None):
        import llguidance

        self.c = c
        self.max_new_tokens = max_new_tokens
        self.closing = False  # set once the budget forced the closing tokens
        self.matcher = llguidance.LLMatcher(c.tokenizer, c.grammar)
        self.n_vocab = c.tokenizer.vocab_size
        self._words = (self.n_vocab + 31) // 32
        self.failed: str | None = None
        self.steps = 0

    def allowed(self, n_logits: int) -> np.ndarray:
        """Boolean mask over `n_logits` token ids: True where the token keeps the output valid."""
        bits = np.full(self._words, -1, dtype=np.int32)
        self.matcher.unsafe_compute_mask_ptr(bits.ctypes.data, bits.nbytes)
        mask = np.unpackbits(bits.view(np.uint8), bitorder="little").astype(bool)
        out = np.zeros(n_logits, dtype=bool)
        n = min(n_logits, self.n_vocab)
        out[:n] = mask[:n]
        if self.max_new_tokens is not None and self.max_new_tokens - self.steps <= CLOSE_MARGIN:
            # Inside a string, `]` and `}` are allowed as text: a closer that starts with a quote ends the string
            # first, so it wins whenever the grammar allows one.
            closing, quoted = _closer_ids(self.c.tokenizer)
            for pick in (quoted, closing):
                sel = out.copy()
                sel[:n] &= pick[:n]
                if sel.any():
                    self.closing = True
                    return sel
        return out

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """`logits` with every disallowed token at -inf (a new array). Left unmasked once the matcher failed."""
        if self.failed:
            return logits
        ok = self.allowed(logits.shape[-1])
        if not ok.any():
            self.failed = self.matcher.get_error() or "no token allowed"
            return logits
        return np.where(ok, logits, -np.inf).astype(np.float32)

    def advance(self, token: int) -> None:
        self.steps += 1
        if self.failed or int(token) in self.c.stop_token_ids:
            return
        if not self.matcher.consume_token(int(token)):
            self.failed = self.matcher.get_error() or f"token {token} rejected"

    @property
    def complete(self) -> bool:
        return self.matcher.is_accepting()

    def logits_processor(self, prompt_len: int) -> Any:
        """This state as a transformers LogitsProcessor for a batch of one generation."""
        import torch
        from transformers import LogitsProcessor

        state = self

        class _Proc(LogitsProcessor):
            seen = 0

            def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
                new = input_ids[0, prompt_len:].tolist()
                for t in new[self.seen:]:
                    state.advance(t)
                self.seen = len(new)
                if state.failed:
                    return scores
                ok = state.allowed(scores.shape[-1])
                if not ok.any():
                    state.failed = state.matcher.get_error() or "no token allowed"
                    return scores
                return scores.masked_fill(~torch.from_numpy(ok).to(scores.device)[None, :], float("-inf"))

        return _Proc()
