"""Fidelity: the exported program against the PyTorch (+ PEFT) reference, per operation.

For each of the op's fixed prompts the reference greedily generates N tokens (forced past its stop token); the
exported program is prefilled with the same prompt and then fed the reference's tokens one by one (teacher forcing).
Reported, pooled over the op's prompts:
- `token_agreement`: the share of the reference's *answer* positions (its greedy tokens up to and including its first
  stop token, at most N) where both pick the same argmax token: what a user of the op would see differ;
- `token_agreement_forced`: the same over all N forced positions, including text after the stop token that the
  runtime never generates (near-tie continuations there flip easily under quantization);
- `max_abs_logit_diff`: the largest absolute logit difference over all N positions of every prompt.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

# Targets from the foundation issue, on the real SmolLM2.
TARGETS = {"fp32": ("max_abs_logit_diff", 1e-3), "int8": ("token_agreement", 0.98), "int4": ("token_agreement", 0.90)}


def meets_target(scheme: str, result: dict[str, Any]) -> bool:
    metric, bound = TARGETS[scheme]
    value = result[metric]
    return value < bound if metric == "max_abs_logit_diff" else value >= bound


@torch.no_grad()
def reference_logits(model: Any, prompt_ids: list[int], n_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy continuation of `prompt_ids` by the reference and its logits at each predicted position."""
    ids = torch.tensor([prompt_ids])
    # The raw logits of each step come with the generation (KV cache); no second full forward pass.
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_tokens, min_new_tokens=n_tokens,
                         do_sample=False, pad_token_id=0, return_dict_in_generate=True, output_logits=True)
    logits = torch.stack(out.logits)[:, 0]
    return out.sequences[0, len(prompt_ids):].numpy(), logits.float().numpy()


def answer_length(tokens: np.ndarray, stop_ids: set[int]) -> int:
    """Positions up to and including the first stop token (all of them when none stops the answer)."""
    for i, t in enumerate(tokens.tolist()):
        if int(t) in stop_ids:
            return i + 1
    return len(tokens)


def summarise(pairs: list[tuple[np.ndarray, np.ndarray]], stop_ids: set[int], n_tokens: int) -> dict[str, Any]:
    """Pooled figures over prompts; each pair is (reference logits, exported logits), [N, vocab] each."""
    same, answer_same = [], []
    for ref, got in pairs:
        hit = ref.argmax(-1) == got.argmax(-1)
        same.append(hit)
        answer_same.append(hit[: answer_length(ref.argmax(-1), stop_ids)])
    forced, answer = np.concatenate(same), np.concatenate(answer_same)
    return {
        "tokens": n_tokens,
        "prompts": len(pairs),
        "answer_tokens": int(answer.size),
        "token_agreement": round(float(answer.mean()), 4),
        "token_agreement_forced": round(float(forced.mean()), 4),
        "max_abs_logit_diff": float(max(np.abs(r - g).max() for r, g in pairs)),
    }


def reference_runs(model: Any, prompts_ids: list[list[int]], n_tokens: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The reference's greedy tokens and logits for each prompt (`reference_logits`)."""
    return [reference_logits(model, ids, n_tokens) for ids in prompts_ids]


def check_op(runtime: Any, op: str, reference: list[tuple[np.ndarray, np.ndarray]], prompts_ids: list[list[int]],
             n_tokens: int, stop_ids: set[int] | None = None) -> dict[str, Any]:
    """The bundle's `op` teacher-forced on the reference's greedy tokens for each prompt (see the module doc);
    `reference`: `reference_runs` of the same prompts."""
    pairs = []
    for prompt_ids, (ref_tokens, ref_logits) in zip(prompts_ids, reference, strict=True):
        got = [runtime.forward(op, prompt_ids, 0)]
        for i in range(n_tokens - 1):
            got.append(runtime.forward(op, [int(ref_tokens[i])], len(prompt_ids) + i))
        pairs.append((ref_logits, np.stack(got)))
    out = summarise(pairs, stop_ids or set(), n_tokens)
    out["prompt_tokens"] = [len(p) for p in prompts_ids]
    return out


def check_pair(reference: Any, runtime: Any, op: str, prompts_ids: list[list[int]], n_tokens: int,
               stop_ids: set[int] | None = None) -> dict[str, Any]:
    """Two exported programs of the same spec against each other (e.g. ExecuTorch vs ONNX): `reference` decodes
    greedily, `runtime` is teacher-forced on its tokens; same figures as `check_op`."""
    pairs = []
    for prompt_ids in prompts_ids:
        ref, got = [reference.forward(op, prompt_ids, 0)], [runtime.forward(op, prompt_ids, 0)]
        for i in range(n_tokens - 1):
            tok = [int(np.argmax(ref[-1]))]
            ref.append(reference.forward(op, tok, len(prompt_ids) + i))
            got.append(runtime.forward(op, tok, len(prompt_ids) + i))
        pairs.append((np.stack(ref), np.stack(got)))
    return summarise(pairs, stop_ids or set(), n_tokens)
