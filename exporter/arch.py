"""The exportable decoder: Llama (SmolLM2) and Gemma 3 text models with an in-graph KV cache.

One `forward(tokens[1, S], input_pos[1]) -> logits[1, vocab]` serves dynamic-length prefill (S > 1) and
token-by-token decode (S == 1). The KV cache is a mutable buffer updated with ExecuTorch's `llama::update_cache`
custom op and attention runs through `llama::custom_sdpa` (ExecuTorch's fused causal SDPA over the cache).

Why not ExecuTorch's `examples/models/llama` Transformer: in executorch 1.5.1 it does not apply Gemma 3's post-attention
/ post-FFN norms or its per-layer-type RoPE bases, and we want one module for both architectures. Module names mirror
Hugging Face (`layers.N.self_attn.q_proj`, `layers.N.mlp.down_proj`, ...) so PEFT `target_modules` map one to one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UnsupportedError

# Importing registers the llama:: custom ops (eager CPU kernels + export meta functions).
from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401  isort: skip

LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class ArchConfig:
    family: str  # "llama" | "gemma3"
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    hidden_dim: int
    norm_eps: float
    rope_theta: float
    max_seq_len: int
    tie_embeddings: bool
    act: str = "silu"
    attn_scale: float | None = None
    embed_scale: float = 1.0
    local_rope_theta: float | None = None
    layer_types: list[str] = field(default_factory=list)  # gemma3: "sliding_attention" | "full_attention"
    sliding_window: int | None = None
    mlp_bias: bool = False
    attention_bias: bool = False

    @classmethod
    def from_hf(cls, config: Any, max_seq_len: int) -> "ArchConfig":
        mt = getattr(config, "model_type", None)
        if mt in ("llama", "smollm", "smollm2"):
            family = "llama"
        elif mt in ("gemma3_text", "gemma3"):
            family = "gemma3"
            config = getattr(config, "text_config", config)
        else:
            raise UnsupportedError(f"model_type {mt!r} is not supported; supported: ['llama', 'gemma3_text']")
        rope = _rope_params(config)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        kw: dict[str, Any] = dict(
            family=family,
            vocab_size=config.vocab_size,
            dim=config.hidden_size,
            n_layers=config.num_hidden_layers,
            n_heads=config.num_attention_heads,
            n_kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
            head_dim=head_dim,
            hidden_dim=config.intermediate_size,
            norm_eps=config.rms_norm_eps,
            rope_theta=rope["full_attention"],
            max_seq_len=max_seq_len,
            tie_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
            mlp_bias=bool(getattr(config, "mlp_bias", False)),
            attention_bias=bool(getattr(config, "attention_bias", False)),
        )
        act = getattr(config, "hidden_act", None) or getattr(config, "hidden_activation", "silu")
        if family == "llama":
            if act != "silu":
                raise UnsupportedError(f"llama hidden_act {act!r} is not supported; supported: ['silu']")
            return cls(**kw)
        if act not in ("gelu_pytorch_tanh", "gelu"):
            raise UnsupportedError(f"gemma3 hidden_activation {act!r} is not supported")
        for name in ("attn_logit_softcapping", "final_logit_softcapping"):
            if getattr(config, name, None):
                raise UnsupportedError(f"gemma3 {name}={getattr(config, name)} is not supported")
        layer_types = list(getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers)
        window = getattr(config, "sliding_window", None)
        if window and "sliding_attention" in layer_types and max_seq_len > window:
            # custom_sdpa is plainly causal; while the cache is no longer than the window, sliding == full attention.
            raise UnsupportedError(
                f"gemma3 sliding_window={window} is shorter than max_seq_len={max_seq_len}; "
                f"export with --max-seq-len {window} or less"
            )
        kw.update(
            act="gelu_tanh",
            attn_scale=float(config.query_pre_attn_scalar) ** -0.5,
            embed_scale=float(config.hidden_size) ** 0.5,
            local_rope_theta=rope.get("sliding_attention", rope["full_attention"]),
            layer_types=layer_types,
            sliding_window=window,
        )
        return cls(**kw)


def _rope_params(config: Any) -> dict[str, float]:
    """RoPE base per layer type from transformers 5 `rope_parameters` (or the 4.x `rope_theta` keys)."""
    params = getattr(config, "rope_parameters", None)
    out: dict[str, float] = {}
    if isinstance(params, dict) and params:
        per_type = params if all(isinstance(v, dict) for v in params.values()) else {"full_attention": params}
        for layer_type, p in per_type.items():
            rope_type = p.get("rope_type", "default")
            if rope_type != "default":
                raise UnsupportedError(f"rope_type {rope_type!r} ({layer_type}) is not supported; supported: ['default']")
            out[layer_type] = float(p["rope_theta"])
    else:
        if getattr(config, "rope_scaling", None):
            raise UnsupportedError(f"rope_scaling {config.rope_scaling!r} is not supported")
        out["full_attention"] = float(getattr(config, "rope_theta", 10000.0))
        if getattr(config, "rope_local_base_freq", None):
            out["sliding_attention"] = float(config.rope_local_base_freq)
    out.setdefault("full_attention", next(iter(out.values())))
    return out


class LoRALinear(nn.Module):
    """y = base(x) + scale * lora_b(lora_a(x)). The base may be torchao-quantized; lora_a / lora_b stay float."""

    def __init__(self, base: nn.Linear, a: torch.Tensor, b: torch.Tensor, scale: float):
        super().__init__()
        self.base = base
        self.lora_a = nn.Linear(a.shape[1], a.shape[0], bias=False)
        self.lora_b = nn.Linear(b.shape[1], b.shape[0], bias=False)
        with torch.no_grad():
            self.lora_a.weight.copy_(a)
            self.lora_b.weight.copy_(b * scale)  # fold the scale into B: one op less per call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora_b(self.lora_a(x))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, unit_offset: bool):
        super().__init__()
        self.eps = eps
        self.unit_offset = unit_offset
        self.weight = nn.Parameter(torch.zeros(dim) if unit_offset else torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        w = 1.0 + self.weight.float() if self.unit_offset else self.weight.float()
        return (y * w).type_as(x)


def _rope_table(head_dim: int, theta: float, max_seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    freqs = torch.outer(torch.arange(max_seq_len, dtype=torch.float64), inv)
    emb = torch.cat([freqs, freqs], dim=-1)  # Hugging Face (rotate_half) layout
    return emb.cos().float(), emb.sin().float()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: ArchConfig):
        super().__init__()
        self.cfg = cfg
        h, kv, d = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, h * d, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(cfg.dim, kv * d, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(cfg.dim, kv * d, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(h * d, cfg.dim, bias=cfg.attention_bias)
        if cfg.family == "gemma3":
            self.q_norm = RMSNorm(d, cfg.norm_eps, unit_offset=True)
            self.k_norm = RMSNorm(d, cfg.norm_eps, unit_offset=True)
        self.register_buffer("k_cache", torch.zeros(1, cfg.max_seq_len, kv, d), persistent=False)
        self.register_buffer("v_cache", torch.zeros(1, cfg.max_seq_len, kv, d), persistent=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, start_pos: int) -> torch.Tensor:
        bsz, seqlen, _ = x.shape
        d = self.cfg.head_dim
        fused = getattr(self, "qkv_proj", None)  # exporter.fuse: one linear for q, k and v
        q, k, v = fused(x) if fused is not None else (self.q_proj(x), self.k_proj(x), self.v_proj(x))
        q = q.view(bsz, seqlen, self.cfg.n_heads, d)
        k = k.view(bsz, seqlen, self.cfg.n_kv_heads, d)
        v = v.view(bsz, seqlen, self.cfg.n_kv_heads, d)
        if self.cfg.family == "gemma3":
            q, k = self.q_norm(q), self.k_norm(k)
        cos, sin = cos[None, :, None, :], sin[None, :, None, :]
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        torch.ops.llama.update_cache(k, self.k_cache, start_pos)
        torch.ops.llama.update_cache(v, self.v_cache, start_pos)
        out = torch.ops.llama.custom_sdpa(q, self.k_cache, self.v_cache, start_pos, None, 0.0, True, self.cfg.attn_scale)
        return self.o_proj(out.reshape(bsz, seqlen, self.cfg.n_heads * d))


class MLP(nn.Module):
    def __init__(self, cfg: ArchConfig):
        super().__init__()
        self.act = F.silu if cfg.act == "silu" else (lambda t: F.gelu(t, approximate="tanh"))
        self.gate_proj = nn.Linear(cfg.dim, cfg.hidden_dim, bias=cfg.mlp_bias)
        self.up_proj = nn.Linear(cfg.dim, cfg.hidden_dim, bias=cfg.mlp_bias)
        self.down_proj = nn.Linear(cfg.hidden_dim, cfg.dim, bias=cfg.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = getattr(self, "gate_up_proj", None)  # exporter.fuse: one linear for gate and up
        gate, up = fused(x) if fused is not None else (self.gate_proj(x), self.up_proj(x))
        return self.down_proj(self.act(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: ArchConfig, layer_id: int):
        super().__init__()
        gemma = cfg.family == "gemma3"
        self.gemma = gemma
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps, gemma)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps, gemma)
        if gemma:
            self.pre_feedforward_layernorm = RMSNorm(cfg.dim, cfg.norm_eps, True)
            self.post_feedforward_layernorm = RMSNorm(cfg.dim, cfg.norm_eps, True)
            self.local = cfg.layer_types[layer_id] == "sliding_attention"

    def forward(self, x, cos, sin, start_pos):
        if not self.gemma:  # llama: pre-norm residual blocks
            h = x + self.self_attn(self.input_layernorm(x), cos, sin, start_pos)
            return h + self.mlp(self.post_attention_layernorm(h))
        h = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), cos, sin, start_pos))
        return h + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(h)))


class Decoder(nn.Module):
    """KV-cache decoder. Call `forward(tokens, input_pos)`; returns the logits of the last position."""

    def __init__(self, cfg: ArchConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps, cfg.family == "gemma3")
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        cos, sin = _rope_table(cfg.head_dim, cfg.rope_theta, cfg.max_seq_len)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        if cfg.local_rope_theta is not None:
            lcos, lsin = _rope_table(cfg.head_dim, cfg.local_rope_theta, cfg.max_seq_len)
            self.register_buffer("rope_local_cos", lcos, persistent=False)
            self.register_buffer("rope_local_sin", lsin, persistent=False)

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        return self.decode(self.embed(tokens), input_pos)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, S] token ids -> [B, S, dim] input embeddings (what a multimodal prefill puts beside visual tokens)."""
        h = self.embed_tokens(tokens)
        return h * self.cfg.embed_scale if self.cfg.embed_scale != 1.0 else h

    def decode(self, h: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        """[B, S, dim] input embeddings at positions input_pos[0].. -> logits of the last position."""
        seqlen = h.shape[1]
        start_pos = input_pos[0].item()
        torch._check(start_pos >= 0)
        torch._check(start_pos + seqlen <= self.cfg.max_seq_len)
        cos = self.rope_cos.narrow(0, start_pos, seqlen)
        sin = self.rope_sin.narrow(0, start_pos, seqlen)
        if self.cfg.local_rope_theta is not None:
            lcos = self.rope_local_cos.narrow(0, start_pos, seqlen)
            lsin = self.rope_local_sin.narrow(0, start_pos, seqlen)
        for layer in self.layers:
            if getattr(layer, "local", False):
                h = layer(h, lcos, lsin, start_pos)
            else:
                h = layer(h, cos, sin, start_pos)
        # Keep the head's input 3-D like every other linear: XNNPACK then tags its weights for the foundation .ptd
        # the same way (a 2-D input took another lowering path that left the head's int4 weights in each .pte).
        h = self.norm(h[:, -1:, :])
        return self.lm_head(h).squeeze(1)

    def reset_cache(self) -> None:
        for m in self.modules():
            if isinstance(m, Attention):
                m.k_cache.zero_()
                m.v_cache.zero_()


class _DecoderEntry(nn.Module):
    """One of a decoder's entry points as a module's `forward`, over the decoder's own submodules and buffers: the
    weights keep their names, so the data keys ExecuTorch derives from them are the decoder's, and a multimodal
    program's `token_embedding` / `text_decoder` read the same `foundation.ptd` as the text program."""

    def __init__(self, decoder: Decoder):
        super().__init__()
        self._modules, self._buffers, self._parameters = decoder._modules, decoder._buffers, decoder._parameters
        self.cfg = decoder.cfg
        self.__dict__["_decoder"] = decoder  # not a submodule: its weights are already this module's


class TokenEmbedding(_DecoderEntry):
    """tokens [1, S] -> input embeddings [1, S, dim] (ExecuTorch's multimodal `token_embedding` method)."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._decoder.embed(tokens)


class TextDecoder(_DecoderEntry):
    """(input embeddings [1, S, dim], start position [1]) -> last position's logits (`text_decoder`)."""

    def forward(self, embeds: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        return self._decoder.decode(embeds, input_pos)


def build_decoder(cfg: ArchConfig, hf_state: dict[str, torch.Tensor]) -> Decoder:
    """Instantiate the decoder and load Hugging Face weights (keys `model.*` and `lm_head.weight`)."""
    dec = Decoder(cfg)
    state = {}
    for k, v in hf_state.items():
        if k.startswith("model."):
            state[k[len("model."):]] = v
        elif k == "lm_head.weight":
            state[k] = v
    if cfg.tie_embeddings or "lm_head.weight" not in state:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    missing, unexpected = dec.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UnsupportedError(f"weights do not fit the {cfg.family} decoder: missing={missing[:5]} unexpected={unexpected[:5]}")
    # An independent copy so quantizing the embedding and the head (differently) never aliases.
    dec.lm_head.weight = nn.Parameter(dec.lm_head.weight.detach().clone())
    dec.eval()
    return dec


def lora_scale(alpha: float, rank: int, use_rslora: bool) -> float:
    return alpha / math.sqrt(rank) if use_rslora else alpha / rank
