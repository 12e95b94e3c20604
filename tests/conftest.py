"""Shared fixtures: tiny random-config llama / gemma3 models (with the real SmolLM2 tokenizer) and PEFT adapters
with non-zero random weights, so merged vs separate vs eager is a real comparison."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

TINY = {
    "llama": dict(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, max_position_embeddings=512),
    "gemma3": dict(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                   num_attention_heads=4, num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32,
                   sliding_window=256, layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                   max_position_embeddings=512),
}


@pytest.fixture(scope="session", autouse=True)
def _cache(tmp_path_factory):
    # Reuse the user's converted-model cache when present (the GGUF dequantization takes ~25 s).
    os.environ.setdefault("MEMLORA_CACHE", str(Path.home() / ".cache" / "memlora"))


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    from exporter.load import resolve_base

    return resolve_base("smollm2-135m")[1]


def _make_tiny(arch: str, out: Path, tokenizer_dir: Path) -> Path:
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**TINY[arch]))
    else:
        model = Gemma3ForCausalLM(Gemma3TextConfig(**TINY[arch]))
    with torch.no_grad():  # non-trivial norms so every weight matters
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, smollm2_dir) -> Path:
    return _make_tiny("llama", tmp_path_factory.mktemp("tiny_llama"), smollm2_dir)


@pytest.fixture(scope="session")
def tiny_gemma3(tmp_path_factory, smollm2_dir) -> Path:
    return _make_tiny("gemma3", tmp_path_factory.mktemp("tiny_gemma3"), smollm2_dir)


def make_adapter(base_dir: Path, out: Path, targets=("q_proj", "v_proj"), rank: int = 4, seed: int = 1,
                 scale: float = 0.2) -> Path:
    """A PEFT LoRA adapter with random non-zero A and B, saved as safetensors."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    peft = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(targets), lora_dropout=0.0))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_" in name:
                p.copy_(scale * torch.randn_like(p))
    peft.save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="session")
def llama_adapters(tmp_path_factory, tiny_llama) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("llama_adapters")
    return {
        "extract": make_adapter(tiny_llama, root / "extract", ("q_proj", "v_proj"), seed=1),
        "update": make_adapter(tiny_llama, root / "update", ("q_proj", "k_proj", "o_proj", "down_proj"), seed=2),
        "generate": make_adapter(tiny_llama, root / "generate", ("gate_proj", "up_proj", "v_proj"), rank=8, seed=3),
    }
