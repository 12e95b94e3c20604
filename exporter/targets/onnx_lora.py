"""The LoRA paths of the ONNX bundles: `merged` folds an adapter into a Hugging Face directory (PEFT
merge_and_unload) for its own builder run; `separate` adds a float LoRA path beside each adapted projection of the
foundation graph (`insert_lora`) and writes each op's weights as an onnxruntime adapter file (`adapter_params`,
`write_adapter_file`) whose model_version is the foundation graph's id (`graph_id`)."""

from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AdapterMismatchError, ExportError
from .onnx_graph import GROUPS, MATMUL_OPS, insert_after

ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
LORA_INPUT_RE = re.compile(r"^model\.layers\.(\d+)\.(attn|mlp)\.(\w+)\.lora_([AB])\.MatMul\.weight$")

# quant.lora_dtype -> the numpy / onnx element type of the LoRA graph inputs and adapter parameters
LORA_DTYPES = {"fp32": "float32", "fp16": "float16"}


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
    if not adapter.weights and groups:  # no adapter (a VLM's own LM): rank-1 zeros, an adapter file that adds nothing
        grp = groups[0]
        params[grp.input_name("A")] = np.zeros((grp.d_in, 1), dtype=dtype)
        params[grp.input_name("B")] = np.zeros((1, grp.d_out), dtype=dtype)
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
