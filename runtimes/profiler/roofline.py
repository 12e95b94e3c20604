"""Roofline model of one memory operation: bytes moved per decoded token and integer ops per prefilled token,
hence upper bounds on tok/s for a memory bandwidth and a compute peak. Everything here is a PROJECTION.

- decode (one token per forward): bound by memory: every weight the op's program holds is read once per token
  (the embedding table excepted: one row is gathered), plus the KV cache up to the current position (fp32 K and V,
  as the exported decoder keeps it). tok/s <= bandwidth / bytes_per_token.
- prefill (N prompt tokens in one forward): bound by compute: 2 ops per MAC of the layers' weights for every
  token, of the output projection for the last token only (the decoder returns the last position's logits), plus
  attention (QK^T and PV over the causal prefix); and by reading the weights once:
  time >= max(ops / peak, weight_bytes / bandwidth).

Architecture dims come from the manifest's `model` section when it has them (n_heads, n_kv_heads, head_dim,
hidden_dim), else from the public config.json of the embedded models below, else they are estimated (flagged).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# Public config.json values of the embedded models (HuggingFaceTB/SmolLM2-135M-Instruct, google/gemma-3-270m).
KNOWN_ARCH = {
    "smollm2-135m": dict(dim=576, n_layers=30, n_heads=9, n_kv_heads=3, head_dim=64, hidden_dim=1536, vocab_size=49152),
    "gemma3-270m": dict(dim=640, n_layers=18, n_heads=4, n_kv_heads=1, head_dim=256, hidden_dim=2048, vocab_size=262144),
}
EMBED_BYTES_PER_PARAM = {"int4": 1.0, "int8": 1.0, "fp32": 4.0}  # exporter/quant.py: int8 embedding unless fp32
KV_BYTES = 4  # the exported KV cache is fp32


@dataclass
class ModelCost:
    n_layers: int
    dim: int
    q_dim: int
    kv_dim: int
    hidden_dim: int
    vocab_size: int
    weight_bytes: int  # bytes of the op's program + data files, less the embedding table (one row is gathered)
    layer_params: int  # weights of the transformer layers' linears (every token multiplies them)
    head_params: int  # the output projection (V x dim): once per forward, for the last position only
    dims_source: str  # "manifest" | "known:<name>" | "estimated"

    def decode_bytes_per_token(self, context: float) -> float:
        return self.weight_bytes + 2 * self.n_layers * self.kv_dim * KV_BYTES * context

    def prefill_ops(self, prompt_tokens: int) -> float:
        """Integer ops of one prefill forward: layer linears for every token, the output projection for the last
        one (the decoder returns the last position's logits), attention over the causal prefix (QK^T + PV)."""
        attn = 4 * self.n_layers * self.q_dim * prompt_tokens * (prompt_tokens + 1) / 2
        return 2 * self.layer_params * prompt_tokens + 2 * self.head_params + attn

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_cost(manifest: Any, op: str, files_needed: list[str] | None = None) -> ModelCost:
    """`files_needed`: the op's program + data files for the backend profiled (default: the manifest's first)."""
    raw = manifest.raw
    m = raw["model"]
    scheme = raw.get("quantization", {}).get("scheme", "fp32")
    entry = manifest.ops[op]
    files = raw["files"]
    op_bytes = sum(int(files[f]["bytes"]) for f in (files_needed or [entry.program, *entry.data_files]))
    if all(k in m for k in ("n_heads", "n_kv_heads", "head_dim", "hidden_dim")):
        dims, source = {k: int(m[k]) for k in ("dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "hidden_dim",
                                                  "vocab_size")}, "manifest"
    elif m.get("name") in KNOWN_ARCH and KNOWN_ARCH[m["name"]]["dim"] == int(m.get("dim", -1)):
        dims, source = dict(KNOWN_ARCH[m["name"]]), f"known:{m['name']}"
    else:  # a plain llama guess: full multi-head attention, 4x MLP
        d = int(m["dim"])
        dims = dict(dim=d, n_layers=int(m["n_layers"]), n_heads=1, n_kv_heads=1, head_dim=d, hidden_dim=4 * d,
                    vocab_size=int(m["vocab_size"]))
        source = "estimated"
    q_dim = dims["n_heads"] * dims["head_dim"]
    kv_dim = dims["n_kv_heads"] * dims["head_dim"]
    d, L, V = dims["dim"], dims["n_layers"], dims["vocab_size"]
    per_layer = d * q_dim + 2 * d * kv_dim + q_dim * d + 3 * d * dims["hidden_dim"]
    emb = int(V * d * EMBED_BYTES_PER_PARAM.get(scheme, 4.0))
    return ModelCost(n_layers=L, dim=d, q_dim=q_dim, kv_dim=kv_dim, hidden_dim=dims["hidden_dim"], vocab_size=V,
                     weight_bytes=max(op_bytes - emb, 1), layer_params=L * per_layer, head_params=V * d,
                     dims_source=source)


def project(cost: ModelCost, prompt_tokens: int, new_tokens: int, bandwidth_gbs: float, peak_gops: float
            ) -> dict[str, float]:
    """Roofline upper bounds for one run of the op: prefill and decode tok/s, TTFT and end-to-end ms."""
    context = prompt_tokens + new_tokens / 2
    dec_bytes = cost.decode_bytes_per_token(context)
    decode_tok_s = bandwidth_gbs * 1e9 / dec_bytes
    ops = cost.prefill_ops(prompt_tokens)
    prefill_s = max(ops / (peak_gops * 1e9), cost.weight_bytes / (bandwidth_gbs * 1e9))
    decode_s = max(new_tokens - 1, 0) / decode_tok_s
    return {
        "decode_tok_s": decode_tok_s,
        "prefill_tok_s": prompt_tokens / prefill_s,
        "ttft_ms": prefill_s * 1e3,
        "e2e_ms": (prefill_s + decode_s) * 1e3,
        "decode_bytes_per_token": dec_bytes,
        "prefill_ops_per_token": ops / max(prompt_tokens, 1),
        "prefill_bound": "compute" if ops / (peak_gops * 1e9) >= cost.weight_bytes / (bandwidth_gbs * 1e9) else "memory",
    }
