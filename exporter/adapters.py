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


def lora_slots(adapters: list[Adapter]) -> dict[tuple[int, str], int]:
    """The LoRA layout one graph serves every adapter with: per (layer, module) any adapter targets, the largest rank
    among them. An adapter is placed in it zero-padded (`slot_weights`): zero rank rows of A / columns of B, and zero
    A and B for a module it leaves out, add nothing to the output."""
    slots: dict[tuple[int, str], int] = {}
    for a in adapters:
        for key, (la, _) in a.weights.items():
            slots[key] = max(slots.get(key, 0), int(la.shape[0]))
    return dict(sorted(slots.items()))


def with_lora_slots(base: Decoder, slots: dict[tuple[int, str], int], seed: int = 0) -> tuple[Decoder, dict[str, tuple]]:
    """A copy of `base` with a LoRA path in every slot, carrying random placeholder weights: the program lowered once
    for every op. The placeholders are all distinct (XNNPACK keys its weights by their sha256: equal tensors, such as
    two zero paddings, would share one key that each op's data could not fill differently). Returns the decoder and,
    per LoRA weight's fully qualified name, (layer, module, "a" | "b")."""
    dec = copy.deepcopy(base)
    gen = torch.Generator().manual_seed(seed)
    names: dict[str, tuple] = {}
    fqn = {id(m): n for n, m in dec.named_modules()}
    with torch.no_grad():
        for (layer, mod), rank in slots.items():
            parent, name = _linear(dec, layer, mod)
            lin = getattr(parent, name)
            out_f, in_f = lin.weight.shape
            a = torch.randn(rank, in_f, generator=gen)
            b = torch.randn(out_f, rank, generator=gen)
            setattr(parent, name, LoRALinear(lin, a, b, 1.0))
            prefix = f"{fqn[id(parent)]}.{name}"
            names[f"{prefix}.lora_a.weight"] = (layer, mod, "a")
            names[f"{prefix}.lora_b.weight"] = (layer, mod, "b")
    return dec, names


def slot_weights(adapter: Adapter, slots: dict[tuple[int, str], int], names: dict[str, tuple],
                 shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """`adapter` in the `slots` layout: per LoRA weight name (`with_lora_slots`), the float32 tensor the LoRALinear
    of a `with_adapter(..., "separate")` decoder would hold (B scaled), zero-padded to the slot's rank; zeros for a
    slot the adapter leaves out."""
    out: dict[str, torch.Tensor] = {}
    left = set(adapter.weights) - set(slots)
    if left:
        raise ValueError(f"adapter {adapter.op!r} targets {sorted(left)[0]}, which has no LoRA slot")
    with torch.no_grad():
        for fqn, (layer, mod, ab) in names.items():
            t = torch.zeros(shapes[fqn], dtype=torch.float32)
            if (layer, mod) in adapter.weights:
                a, b = adapter.weights[(layer, mod)]
                if ab == "a":
                    t[: a.shape[0]].copy_(a)
                else:
                    t[:, : b.shape[1]].copy_(b * adapter.scale)
            out[fqn] = t
    return out
