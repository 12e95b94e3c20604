"""ONNX Runtime GenAI: KV-cache graphs built by ORT GenAI's model builder (`onnxruntime_genai.models.builder`).

The builder writes the fused graph (GroupQueryAttention with in-graph rotary, SkipSimplifiedLayerNormalization,
packed QKV and fused gate/up MatMulNBits, GatherBlockQuantized for a tied int4 embedding shared with the LM head) from
a Hugging Face directory. This module is glue around it:

- `none`: one builder run on the base directory -> `base.onnx`.
- `merged`: per op, PEFT `merge_and_unload` into a temporary HF directory, one builder run each -> `<op>.onnx`.
- `separate`: one builder run on the base -> `foundation.onnx`, then a float LoRA path is added beside each
  projection any op adapts: `y = W x + B_g (A_g x)`, one path per projection the builder emitted (packed QKV, o_proj,
  fused gate/up, down_proj; separate q/k/v on Gemma 3, whose Q/K norms keep them apart). `A_g` / `B_g` are graph
  inputs `[in, r]` / `[r, out]` with a symbolic rank and an empty (rank 0) default: with no adapter active the path
  adds exactly zero and costs no bytes. Each op's LoRA goes into `<op>.onnx_adapter` (onnxruntime `AdapterFormat`):
  per group the modules' A^T side by side and their (scaled) B^T as blocks of one matrix, so a packed projection
  takes one LoRA path instead of three (fewer nodes per decoded token). Switched at run time with ORT GenAI's
  `Adapters` / `set_active_adapter`. The builder's own `adapter_path` is not used: it bakes LoRA in as constants and
  unpacks QKV. An adapter file's model_version is the foundation graph's id, and its parameter names / shapes are
  checked against the graph's inputs here and again at load.

Quantization: int4 = MatMulNBits 4-bit, block `quant.group_size` (32), symmetric, activations at `accuracy_level`
(4 = int8), the LM head and the tied embedding that shares its weight at 8 bits (`quant.lm_head_bits`, `head_to_int8`);
fp32 = no quantization; int8 = `quant.int8_variant` (exporter/spec.py). The LoRA path is added after quantization:
always float (its weights fp32, or fp16 in the adapter files with `quant.lora_dtype`, cast to fp32 in the graph).

This module drives the builder and assembles the bundle's ONNX part; the graph rewrites are in onnx_graph.py (int4 /
int8) and the LoRA paths and adapter files in onnx_lora.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ExportError
from ..quant import int4_weights_for
from ..progress import step
from . import ExportJob, TargetResult, register_target
from .onnx_graph import GROUPS, quantize_dynamic_int8, rewrite_int4
from .onnx_lora import (LORA_DTYPES, adapter_params, graph_id, insert_lora, linear_dims, merged_hf_dir,
                        write_adapter_file)

log = logging.getLogger("memlora.export.onnx")

GENAI_CONFIG = "genai_config.json"
FOUNDATION = "foundation"


# ----------------------------------------------------------------------------------------------- builder invocation

def builder_max_length(arch: Any) -> int:
    """The graph's context length. Gemma 3's sliding-window layers need ORT GenAI's KV cache to hold at least the
    window (GroupQueryAttention refuses a cache shorter than local_window_size), so the graph is built for
    max(max_seq_len, sliding_window); the manifest's max_seq_len still bounds what the runtime feeds it."""
    n = arch.max_seq_len
    if arch.sliding_window and "sliding_attention" in (arch.layer_types or []):
        n = max(n, int(arch.sliding_window))
    return n


def fix_config_for_builder(cfg: Any, max_length: int) -> None:
    """transformers 5 keeps Gemma 3's RoPE per layer type (`rope_parameters = {"full_attention": {...},
    "sliding_attention": {...}}`); the builder reads the 4.x keys (`rope_theta`, `rope_local_base_freq`, a flat
    `rope_parameters` with `rope_type`). The context length is the one we export, not the model's 32k."""
    rp = getattr(cfg, "rope_parameters", None)
    if isinstance(rp, dict) and rp and all(isinstance(v, dict) for v in rp.values()):
        full = rp.get("full_attention") or next(iter(rp.values()))
        local = rp.get("sliding_attention", full)
        cfg.rope_parameters = dict(full)
        cfg.rope_theta = float(full["rope_theta"])
        cfg.rope_local_base_freq = float(local["rope_theta"])
    cfg.max_position_embeddings = int(max_length)
    if hasattr(cfg, "seq_length"):
        cfg.seq_length = int(max_length)


@contextlib.contextmanager
def _quiet(debug: bool):
    """The builder prints progress to stdout (ours is for results) and the quantizer logs every node at INFO."""
    noisy = [logging.getLogger(n) for n in ("onnxruntime", "onnxruntime.quantization", "onnxruntime.quantization."
                                            "matmul_nbits_quantizer", "transformers", "onnx_ir")]
    levels = [lg.level for lg in noisy]
    for lg in noisy:
        lg.setLevel(logging.DEBUG if debug else logging.ERROR)
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(sys.stderr if debug else buf), \
                contextlib.redirect_stderr(sys.stderr if debug else buf):  # its per-tensor tqdm while saving
            yield buf
    finally:
        for lg, lvl in zip(noisy, levels):
            lg.setLevel(lvl)


def run_builder(hf_dir: Path, out_dir: Path, precision: str, options: dict[str, Any], max_length: int,
                name: str) -> Path:
    """One builder run: `hf_dir` -> `out_dir/<options['filename']>` (+ `.data`, genai_config.json)."""
    from onnxruntime_genai.models.builder import create_model, parse_extra_options

    kv = [f"{k}={','.join(v) if isinstance(v, (list, tuple)) else v}" for k, v in options.items()]
    cache = Path(tempfile.mkdtemp(prefix=".builder-cache-", dir=out_dir.parent))
    debug = log.isEnabledFor(logging.DEBUG)
    try:
        with _quiet(debug) as buf:
            try:
                opts = parse_extra_options(None, str(hf_dir), str(out_dir), precision, "cpu", str(cache), kv)
                fix_config_for_builder(opts["hf_details"]["hf_config"], max_length)
                create_model(None, str(hf_dir), str(out_dir), precision, "cpu", str(cache), **opts)
            except Exception as e:
                tail = " | ".join(buf.getvalue().strip().splitlines()[-3:]) if not debug else ""
                raise ExportError(f"ORT GenAI model builder failed on {name!r}: {type(e).__name__}: {e}"
                                  + (f" (builder said: {tail})" if tail else "")) from e
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    graph = out_dir / options["filename"]
    if not graph.is_file() or not (out_dir / f"{graph.name}.data").is_file():
        raise ExportError(f"ORT GenAI model builder wrote no {graph.name} (+ .data) for {name!r}")
    return graph


def builder_options(spec: Any, filename: str, precision: str) -> dict[str, Any]:
    """Builder options on top of its CPU defaults. Two of its own switches make the graph faster than its untouched
    output (measured in bench/onnx_vs_builder.py): `prune_lm_head` (the LM head runs on the last position only; the
    runtime reads no other logits) and `fuse_mlp_gate_up` (gate and up projections in one MatMulNBits)."""
    opts: dict[str, Any] = {"hf_token": "false", "filename": filename, "prune_lm_head": "true",
                            "fuse_mlp_gate_up": "true"}
    if precision in ("int4", "int8"):
        opts.update(block_size=spec.quant.group_size, accuracy_level=spec.quant.accuracy_level)
    if precision == "int8":
        # GatherBlockQuantized is 4-bit only: an int8 graph keeps a float embedding, and the LM head its own int8
        # weight (the builder would otherwise try, and log a failure, to quantize the shared Gather).
        opts["shared_embeddings"] = "false"
    return opts


# ------------------------------------------------------------------------------------------------- the target

@dataclass
class OnnxProgram:
    stem: str
    ops: list[str]
    adapter: Any | None  # merged: the adapter folded into this program


def describe_quant(scheme: str, accuracy_level: int, group_size: int, tied: bool, variant: str,
                   head8: bool = False, offsets: bool = False, lora_dtype: str = "fp32") -> dict[str, str]:
    act = {4: "int8", 1: "fp32", 2: "fp16", 3: "bf16"}.get(accuracy_level, str(accuracy_level))
    lora = ("fp32 MatMul (excluded from quantization)" if lora_dtype == "fp32" else
            f"{lora_dtype} weights in the adapter files, cast to fp32; fp32 MatMul (excluded from quantization)")
    if scheme == "int4":
        bits = 8 if head8 else 4
        kind = ("asymmetric: min-max 4-bit codes with scale d, plus fp32 per-group offsets applied to the input's "
                "group sums" if offsets else "symmetric")
        return {"linear": f"MatMulNBits int4 weight, block {group_size}, {kind}; {act} activations "
                          f"(accuracy_level {accuracy_level})",
                "lm_head": f"MatMulNBits int{bits} weight, block {group_size}, symmetric",
                "embedding": (f"GatherBlockQuantized int{bits}, shared with the LM head" if tied else "fp32"),
                "lora": lora}
    if scheme == "int8":
        linear = (f"MatMulNBits int8 weight, block {group_size}, symmetric; {act} activations (accuracy_level "
                  f"{accuracy_level})" if variant == "matmulnbits"
                  else "DynamicQuantizeMatMul: int8 per-channel weight, dynamic int8 activations")
        return {"linear": linear, "embedding": "fp32 (the builder quantizes a Gather to int4 only)",
                "lora": lora, "int8_variant": variant}
    return {"linear": "fp32", "embedding": "fp32" + (", shared with the LM head" if tied else ""),
            "lora": "fp32" if lora_dtype == "fp32" else f"{lora_dtype} weights cast to fp32"}


@register_target("onnx")
class OnnxGenAI:
    """Whole-bundle target: unlike ExecuTorch it starts from the Hugging Face directory, not our torch decoder."""

    file_suffix = ".onnx"

    def plan(self, spec: Any, adapters: dict[str, Any]) -> list[OnnxProgram]:
        if spec.adapters.strategy == "none":
            return [OnnxProgram("base", spec.ops, None)]
        if spec.adapters.strategy == "separate":
            return [OnnxProgram(FOUNDATION, spec.ops, None)]
        return [OnnxProgram(op, [op], adapters[op]) for op in spec.ops]

    def export(self, job: ExportJob) -> TargetResult:
        """Build every ONNX program of the bundle into the bundle directory."""
        with step("onnx", job.timings):
            r = self._export(job.spec, job.base, job.arch, job.adapters, job.out, job.timings, job.vision)
        return TargetResult(ops=r["ops"], info=r["info"], quantization=dict(r["info"]["quantization"]),
                            vision=r.get("vision"))

    def _export(self, spec: Any, base: Any, arch: Any, adapters: dict[str, Any], out: Path,
                timings: dict[str, float], vision: Any = None) -> dict[str, Any]:
        from tqdm import tqdm

        scheme, variant = spec.quant.scheme, spec.quant.int8_variant
        precision = {"int4": "int4", "fp32": "fp32", "int8": "int8" if variant == "matmulnbits" else "fp32"}[scheme]
        dynamic8 = scheme == "int8" and variant == "dynamic"
        separate = spec.adapters.strategy == "separate"
        lora_dtype = LORA_DTYPES[spec.quant.lora_dtype]
        max_length = builder_max_length(arch)
        scratch_root = Path(tempfile.mkdtemp(prefix=".onnx-scratch-", dir=out))
        ops: dict[str, dict[str, Any]] = {}
        head8, offsets = False, 0
        info: dict[str, Any] = {"genai_config": GENAI_CONFIG, "max_length": max_length, "builder": {}}
        served = [*adapters.values(), *([vision.slot_adapter()] if vision is not None else [])]
        modules = sorted({mod for a in served for (_, mod) in a.weights}) if separate else []
        result: dict[str, Any] = {}
        try:
            from ..vision.hf_vlm import is_vlm_dir

            lm_dir = base.hf_dir
            if is_vlm_dir(lm_dir):  # the builder reads a language model's directory: write the VLM's LM out once
                lm_dir = scratch_root / "hf-lm"
                base.model.save_pretrained(lm_dir, safe_serialization=True)
                base.tokenizer.save_pretrained(lm_dir)
            for prog in tqdm(self.plan(spec, adapters), desc="onnx", unit="program", disable=None):
                t0 = time.perf_counter()
                work = scratch_root / prog.stem
                work.mkdir()
                hf_dir = lm_dir
                if prog.adapter is not None:
                    hf_dir = merged_hf_dir(base, prog.adapter, scratch_root / f"hf-{prog.stem}")
                filename = f"{prog.stem}.onnx"
                opts = builder_options(spec, filename, precision)
                graph = run_builder(Path(hf_dir), work, precision, opts, max_length, prog.stem)
                if dynamic8:
                    quantize_dynamic_int8(graph)
                info["builder"] = {"precision": precision, "execution_provider": "cpu",
                                   **{k: v for k, v in opts.items() if k not in ("filename", "hf_token")}}
                if separate:
                    dims = {m: linear_dims(base.model, m) for g in GROUPS for m in g[2]}
                    groups, lora_inputs, lora_blocks = insert_lora(graph, arch.n_layers, set(modules), dims,
                                                                   lora_dtype)
                    info["lora"] = {"modules": modules, "groups": sorted({g.name for g in groups}),
                                    "ranks": {op: a.rank for op, a in adapters.items()}, "dtype": lora_dtype,
                                    "default": "empty (rank 0): no adapter active = the bare base"}
                if scheme == "int4":
                    head8, n_offsets = rewrite_int4(
                        graph, Path(hf_dir), spec.quant.group_size, head8=spec.quant.lm_head_bits == 8,
                        offsets=int4_weights_for(spec.quant, prog.adapter is not None) == "asymmetric")
                    offsets += n_offsets
                data = work / f"{filename}.data"
                if not (out / GENAI_CONFIG).exists():
                    cfg = json.loads((work / GENAI_CONFIG).read_text())
                    info["tied_embeddings"] = bool(getattr(base.config, "tie_word_embeddings", False))
                    (out / GENAI_CONFIG).write_text(json.dumps(cfg, indent=4) + "\n")
                for f in (graph, data):
                    shutil.move(str(f), out / f.name)
                entry = {"program": filename, "data_files": [data.name]}
                if separate:
                    gid = graph_id(out / filename, out / data.name)
                    info.update(lora_inputs=lora_inputs, graph_id=gid, **({"lora_blocks": lora_blocks}
                                                                          if lora_blocks else {}))
                    for op in prog.ops:
                        path = out / f"{op}.onnx_adapter"
                        write_adapter_file(path, adapter_params(adapters[op], groups, lora_dtype), gid)
                        self.check_adapter(path, lora_inputs, gid, lora_dtype, lora_blocks)
                        ops[op] = {**entry, "adapter_file": path.name, "adapter_name": op}
                else:
                    for op in prog.ops:
                        ops[op] = dict(entry)
                timings[f"onnx {prog.stem}"] = round(time.perf_counter() - t0, 2)
                shutil.rmtree(work, ignore_errors=True)
            if vision is not None:
                from .onnx_vision import export_vision

                t0 = time.perf_counter()
                result["vision"] = export_vision(
                    vision, spec.vision.quant, arch, out, f"{FOUNDATION}.onnx",
                    adapter_params(vision.slot_adapter(), groups, lora_dtype),
                    lambda path, gid: self.check_adapter(path, lora_inputs, gid, lora_dtype, lora_blocks))
                timings["onnx vision"] = round(time.perf_counter() - t0, 2)
        finally:
            shutil.rmtree(scratch_root, ignore_errors=True)
        info["quantization"] = {"scheme": scheme, "group_size": spec.quant.group_size,
                                "accuracy_level": spec.quant.accuracy_level,
                                **describe_quant(scheme, spec.quant.accuracy_level, spec.quant.group_size,
                                                 info.get("tied_embeddings", False), variant, head8,
                                                 offsets > 0, spec.quant.lora_dtype)}
        return {"ops": ops, "info": info, **result}

    @staticmethod
    def check_adapter(path: Path, lora_inputs: dict[str, list[int]], gid: int, dtype: str,
                      blocks: dict[str, int]) -> None:
        """The written adapter file read back through onnxruntime and held against the graph's inputs."""
        from runtimes.onnx import AdapterFileError, check_adapter_file

        try:
            check_adapter_file(path, lora_inputs, gid, dtype, blocks)
        except AdapterFileError as e:
            raise ExportError(str(e)) from e
