"""exporter/fuse.py: fused projections compute what the separate linears compute, and each op's LoRA data in the
fused layout is what a decoder carrying that adapter would hold."""

from __future__ import annotations

import copy

import pytest
import torch

from exporter.adapters import slot_weights, with_adapter, with_lora_slots
from exporter.arch import ArchConfig, Decoder
from exporter.fuse import FusedLinear, fuse_projections, fused_lora_weights
from exporter.load import Adapter


def tiny_cfg(family: str = "llama") -> ArchConfig:
    kw = dict(family=family, vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, hidden_dim=48,
              norm_eps=1e-6, rope_theta=10000.0, max_seq_len=32, tie_embeddings=False)
    if family == "gemma3":
        kw.update(act="gelu_tanh", attn_scale=8 ** -0.5, embed_scale=32 ** 0.5, local_rope_theta=10000.0,
                  layer_types=["sliding_attention", "full_attention"], sliding_window=64)
    return ArchConfig(**kw)


def random_decoder(cfg: ArchConfig, seed: int = 0) -> Decoder:
    torch.manual_seed(seed)
    dec = Decoder(cfg)
    with torch.no_grad():
        for p in dec.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return dec.eval()


def adapter(cfg: ArchConfig, targets: dict[tuple[int, str], int], seed: int) -> Adapter:
    g = torch.Generator().manual_seed(seed)
    dims = {"q_proj": (cfg.n_heads * cfg.head_dim, cfg.dim), "k_proj": (cfg.n_kv_heads * cfg.head_dim, cfg.dim),
            "v_proj": (cfg.n_kv_heads * cfg.head_dim, cfg.dim), "o_proj": (cfg.dim, cfg.n_heads * cfg.head_dim),
            "gate_proj": (cfg.hidden_dim, cfg.dim), "up_proj": (cfg.hidden_dim, cfg.dim),
            "down_proj": (cfg.dim, cfg.hidden_dim)}
    weights = {key: (torch.randn(r, dims[key[1]][1], generator=g), torch.randn(dims[key[1]][0], r, generator=g) * 0.3)
               for key, r in targets.items()}
    return Adapter(op=f"op{seed}", path=None, rank=max(targets.values()), alpha=1.0, scale=0.5,
                   target_modules=sorted({m for _, m in targets}), weights=weights)


def logits(dec: Decoder, tokens: torch.Tensor) -> torch.Tensor:
    dec.reset_cache()
    with torch.no_grad():
        first = dec(tokens, torch.tensor([0]))
        step = dec(tokens[:, :1], torch.tensor([tokens.shape[1]]))
    return torch.cat([first, step])


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_fused_decoder_matches_unfused(family):
    cfg = tiny_cfg(family)
    dec = random_decoder(cfg)
    # LoRA on q and v only in layer 0 (k in between has none), on every module of layer 1.
    a = adapter(cfg, {(0, "q_proj"): 3, (0, "v_proj"): 3, **{(1, m): 3 for m in ("q_proj", "k_proj", "v_proj",
                                                                                  "o_proj", "gate_proj", "up_proj",
                                                                                  "down_proj")}}, seed=1)
    ref = with_adapter(dec, a, "separate")
    fused = copy.deepcopy(ref)
    fuse_projections(fused)
    assert not hasattr(fused.layers[0].self_attn, "q_proj")
    assert isinstance(fused.layers[0].mlp.gate_up_proj, FusedLinear)
    tokens = torch.randint(0, cfg.vocab_size, (1, 7))
    want = logits(ref, tokens)
    assert torch.allclose(logits(fused, tokens), want, atol=1e-5), (logits(fused, tokens) - want).abs().max()
    # and a fused decoder without any adapter matches the plain one
    plain = copy.deepcopy(dec)
    fuse_projections(plain)
    assert torch.allclose(logits(plain, tokens), logits(dec, tokens), atol=1e-5)
    assert not torch.allclose(logits(plain, tokens), want, atol=1e-3)  # the adapter does change the output


def test_fused_lora_weights_are_each_ops_adapter_in_the_lowered_layout():
    """The per-op data written for the one lowered graph (`slot_weights` -> `fused_lora_weights`) turns the
    placeholder graph into the decoder carrying that op's adapter."""
    cfg = tiny_cfg()
    dec = random_decoder(cfg)
    ops = [adapter(cfg, {(0, "q_proj"): 4, (1, "up_proj"): 4}, seed=1), adapter(cfg, {(0, "k_proj"): 2}, seed=2)]
    slots = {(0, "q_proj"): 4, (0, "k_proj"): 2, (1, "up_proj"): 4}
    graph, names = with_lora_slots(dec, slots)
    shapes = {n: tuple(t.shape) for n, t in graph.state_dict().items() if n in names}
    plan = fuse_projections(graph)
    lowered = graph.state_dict()
    assert set(plan) == {"layers.0.self_attn.qkv_proj.lora_a.weight", "layers.0.self_attn.qkv_proj.lora_b.weight",
                         "layers.1.mlp.gate_up_proj.lora_a.weight", "layers.1.mlp.gate_up_proj.lora_b.weight"}
    tokens = torch.randint(0, cfg.vocab_size, (1, 5))
    outs = []
    for a in ops:
        weights = fused_lora_weights(slot_weights(a, slots, names, shapes), plan)
        assert {n: tuple(t.shape) for n, t in weights.items()} == {n: tuple(lowered[n].shape) for n in plan}
        run = copy.deepcopy(graph)
        run.load_state_dict(weights, strict=False)
        want = logits(with_adapter(dec, a, "separate"), tokens)
        got = logits(run, tokens)
        assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
        outs.append(got)
    assert not torch.allclose(outs[0], outs[1], atol=1e-3)
