"""Projections that read the same input run as one linear: q/k/v and gate/up (as ORT GenAI's builder fuses them).

On a 135M model the decode step is dominated by per-op overhead, not by the GEMMs: every linear is a dynamic
activation quantization + an int4 GEMM, and with the asymmetric int4 split (quant.GroupOffsetLinear) and a LoRA path
each also carries two group-offset and two LoRA products. Fusing the 7 linears of a layer into 4 brings those ~35
small products per layer to 20 and quantizes each activation once. Exact: per-row 4-bit codes, per-row scales and
per-token activation scales are all unchanged by concatenating rows; the LoRA paths concatenate their A rows and put
their B's on a block diagonal (zero blocks add nothing).

Runs on the float decoder, after the LoRA slots are attached and before quantization; `quant.quantize` then sees
`<group>.base` as one linear.
"""

from __future__ import annotations

import torch
from torch import nn

from .arch import Decoder, LoRALinear

GROUPS = (("self_attn", "qkv_proj", ("q_proj", "k_proj", "v_proj")), ("mlp", "gate_up_proj", ("gate_proj", "up_proj")))


class FusedLinear(nn.Module):
    """Linears over one input as one: `forward(x)` returns their outputs, in order. Parts may be plain linears or
    LoRALinear (any mix); the fused LoRA path is `lora_b(lora_a(x))` with A rows concatenated, B block-diagonal."""

    def __init__(self, parts: list[nn.Module]):
        super().__init__()
        bases = [p.base if isinstance(p, LoRALinear) else p for p in parts]
        self.sizes = [int(b.weight.shape[0]) for b in bases]
        in_f = int(bases[0].weight.shape[1])
        has_bias = bases[0].bias is not None
        self.base = nn.Linear(in_f, sum(self.sizes), bias=has_bias)
        with torch.no_grad():
            self.base.weight.copy_(torch.cat([b.weight for b in bases]))
            if has_bias:
                self.base.bias.copy_(torch.cat([b.bias for b in bases]))
        self.lora_a = self.lora_b = None
        if any(isinstance(p, LoRALinear) for p in parts):
            a, b = fuse_lora([(p.lora_a.weight, p.lora_b.weight) if isinstance(p, LoRALinear) else None for p in parts],
                             self.sizes, in_f)
            self.lora_a = nn.Linear(in_f, a.shape[0], bias=False)
            self.lora_b = nn.Linear(a.shape[0], sum(self.sizes), bias=False)
            with torch.no_grad():
                self.lora_a.weight.copy_(a)
                self.lora_b.weight.copy_(b)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = self.base(x)
        if self.lora_a is not None:
            y = y + self.lora_b(self.lora_a(x))
        return y.split(self.sizes, dim=-1)


def fuse_lora(parts: list[tuple[torch.Tensor, torch.Tensor] | None], sizes: list[int],
              in_f: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per part (A [r, in], B [out, r]) or None (no LoRA) -> (A rows concatenated, B block-diagonal)."""
    a = torch.cat([p[0] if p else torch.zeros(0, in_f) for p in parts])
    b = torch.block_diag(*[p[1] if p else torch.zeros(n, 0) for p, n in zip(parts, sizes)])
    return a.float(), b.float()


def fuse_projections(dec: Decoder) -> dict[str, tuple[str, list[str | None], list[int], int]]:
    """Fuse every layer's projection groups in place. Returns, per fused LoRA weight name, what `fused_lora_weights`
    needs to build it from the unfused names: ("a" | "b", part LoRA prefixes or None, part sizes, input features)."""
    plan: dict[str, tuple[str, list[str | None], list[int], int]] = {}
    for i, block in enumerate(dec.layers):
        for parent_name, fused_name, names in GROUPS:
            parent = getattr(block, parent_name)
            parts = [getattr(parent, n) for n in names]
            fused = FusedLinear(parts)
            for n in names:
                delattr(parent, n)
            setattr(parent, fused_name, fused)
            if fused.lora_a is not None:
                prefix = f"layers.{i}.{parent_name}"
                lora = [f"{prefix}.{n}" if isinstance(p, LoRALinear) else None for n, p in zip(names, parts)]
                for ab in ("a", "b"):
                    plan[f"{prefix}.{fused_name}.lora_{ab}.weight"] = (ab, lora, fused.sizes, fused.base.in_features)
    return plan


def fused_lora_weights(weights: dict[str, torch.Tensor], plan: dict[str, tuple]) -> dict[str, torch.Tensor]:
    """Unfused LoRA weights (`<prefix>.lora_a.weight` / `.lora_b.weight`, as `adapters.slot_weights` gives them) in
    the fused layout of `plan`."""
    out = {}
    for name, (ab, prefixes, sizes, in_f) in plan.items():
        parts = [(weights[f"{p}.lora_a.weight"], weights[f"{p}.lora_b.weight"]) if p else None for p in prefixes]
        a, b = fuse_lora(parts, sizes, in_f)
        out[name] = a if ab == "a" else b
    return out
