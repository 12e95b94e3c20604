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
# agreement on the fidelity prompts, int4 head -> int8 head: extract 89% -> 100%, update 80% -> 84%,
# generate 63% -> 70%). Cost: 49152x576 at 8 instead of ~4.5 bits, +12 MB.
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


# Scale-only HQQ picks the weight scales that minimise reconstruction error; ExecuTorch's LLM export uses it too.
HQQ = "hqq_scale_only"


def _config(kind: str, group_size: int):
    from torchao.quantization.granularity import PerAxis, PerGroup
    from torchao.quantization.quant_api import Int8DynamicActivationIntxWeightConfig, IntxWeightOnlyConfig

    if kind == "8da4w":
        return Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(group_size),
                                                     intx_choose_qparams_algorithm=HQQ)
    if kind == "8da8w":
        return Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0),
                                                     intx_choose_qparams_algorithm=HQQ)
    if kind == "emb8":
        return IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0), intx_choose_qparams_algorithm=HQQ)
    raise ValueError(kind)


def quantize(model: nn.Module, spec: QuantSpec) -> dict[str, int]:
    """Quantize `model` in place following `spec.scheme`. Returns a count of modules per kind."""
    from torchao.quantization.quant_api import quantize_

    counts: dict[str, int] = {}
    targets: dict[str, list[str]] = {}
    for fqn, mod in model.named_modules():
        if not isinstance(mod, (nn.Linear, nn.Embedding)):
            continue
        kind = rule_for(spec.scheme, fqn)
        if (kind == "emb8") != isinstance(mod, nn.Embedding):
            kind = None  # an embedding rule never applies to a linear, nor a linear rule to an embedding
        if kind == "8da4w" and mod.in_features % spec.group_size:
            kind = None  # group size must divide the input features; such a layer stays float (and is counted)
        counts[kind or "float"] = counts.get(kind or "float", 0) + 1
        if kind:
            targets.setdefault(kind, []).append(fqn)
    for kind, fqns in targets.items():
        wanted = set(fqns)
        quantize_(model, _config(kind, spec.group_size), filter_fn=lambda m, fqn, w=wanted: fqn in w)
    return counts
