"""Fidelity: the exported program against the PyTorch (+ PEFT) reference, per operation.

The reference greedily generates N tokens from a fixed prompt; the exported program is prefilled with the same
prompt and then fed the reference's tokens one by one (teacher forcing). Reported: the share of positions where
both pick the same argmax token, and the largest absolute logit difference over all N positions.
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
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_tokens, min_new_tokens=n_tokens,
                         do_sample=False, pad_token_id=0)
    full = out[0]
    logits = model(full[None]).logits[0, len(prompt_ids) - 1: len(prompt_ids) - 1 + n_tokens]
    return full[len(prompt_ids):].numpy(), logits.float().numpy()


def check_op(runtime: Any, op: str, model: Any, prompt_ids: list[int], n_tokens: int) -> dict[str, Any]:
    ref_tokens, ref_logits = reference_logits(model, prompt_ids, n_tokens)
    got = [runtime.forward(op, prompt_ids, 0)]
    for i in range(n_tokens - 1):
        got.append(runtime.forward(op, [int(ref_tokens[i])], len(prompt_ids) + i))
    exp = np.stack(got)
    agree = float(np.mean(exp.argmax(-1) == ref_logits.argmax(-1)))
    return {
        "tokens": n_tokens,
        "prompt_tokens": len(prompt_ids),
        "token_agreement": round(agree, 4),
        "max_abs_logit_diff": float(np.abs(exp - ref_logits).max()),
    }


def check_pair(reference: Any, runtime: Any, op: str, prompt_ids: list[int], n_tokens: int) -> dict[str, Any]:
    """Two exported programs of the same spec against each other (e.g. ExecuTorch vs ONNX): `reference` decodes
    greedily, `runtime` is teacher-forced on its tokens; same figures as `check_op`."""
    ref, got = [reference.forward(op, prompt_ids, 0)], [runtime.forward(op, prompt_ids, 0)]
    for i in range(n_tokens - 1):
        tok = [int(np.argmax(ref[-1]))]
        ref.append(reference.forward(op, tok, len(prompt_ids) + i))
        got.append(runtime.forward(op, tok, len(prompt_ids) + i))
    a, b = np.stack(ref), np.stack(got)
    return {"tokens": n_tokens, "token_agreement": round(float(np.mean(a.argmax(-1) == b.argmax(-1))), 4),
            "max_abs_logit_diff": float(np.abs(a - b).max())}
