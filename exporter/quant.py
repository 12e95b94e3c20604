"""Quantization schemes as data: ordered rules `pattern -> config | None`, first match wins, `None` keeps float.

The LoRA path (`lora_a` / `lora_b`) is matched first and always stays float. Configs are torchao's, the same ones
ExecuTorch's LLM export uses (`extension/llm/export/quantize.py`), so XNNPACK's partitioner recognises them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from .spec import QuantSpec


@dataclass(frozen=True)
class QuantRule:
    pattern: str  # regex, full match against the module FQN
    kind: str | None  # "8da4w" | "8da8w" | "emb8" | None (keep float)


# int4 keeps the LM head at 8 bits (per-channel), as llama.cpp's Q4_K_M keeps `output.weight` at 6+ bits: the head
# maps straight to logits, and on the real SmolLM2 an int4 head flipped the most greedy tokens (teacher-forced
# agreement on the fidelity prompts with the symmetric int4 body, int4 head -> int8 head: extract 89% -> 100%,
# update 80% -> 84%, generate 63% -> 70%). Cost: 49152x576 at 8 instead of ~4.5 bits, +12 MB.
# The other linears' int4 is asymmetric by default (GroupOffsetLinear below, QuantSpec.int4_weights).
SCHEMES: dict[str, list[QuantRule]] = {
    "int4": [QuantRule(r".*lora_[ab]", None), QuantRule(r"embed_tokens", "emb8"), QuantRule(r"lm_head", "8da8w"),
             QuantRule(r".*", "8da4w")],
    "int8": [QuantRule(r".*lora_[ab]", None), QuantRule(r"embed_tokens", "emb8"), QuantRule(r".*", "8da8w")],
    "fp32": [QuantRule(r".*", None)],
}


def rule_for(scheme: str, fqn: str) -> str | None:
    for rule in SCHEMES[scheme]:
        if re.fullmatch(rule.pattern, fqn):
            return rule.kind
    return None


class GroupOffsetLinear(nn.Module):
    """An asymmetric 4-bit grouped linear on XNNPACK's symmetric int4 kernels.

    Per output row and group of `group_size` inputs, min-max asymmetric 4-bit is w = d * q + m with q in 0..15, i.e.
    w = d * (q - 8) + c with c = m + 8d. The first term is symmetric int4 with scale d; the offset c multiplies the
    group sums of x: y = W_c x + C (G x), where G is the fixed 0/1 group-sum matrix (in -> in / group) and C holds c
    (in / group -> out).

    G rides in the int4 GEMM itself: `main` is [W_c; G], G's rows being exact symmetric int4 codes (0 or 7 at scale
    1/7), so one int4 GEMM gives both W_c x and the group sums of the same int8-quantized activations, and only the
    small `offset` product C stays float. (A separate fp32 G product read 12.6 MB per token on SmolLM2-135M, as
    much as the offsets themselves.)

    Why: XNNPACK's blockwise int4 is symmetric only, while the embedded SmolLM2 is a Q4_1 GGUF, asymmetric 4-bit in
    groups of 32; re-rounding it to a symmetric grid is a second quantization (the int4 fidelity misses of a plain
    8da4w). Split this way the 4-bit codes are the GGUF's own, so the int4 program reproduces its linears exactly.
    """

    def __init__(self, linear: nn.Linear, group_size: int):
        super().__init__()
        out_f, in_f = linear.weight.shape
        n_groups = in_f // group_size
        w = linear.weight.detach().float()
        g = w.view(out_f, n_groups, group_size)
        lo, hi = g.amin(-1), g.amax(-1)
        center = lo + 8 * (hi - lo) / 15  # c = m + 8d
        self.out_features = out_f
        self.main = nn.Linear(in_f, out_f + n_groups, bias=linear.bias is not None)
        self.offset = nn.Linear(n_groups, out_f, bias=False)
        with torch.no_grad():
            group_sum = torch.eye(n_groups).repeat_interleave(group_size, dim=1)
            self.main.weight.copy_(torch.cat([(g - center[..., None]).view(out_f, in_f), group_sum]))
            if linear.bias is not None:
                self.main.bias.copy_(torch.cat([linear.bias.detach(), torch.zeros(n_groups)]))
            self.offset.weight.copy_(center)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.main(x)
        return z[..., : self.out_features] + self.offset(z[..., self.out_features:])


def int4_weights_for(quant: QuantSpec, merged_adapter: bool) -> str:
    """The int4 weight scheme of one program. A program with a LoRA adapter merged into its weights gets symmetric
    int4 whatever `quant.int4_weights` says: the merged delta is far below one 4-bit step (trained adapters: |dW|
    <= 0.012 against a mean step of 0.074), and min-max codes re-derived from base + dW land on the base's own grid,
    so rounding snaps the delta back and the adapter vanishes (ONNX, real SmolLM2: merged answer agreement 67 / 79 /
    71 % asymmetric vs 94 / 93 / 86 % symmetric, whose unaligned grid keeps the delta on average)."""
    return "symmetric" if merged_adapter else quant.int4_weights


# Scale-only HQQ picks the weight scales that minimise reconstruction error; ExecuTorch's LLM export uses it too.
HQQ = "hqq_scale_only"


def _config(kind: str, group_size: int):
    from torchao.quantization.granularity import PerAxis, PerGroup
    from torchao.quantization.quant_api import Int8DynamicActivationIntxWeightConfig, IntxWeightOnlyConfig

    if kind == "8da4w_exact":
        # The symmetric part of a GroupOffsetLinear spans exactly -8d..7d per group: scale = max(-min/8, max/7) = d
        # recovers the codes exactly (plain SYMMETRIC would take max|w| / 7.5 and re-round them).
        from torchao.quantization.quant_primitives import MappingType

        return Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(group_size),
                                                     weight_mapping_type=MappingType.SYMMETRIC_NO_CLIPPING_ERR)
    if kind == "8da4w":
        return Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(group_size),
                                                     intx_choose_qparams_algorithm=HQQ)
    if kind == "8da8w":
        return Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0),
                                                     intx_choose_qparams_algorithm=HQQ)
    if kind == "emb8":
        return IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0), intx_choose_qparams_algorithm=HQQ)
    raise ValueError(kind)


def quantize(model: nn.Module, spec: QuantSpec, merged_adapter: bool = False) -> dict[str, int]:
    """Quantize `model` in place following `spec.scheme`. Returns a count of modules per kind. `merged_adapter`:
    the model's weights carry a merged LoRA delta (see `int4_weights_for`)."""
    from torchao.quantization.quant_api import quantize_

    counts: dict[str, int] = {}
    targets: dict[str, list[str]] = {}
    for fqn, mod in list(model.named_modules()):
        if not isinstance(mod, (nn.Linear, nn.Embedding)):
            continue
        kind = rule_for(spec.scheme, fqn)
        if (kind == "emb8") != isinstance(mod, nn.Embedding):
            kind = None  # an embedding rule never applies to a linear, nor a linear rule to an embedding
        if kind == "8da4w" and mod.in_features % spec.group_size:
            kind = None  # group size must divide the input features; such a layer stays float (and is counted)
        counts[kind or "float"] = counts.get(kind or "float", 0) + 1
        if kind == "8da4w" and int4_weights_for(spec, merged_adapter) == "asymmetric":
            parent_name, _, child = fqn.rpartition(".")
            setattr(model.get_submodule(parent_name), child, GroupOffsetLinear(mod, spec.group_size))
            kind, fqn = "8da4w_exact", f"{fqn}.main"  # the small offset product stays float
        if kind:
            targets.setdefault(kind, []).append(fqn)
    for kind, fqns in targets.items():
        wanted = set(fqns)
        quantize_(model, _config(kind, spec.group_size), filter_fn=lambda m, fqn, w=wanted: fqn in w)
    return counts
