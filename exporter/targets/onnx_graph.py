"""Edits of the ORT GenAI builder's graphs after it wrote them: the int4 rewrites (`head_to_int8`: an 8-bit LM head
and tied embedding; `int4_with_offsets`: exact asymmetric int4 bodies), onnxruntime's dynamic int8 quantization,
and the helpers every graph edit uses (node insertion, saving with one external data file). The projection table
`GROUPS` is shared with the LoRA path (onnx_lora.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import ExportError

# The projections the builder emits, fused ones first: (group, sub-block, modules in output order). A module is taken
# by the first group whose projection exists in the graph (packed QKV unless Q/K norms kept q/k/v apart).
GROUPS = (("qkv_proj", "attn", ("q_proj", "k_proj", "v_proj")), ("q_proj", "attn", ("q_proj",)),
          ("k_proj", "attn", ("k_proj",)), ("v_proj", "attn", ("v_proj",)), ("o_proj", "attn", ("o_proj",)),
          ("gate_up_proj", "mlp", ("gate_proj", "up_proj")), ("gate_proj", "mlp", ("gate_proj",)),
          ("up_proj", "mlp", ("up_proj",)), ("down_proj", "mlp", ("down_proj",)))
MATMUL_OPS = {"MatMul", "MatMulNBits", "DynamicQuantizeMatMul", "MatMulInteger"}



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
