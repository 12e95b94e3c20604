"""Adapter strategies: fold LoRA into the weights (merged) or wrap linears with a float LoRA path (separate)."""

from __future__ import annotations

import copy

import torch

from .arch import Decoder, LoRALinear
from .load import Adapter, check_adapter


def _linear(decoder: Decoder, layer: int, mod: str) -> tuple[torch.nn.Module, str]:
    block = decoder.layers[layer]
    parent = block.self_attn if hasattr(block.self_attn, mod) else block.mlp
    return parent, mod


def with_adapter(base: Decoder, adapter: Adapter | None, strategy: str) -> Decoder:
    """A copy of the float `base` decoder carrying `adapter` the way `strategy` says (before quantization)."""
    dec = copy.deepcopy(base)
    if adapter is None:
        return dec
    check_adapter(adapter, dec)
    with torch.no_grad():
        for (layer, mod), (a, b) in sorted(adapter.weights.items()):
            parent, name = _linear(dec, layer, mod)
            lin = getattr(parent, name)
            if strategy == "merged":
                lin.weight += adapter.scale * (b @ a)
            elif strategy == "separate":
                setattr(parent, name, LoRALinear(lin, a, b, adapter.scale))
            else:
                raise ValueError(f"strategy {strategy!r} carries no adapter")
    return dec
