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
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AdapterMismatchError, ExportError
from ..quant import int4_weights_for
from . import register_target

log = logging.getLogger("memlora.export.onnx")

GENAI_CONFIG = "genai_config.json"
FOUNDATION = "foundation"
ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
LORA_INPUT_RE = re.compile(r"^model\.layers\.(\d+)\.(attn|mlp)\.(\w+)\.lora_([AB])\.MatMul\.weight$")

# quant.lora_dtype -> the numpy / onnx element type of the LoRA graph inputs and adapter parameters
LORA_DTYPES = {"fp32": "float32", "fp16": "float16"}


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


def quantize_dynamic_int8(graph: Path) -> None:
    """onnxruntime's dynamic int8 quantization of a float builder graph, in place (weights per channel, int8)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = graph.with_name(f"q8-{graph.name}")
    try:
        quantize_dynamic(graph, tmp, op_types_to_quantize=["MatMul"], per_channel=True, weight_type=QuantType.QInt8,
                         use_external_data_format=True,
                         extra_options={"MatMulConstBOnly": True})
    except Exception as e:
        raise ExportError(f"onnxruntime dynamic int8 quantization of {graph.name} failed: {type(e).__name__}: {e}") from e
    # Re-save under the original names with one external data file (quantize_dynamic names its own).
    model = onnx.load(str(tmp), load_external_data=True)
    for p in [graph, graph.with_name(graph.name + ".data"), tmp]:
        p.unlink(missing_ok=True)
    for p in tmp.parent.glob(f"{tmp.name}*"):
        p.unlink()
    save_with_data(model, graph)


def blockwise_int8(weight: Any, block: int) -> tuple[Any, Any]:
    """Symmetric 8-bit block-wise codes of `weight` [N, K]: scale = max|w| / 127 per block, codes = round(w / scale)
    stored as uint8 with MatMulNBits' / GatherBlockQuantized's implicit zero point 128. This is llama.cpp's Q8_0, so
    a Q8_0 source weight (SmolLM2's GGUF token embedding) comes back code for code."""
    import numpy as np

    w = np.asarray(weight, dtype=np.float32)
    n, k = w.shape
    g = w.reshape(n, k // block, block)
    scale = np.abs(g).max(-1) / 127.0
    safe = np.where(scale == 0, 1.0, scale)
    codes = np.clip(np.rint(g / safe[..., None]), -127, 127).astype(np.int16) + 128
    return codes.astype(np.uint8), scale.astype(np.float32)


HEAD_KEYS = ("lm_head.weight", "model.embed_tokens.weight", "model.language_model.embed_tokens.weight")


def head_weight(tensors: dict[str, Any]) -> Any:
    """The LM head weight [vocab, hidden] among a HF checkpoint's tensors (the embedding when they are tied)."""
    key = next((k for k in HEAD_KEYS if k in tensors), None)
    if key is None:
        raise ExportError("no LM head or embedding weight in the model's safetensors")
    return tensors[key]


def head_to_int8(model: Any, weight: Any, block: int) -> bool:
    """Rewrite the builder's int4 LM head (and the tied embedding that gathers from the same weight) as 8-bit
    block-wise, in the loaded ModelProto: MatMulNBits bits=8, GatherBlockQuantized bits=8, one shared uint8 weight. Returns False
    when the graph has no 4-bit MatMulNBits producing `logits`.

    Why: the head maps straight to logits, so its int4 error flips near-tie greedy tokens; llama.cpp keeps it at
    8 bits (SmolLM2's Q4_1 GGUF stores token_embd as Q8_0) and so does the ExecuTorch int4 scheme (quant.SCHEMES)."""
    import numpy as np
    from onnx import helper, numpy_helper

    g = model.graph
    head = next((n for n in g.node if n.op_type == "MatMulNBits" and "logits" in n.output), None)
    attrs = {a.name: helper.get_attribute_value(a) for a in head.attribute} if head is not None else {}
    if head is None or attrs.get("bits") != 4 or attrs.get("block_size") != block:
        return False
    b_name, s_name = head.input[1], head.input[2]
    if len(head.input) > 3 and head.input[3]:
        return False  # a zero-point input: not the builder's symmetric int4 head
    codes, scales = blockwise_int8(weight, block)
    n, k = int(attrs["N"]), int(attrs["K"])
    if codes.shape[:2] != (n, k // block):
        raise ExportError(f"LM head is {n}x{k} in the graph but the model's weight is {tuple(weight.shape)}")
    q_name = b_name.replace("_Q4", "") + "_Q8"
    inits = {t.name: t for t in g.initializer}
    inits[b_name].CopyFrom(numpy_helper.from_array(codes, q_name))
    inits[s_name].CopyFrom(numpy_helper.from_array(scales, s_name))
    flat_shape = f"/model/constants/INT64/[{n}, {k}]/head_int8"
    g.initializer.append(numpy_helper.from_array(np.array([n, k], np.int64), flat_shape))
    producer = {o: nd for nd in g.node for o in nd.output}
    for nd in g.node:
        for i, name in enumerate(nd.input):
            if name == b_name:
                nd.input[i] = q_name
        if nd.op_type in ("MatMulNBits", "GatherBlockQuantized") and (
                q_name in nd.input or (nd.input and producer.get(nd.input[0]) is not None
                                       and q_name in producer[nd.input[0]].input)):
            for a in nd.attribute:
                if a.name == "bits":
                    a.i = 8
        if nd.op_type == "Reshape" and nd.input[0] == q_name:
            nd.input[1] = flat_shape  # the embedding views the head weight as [N, K * bits / 8]
    return True


HF_PREFIX = {"attn": "self_attn", "mlp": "mlp"}
BODY_Q4_RE = re.compile(r"^/model/layers\.(\d+)/(attn|mlp)/(\w+)/MatMul_Q4$")


def _hf_tensors(hf_dir: Path) -> dict[str, Any]:
    from safetensors.numpy import load_file

    out: dict[str, Any] = {}
    for f in sorted(Path(hf_dir).glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def int4_with_offsets(model: Any, hf: dict[str, Any], block: int) -> int:
    """Make every body int4 MatMulNBits of the loaded builder graph asymmetric and exact, from the checkpoint's
    float weights `hf`; returns how many.

    Per output row and group of `block` inputs, min-max asymmetric 4-bit is w = d * q + m, q in 0..15, i.e.
    w = d * (q - 8) + c with c = m + 8d. MatMulNBits keeps the first term (its default zero point 8, scale d: the
    codes are the source's own), and the offset c multiplies the input's group sums: y = MatMulNBits(x) +
    (x @ G) @ C, G a 0/1 [K, K / block] matrix, C [K / block, N] fp32. MatMulNBits' own zero points are 4-bit
    integers and cannot hold c; float zero points make onnxruntime dequantize the weight on every call (~50x
    slower). Same split as the ExecuTorch path (quant.GroupOffsetLinear): a Q4_1 GGUF body (min-max codes per group
    of 32) comes back exactly instead of being re-rounded; other weights get min-max asymmetric rounding."""
    import numpy as np
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    sums: dict[str, str] = {}  # input tensor -> its group sums
    extra: dict[str, list[Any]] = {}
    done = 0
    for node in list(g.node):
        m = BODY_Q4_RE.match(node.name)
        if node.op_type != "MatMulNBits" or not m or (len(node.input) > 3 and node.input[3]):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("bits") != 4 or attrs.get("block_size") != block:
            continue
        layer, sub, proj = int(m.group(1)), m.group(2), m.group(3)
        mods = next((grp[2] for grp in GROUPS if grp[0] == proj and grp[1] == sub), None)
        keys = [f"model.layers.{layer}.{HF_PREFIX[sub]}.{mod}.weight" for mod in mods or ()]
        if not keys or any(k not in hf for k in keys):
            raise ExportError(f"int4 offsets: no source weight for {node.name} (looked for {keys})")
        w = np.concatenate([np.asarray(hf[k], np.float32) for k in keys], 0)
        n_out, k_in = w.shape
        if (n_out, k_in) != (attrs["N"], attrs["K"]) or k_in % block:
            raise ExportError(f"int4 offsets: {node.name} is {attrs['N']}x{attrs['K']}, its source {n_out}x{k_in}")
        grp_w = w.reshape(n_out, k_in // block, block)
        lo, hi = grp_w.min(-1), grp_w.max(-1)
        d = (hi - lo) / 15
        codes = np.clip(np.rint((grp_w - lo[..., None]) / np.where(d == 0, 1, d)[..., None]), 0, 15).astype(np.uint8)
        offset = (lo + 8 * d).astype(np.float32)  # c = m + 8d
        b_name, s_name = node.input[1], node.input[2]
        packed = codes[..., 0::2] | (codes[..., 1::2] << 4)
        inits[b_name].CopyFrom(numpy_helper.from_array(packed.astype(np.uint8), b_name))
        shape = list(inits[s_name].dims)
        inits[s_name].CopyFrom(numpy_helper.from_array(d.astype(np.float32).reshape(shape), s_name))
        x, out = node.input[0], node.output[0]
        prefix = node.name.rsplit("/", 1)[0]
        new: list[Any] = []
        if x not in sums:
            # group sums as one MatMul with a 0/1 [K, K / block] matrix shared by every projection of that width
            # (one node instead of Reshape + ReduceSum; decode speed measured the same)
            ones = f"/model/constants/group_sum/{k_in}x{k_in // block}"
            if ones not in inits:
                eye = np.repeat(np.eye(k_in // block, dtype=np.float32), block, axis=0)
                g.initializer.append(numpy_helper.from_array(eye, ones))
                inits[ones] = g.initializer[-1]
            sums[x] = f"{x}/group_sums"
            new.append(helper.make_node("MatMul", [x, ones], [sums[x]], name=f"{prefix}/offset/GroupSum"))
        c_name = f"{b_name.rsplit('_Q4', 1)[0]}_offsets"
        g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(offset.T), c_name))  # [K / block, N]
        node.output[0] = f"{out}/q4"
        new += [helper.make_node("MatMul", [sums[x], c_name], [f"{out}/offset"], name=f"{prefix}/offset/MatMul"),
                helper.make_node("Add", [f"{out}/q4", f"{out}/offset"], [out], name=f"{prefix}/offset/Add")]
        extra[node.name] = new
        done += 1
    insert_after(g, extra)
    return done


def rewrite_int4(graph: Path, hf_dir: Path, block: int, head8: bool, offsets: bool) -> tuple[bool, int]:
    """The int4 rewrites of one builder graph (`head_to_int8`, `int4_with_offsets`) with one load and one save of
    the graph and its weights. Returns (head made 8-bit, projections given offsets)."""
    import onnx

    if not (head8 or offsets):
        return False, 0  # the builder's own int4: nothing to read or rewrite
    model = onnx.load(str(graph), load_external_data=True)
    tensors = _hf_tensors(hf_dir)
    did_head = head8 and head_to_int8(model, head_weight(tensors), block)
    done = int4_with_offsets(model, tensors, block) if offsets else 0
    if did_head or done:
        save_with_data(model, graph)
    return did_head, done


def insert_after(g: Any, extra: dict[str, list[Any]]) -> None:
    """Put each list of new nodes right after the node it is keyed by (keeps the graph topologically sorted)."""
    nodes = []
    for n in g.node:
        nodes.append(n)
        nodes.extend(extra.get(n.name, []))
    del g.node[:]
    g.node.extend(nodes)


def save_with_data(model: Any, graph: Path) -> None:
    """Save `model` as `graph` with all weights in one `<graph>.data` file (replaced)."""
    import onnx

    graph.with_name(graph.name + ".data").unlink(missing_ok=True)
    onnx.save(model, str(graph), save_as_external_data=True, all_tensors_to_one_file=True,
              location=graph.name + ".data", size_threshold=1024)


# ------------------------------------------------------------------------------------------------- adapters

def merged_hf_dir(base: Any, adapter: Any, out: Path) -> Path:
    """The base with `adapter` folded in (PEFT `merge_and_unload`), saved as a safetensors HF directory."""
    from peft import PeftModel

    model = copy.deepcopy(base.model)
    try:
        merged = PeftModel.from_pretrained(model, str(adapter.path), adapter_name=f"memlora_{adapter.op}")
        merged = merged.merge_and_unload()
    except Exception as e:
        raise AdapterMismatchError(f"adapter {adapter.op!r}: PEFT cannot merge it into the base: {e}") from e
    merged.config.architectures = [type(merged).__name__]
    merged.save_pretrained(out, safe_serialization=True)
    base.tokenizer.save_pretrained(out)
    return out


# The projections the builder emits, fused ones first: (group, sub-block, modules in output order). A module is taken
# by the first group whose projection exists in the graph (packed QKV unless Q/K norms kept q/k/v apart).
GROUPS = (("qkv_proj", "attn", ("q_proj", "k_proj", "v_proj")), ("q_proj", "attn", ("q_proj",)),
          ("k_proj", "attn", ("k_proj",)), ("v_proj", "attn", ("v_proj",)), ("o_proj", "attn", ("o_proj",)),
          ("gate_up_proj", "mlp", ("gate_proj", "up_proj")), ("gate_proj", "mlp", ("gate_proj",)),
          ("up_proj", "mlp", ("up_proj",)), ("down_proj", "mlp", ("down_proj",)))
MATMUL_OPS = {"MatMul", "MatMulNBits", "DynamicQuantizeMatMul", "MatMulInteger"}


@dataclass
class LoraGroup:
    layer: int
    name: str  # the projection: qkv_proj, o_proj, gate_up_proj, down_proj, ...
    sub: str  # attn | mlp
    modules: list[tuple[str, int, int]]  # (module, output offset, output size) in the projection's output
    d_in: int
    d_out: int
    compact: bool = False  # B holds each module's rows once ([r, out]); the graph spreads them into blocks

    @property
    def prefix(self) -> str:
        return f"model.layers.{self.layer}.{self.sub}.{self.name}"

    def input_name(self, ab: str) -> str:
        return f"{self.prefix}.lora_{ab}.MatMul.weight"


def linear_dims(base_model: Any, mod: str) -> tuple[int, int]:
    layer = base_model.model.layers[0]
    lin = getattr(layer.self_attn if mod in ATTN else layer.mlp, mod)
    return int(lin.in_features), int(lin.out_features)


def insert_lora(graph: Path, n_layers: int, modules: set[str], dims: dict[str, tuple[int, int]],
                dtype: str = "float32") -> tuple[list[LoraGroup], dict[str, list[int | None]], dict[str, int]]:
    """Add `y += B_g (A_g x)` beside every projection of the builder's graph that holds a module in `modules`. A_g /
    B_g are graph inputs with a symbolic rank and an empty default. Only the graph file is rewritten (the new
    initializers are 0-byte and inline); the weights' external data stays as the builder wrote it.

    `dtype` float32: B_g of a packed projection is block-diagonal ([n * r, out], zeros outside each module's rows and
    columns): the fewest nodes per token. float16 (the small-file layout): the inputs are cast to float32 where they
    enter the path, which computes in float32 either way, and a packed projection's B_g holds each module's rows
    once, side by side ([r, out]); the graph rebuilds the blocks with a 0/1 mask (Mul + Reshape), so the adapter
    files carry no zeros. Returns the groups, the LoRA inputs' shapes (None = the symbolic rank) and, per compact
    group, how many blocks its A's rank holds (A [in, n * r] vs B [r, out])."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(graph), load_external_data=False)
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    groups: list[LoraGroup] = []
    for layer in range(n_layers):
        covered: set[str] = set()
        for name, sub, mods in GROUPS:
            node = producer.get(f"/model/layers.{layer}/{sub}/{name}/MatMul/output_0")
            if node is None or node.op_type not in MATMUL_OPS or covered & set(mods) or not modules & set(mods):
                continue
            covered |= set(mods)
            parts, off = [], 0
            for m in mods:
                parts.append((m, off, dims[m][1]))
                off += dims[m][1]
            groups.append(LoraGroup(layer, name, sub, parts, dims[mods[0]][0], off,
                                    compact=dtype == "float16" and len(parts) > 1))
        missing = modules - covered
        if missing:
            raise ExportError(f"the builder's graph has no projection for {sorted(missing)} in layer {layer}: cannot "
                              "attach their LoRA")
    extra: dict[str, list[Any]] = {}
    lora: dict[str, list[int | None]] = {}
    blocks: dict[str, int] = {}
    inits = {t.name for t in g.initializer}
    for grp in groups:
        node = producer[f"/model/layers.{grp.layer}/{grp.sub}/{grp.name}/MatMul/output_0"]
        out, x = node.output[0], node.input[0]
        base_out = f"{out}/base"
        node.output[0] = base_out
        prefix = f"/model/layers.{grp.layer}/{grp.sub}/{grp.name}"
        a, b, rank = grp.input_name("A"), grp.input_name("B"), f"lora_rank_{grp.layer}_{grp.name}"
        new, (a32, b32), b_rank = [], (a, b), rank
        if dtype == "float16":
            a32, b32 = f"{prefix}/lora_A/weight_fp32", f"{prefix}/lora_B/weight_fp32"
            b_cast = f"{b32}/rows" if grp.compact else b32
            new += [helper.make_node("Cast", [a], [a32], to=onnx.TensorProto.FLOAT, name=f"{prefix}/lora_A/Cast"),
                    helper.make_node("Cast", [b], [b_cast], to=onnx.TensorProto.FLOAT, name=f"{prefix}/lora_B/Cast")]
            if grp.compact:
                # mask [n, 1, out]: block i keeps module i's output columns; B [r, out] * mask -> [n, r, out] ->
                # [n * r, out], the block-diagonal B of the fp32 layout
                mask = f"/model/constants/lora_blocks/{'x'.join(str(m[2]) for m in grp.modules)}"
                if mask not in inits:
                    m01 = np.zeros((len(grp.modules), 1, grp.d_out), np.float32)
                    for i, (_, off, size) in enumerate(grp.modules):
                        m01[i, 0, off:off + size] = 1
                    g.initializer.extend([numpy_helper.from_array(m01, mask),
                                          numpy_helper.from_array(np.array([-1, grp.d_out], np.int64), f"{mask}/shape")])
                    inits.add(mask)
                new += [helper.make_node("Mul", [b_cast, mask], [f"{b32}/blocks"], name=f"{prefix}/lora_B/Blocks"),
                        helper.make_node("Reshape", [f"{b32}/blocks", f"{mask}/shape"], [b32],
                                         name=f"{prefix}/lora_B/Reshape")]
                b_rank = f"{rank}_per_module"
                blocks[grp.prefix] = len(grp.modules)
        extra.setdefault(node.name, []).extend(new + [
            helper.make_node("MatMul", [x, a32], [f"{prefix}/lora_A/output_0"], name=f"{prefix}/lora_A/MatMul"),
            helper.make_node("MatMul", [f"{prefix}/lora_A/output_0", b32], [f"{prefix}/lora_B/output_0"],
                             name=f"{prefix}/lora_B/MatMul"),
            helper.make_node("Add", [base_out, f"{prefix}/lora_B/output_0"], [out], name=f"{prefix}/lora/Add"),
        ])
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        g.input.extend([helper.make_tensor_value_info(a, elem, [grp.d_in, rank]),
                        helper.make_tensor_value_info(b, elem, [b_rank, grp.d_out])])
        g.initializer.extend([numpy_helper.from_array(np.zeros((grp.d_in, 0), dtype), a),
                              numpy_helper.from_array(np.zeros((0, grp.d_out), dtype), b)])
        lora[a], lora[b] = [grp.d_in, None], [None, grp.d_out]
    insert_after(g, extra)
    onnx.save(model, str(graph))
    return groups, lora, blocks


def adapter_params(adapter: Any, groups: list[LoraGroup], dtype: str = "float32") -> dict[str, Any]:
    """The op's LoRA as the foundation graph's inputs, of `dtype` (float32 or float16): per group A_g = [A_m^T ...]
    side by side ([in, sum r]) and B_g with each module's (scale * B_m)^T in its rank rows and output columns (zeros
    elsewhere). A compact group's B_g is those rows summed into one [r, out] (the modules' columns do not overlap),
    and its A_g has a block of zeros for a module the adapter leaves out. Groups the adapter does not touch keep the
    graph's empty default."""
    import numpy as np

    params: dict[str, Any] = {}
    placed = set()
    for grp in groups:
        present = {m for m, _, _ in grp.modules if (grp.layer, m) in adapter.weights}
        if not present:
            continue
        ranks = {int(adapter.weights[(grp.layer, m)][0].shape[0]) for m in present}
        if grp.compact and len(ranks) > 1:
            raise AdapterMismatchError(f"adapter {adapter.op!r}: layer {grp.layer} {grp.name} mixes LoRA ranks "
                                       f"{sorted(ranks)}; the fp16 layout needs one rank per projection")
        a_parts, b_rows, r = [], [], min(ranks)
        for m, off, size in grp.modules:
            if m not in present:
                if grp.compact:  # keep the block structure: this module's rank columns of A are zero
                    a_parts.append(np.zeros((grp.d_in, r), np.float32))
                    b_rows.append(np.zeros((r, grp.d_out), np.float32))
                continue
            a, b = adapter.weights[(grp.layer, m)]
            a_parts.append(a.detach().float().numpy().T)
            row = np.zeros((a.shape[0], grp.d_out), np.float32)
            row[:, off:off + size] = (adapter.scale * b).detach().float().numpy().T
            b_rows.append(row)
            placed.add((grp.layer, m))
        b_all = np.concatenate(b_rows, axis=0)
        if grp.compact:
            b_all = b_all.reshape(len(grp.modules), -1, grp.d_out).sum(0)
        params[grp.input_name("A")] = np.ascontiguousarray(np.concatenate(a_parts, axis=1), dtype=dtype)
        params[grp.input_name("B")] = np.ascontiguousarray(b_all, dtype=dtype)
    left = sorted(set(adapter.weights) - placed)
    if left:
        raise AdapterMismatchError(f"adapter {adapter.op!r}: layer {left[0][0]} {left[0][1]} has no LoRA input in the "
                                   "foundation graph")
    return params


def graph_id(graph: Path, data: Path) -> int:
    """A 31-bit id of the foundation graph and its weights, stored as each adapter file's model_version."""
    from runtimes.manifest import sha256_file

    return int(hashlib.sha256((sha256_file(graph) + sha256_file(data)).encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def write_adapter_file(path: Path, params: dict[str, Any], gid: int) -> None:
    import onnxruntime as ort

    fmt = ort.AdapterFormat()
    fmt.set_adapter_version(1)
    fmt.set_model_version(gid)
    fmt.set_parameters({k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in params.items()})
    fmt.export_adapter(str(path))


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

    def export(self, spec: Any, base: Any, arch: Any, adapters: dict[str, Any], out: Path,
               timings: dict[str, float]) -> dict[str, Any]:
        """Build every ONNX program of the bundle into `out`. Returns {"ops": {op: backend entry}, "info": {...}}."""
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
        modules = sorted({mod for a in adapters.values() for (_, mod) in a.weights}) if separate else []
        try:
            for prog in tqdm(self.plan(spec, adapters), desc="onnx", unit="program", disable=None):
                t0 = time.perf_counter()
                work = scratch_root / prog.stem
                work.mkdir()
                hf_dir = base.hf_dir
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
        finally:
            shutil.rmtree(scratch_root, ignore_errors=True)
        info["quantization"] = {"scheme": scheme, "group_size": spec.quant.group_size,
                                "accuracy_level": spec.quant.accuracy_level,
                                **describe_quant(scheme, spec.quant.accuracy_level, spec.quant.group_size,
                                                 info.get("tied_embeddings", False), variant, head8,
                                                 offsets > 0, spec.quant.lora_dtype)}
        return {"ops": ops, "info": info}

    @staticmethod
    def check_adapter(path: Path, lora_inputs: dict[str, list[int]], gid: int, dtype: str,
                      blocks: dict[str, int]) -> None:
        """The written adapter file read back through onnxruntime and held against the graph's inputs."""
        from runtimes.onnx import AdapterFileError, check_adapter_file

        try:
            check_adapter_file(path, lora_inputs, gid, dtype, blocks)
        except AdapterFileError as e:
            raise ExportError(str(e)) from e


def add_to_manifest(manifest: dict[str, Any], result: dict[str, Any]) -> None:
    """Record the ONNX programs: per op under `ops.<op>.backends.onnx` (ExecuTorch's files, when the bundle has
    them, move under `backends.executorch` too and stay the op's `program` / `data_files`), the graph-level facts
    under `backends.onnx`. An ONNX-only bundle's `program` / `data_files` are the ONNX files."""
    manifest.setdefault("backends", {})["onnx"] = result["info"]
    for op, e in result["ops"].items():
        entry = manifest["ops"][op]
        backends = entry.setdefault("backends", {})
        if "program" in entry:
            backends["executorch"] = {k: entry[k] for k in ("program", "data_files", "method") if k in entry}
        else:
            entry["program"] = e["program"]
            entry["data_files"] = [*e["data_files"], *([e["adapter_file"]] if e.get("adapter_file") else [])]
        backends["onnx"] = e
    if manifest.get("format") == "onnx":
        manifest["quantization"] = {k: v for k, v in result["info"]["quantization"].items()}
