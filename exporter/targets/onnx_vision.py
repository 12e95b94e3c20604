"""The vision op as ONNX graphs, run by plain onnxruntime (runtimes/vision.py), over the text ops' own weights.

ONNX Runtime GenAI's multimodal path is not used: it runs the vision models it knows (Phi-3-vision, Phi-4-mm, Gemma 3,
Qwen2.5-VL), each with its own image processor from onnxruntime-extensions, and has no configuration for another
encoder, prompt layout or projector. The three graphs mirror ExecuTorch's multimodal methods:

- `vision_encoder.onnx`: uint8 RGB image [1, 3, size, size] -> visual token embeddings [1, tokens, dim] (the
  normalisation, the frozen encoder and the projector; weights inside the graph), exported with torch.onnx; at int8
  the MatMul weights (the projector's, a ViT tower's) and the convolutions of `VisionOp.int8_convs` are stored
  per-channel int8 (`int8_encoder_graph`);
- `vision_embed.onnx`: input_ids -> embeddings: the foundation graph's own embedding lookup, cut out of it;
- `vision_decoder.onnx`: the foundation graph with `inputs_embeds` in place of `input_ids` and its lookup removed
  (KV cache, attention mask and LoRA inputs as in the foundation graph), so `vqa.onnx_adapter` fits it as the text
  ops' adapters fit the foundation.

Both cut graphs keep the foundation's initializers as references into `foundation.onnx.data` (same file, same
offsets): adding vision to an ONNX bundle adds the encoder graph, two small graphs and one adapter file, not a
second copy of the LM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ExportError

ENCODER = "vision_encoder.onnx"
EMBED = "vision_embed.onnx"
DECODER = "vision_decoder.onnx"
EMBEDS_INPUT = "inputs_embeds"


def _producers(graph: Any) -> dict[str, Any]:
    return {o: n for n in graph.node for o in n.output}


def _ancestors(node: Any, producers: dict[str, Any], stop: set[str]) -> list[Any]:
    """`node` and every node it depends on, not crossing the tensors in `stop`, in graph order later."""
    seen, todo = {}, [node]
    while todo:
        n = todo.pop()
        if id(n) in seen:
            continue
        seen[id(n)] = n
        todo += [producers[i] for i in n.input if i and i not in stop and i in producers]
    return list(seen.values())


def _prune(graph: Any) -> None:
    """Drop nodes whose outputs nothing reads, and initializers no node reads."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def split_embedding(foundation: Path, out_dir: Path, hidden: int) -> tuple[Path, Path]:
    """`foundation` (an ORT GenAI decoder graph with external data) -> (`vision_decoder.onnx`, `vision_embed.onnx`)
    in `out_dir`, both reading the foundation's data file where it lies (the same directory)."""
    import copy

    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(foundation), load_external_data=False)
    g = model.graph
    users = [n for n in g.node if "input_ids" in n.input]
    if len(users) != 1 or users[0].op_type not in ("Gather", "GatherBlockQuantized"):
        raise ExportError(f"{foundation.name}: expected one embedding lookup reading input_ids, found "
                          f"{[n.op_type for n in users]}")
    lookup = users[0]
    embeds = lookup.output[0]
    part = _ancestors(lookup, _producers(g), {"input_ids"})
    ids_in = next(i for i in g.input if i.name == "input_ids")

    # The embedding graph: the lookup and what feeds it (e.g. the Reshape of a tied int4 head's weight).
    order = [n for n in g.node if any(n is p for p in part)]
    inits = {i for n in order for i in n.input}
    emb = helper.make_graph(
        [copy.deepcopy(n) for n in order], "vision_embed", [copy.deepcopy(ids_in)],
        [helper.make_tensor_value_info(embeds, TensorProto.FLOAT, ["batch_size", "sequence_length", hidden])],
        initializer=[copy.deepcopy(t) for t in g.initializer if t.name in inits])
    emb_model = helper.make_model(emb, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    emb_model.graph.output[0].name = EMBEDS_INPUT
    for n in emb_model.graph.node:
        n.output[:] = [EMBEDS_INPUT if o == embeds else o for o in n.output]

    # The decoder: embeddings in, the lookup out.
    g.node.remove(lookup)
    for n in g.node:
        n.input[:] = [EMBEDS_INPUT if i == embeds else i for i in n.input]
    pos = list(g.input).index(ids_in)
    g.input.remove(ids_in)
    g.input.insert(pos, helper.make_tensor_value_info(EMBEDS_INPUT, TensorProto.FLOAT,
                                                      ["batch_size", "sequence_length", hidden]))
    _prune(g)
    dec_path, emb_path = out_dir / DECODER, out_dir / EMBED
    for m, path in ((model, dec_path), (emb_model, emb_path)):
        onnx.save(m, str(path))  # initializers stay references into the foundation's data file
    return dec_path, emb_path


def export_encoder(encoder: Any, size: int, path: Path) -> Path:
    """The `vision_encoder` module (exporter.vision.program.VisionEncoder, fp32) as one self-contained ONNX graph."""
    import torch

    image = torch.zeros(1, 3, size, size, dtype=torch.uint8)
    try:
        torch.onnx.export(encoder, (image,), str(path), input_names=["image"], output_names=["visual_embeds"],
                          dynamo=True, external_data=False, verbose=False)
    except Exception as e:
        raise ExportError(f"ONNX export of the vision encoder failed: {type(e).__name__}: {e}") from e
    return path


def int8_encoder_graph(path: Path, convs: tuple[str, ...]) -> int:
    """Per-channel int8 weights (symmetric, round to nearest) for every MatMul's weight (the projector's, a ViT
    tower's) and the encoder's convolutions `convs` (`VisionOp.int8_convs`), each read through a DequantizeLinear,
    activations fp32; in place. Returns the weights quantized.

    Not onnxruntime's `quantize_dynamic`: its ConvInteger path quantizes a convolution's weight per tensor (one
    scale, `per_channel` is not applied to Conv), which took easy-VQA shape accuracy from 100 % to 89 % on 500 test
    questions; per-channel weights with fp32 activations gave back the fp32 encoder's answers (docs/vision.md)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    want = {f"vision_encoder.{c}.weight" for c in convs}
    picked = {n.input[1]: 0 for n in g.node if n.op_type == "Conv" and n.input[1] in want}
    picked.update({n.input[1]: 1 for n in g.node if n.op_type == "MatMul" and n.input[1] in inits})  # [in, out]
    if len([w for w in picked if w in want]) != len(convs):
        raise ExportError("the ONNX vision encoder's convolutions do not carry the encoder's weight names")
    nodes, count = [], 0
    for name, axis in picked.items():
        w = numpy_helper.to_array(inits[name]).astype(np.float32)
        other = tuple(i for i in range(w.ndim) if i != axis)
        scale = np.maximum(np.abs(w).max(axis=other), 1e-12) / 127.0
        shape = [1] * w.ndim
        shape[axis] = -1
        q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        g.initializer.remove(inits[name])
        g.initializer.extend([numpy_helper.from_array(q, f"{name}_int8"),
                              numpy_helper.from_array(scale.astype(np.float32), f"{name}_scale")])
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_scale"], [name], axis=axis,
                                      name=f"{name}_dequantize"))
        count += w.size
    for n in reversed(nodes):  # they read initializers only: first in topological order
        g.node.insert(0, n)
    onnx.save(model, str(path))
    return count


def export_vision(vision: Any, quant: str, arch: Any, out: Path, foundation: str, adapter_params: dict[str, Any],
                  check: Any) -> dict[str, Any]:
    """The vision op's ONNX files in `out` beside `foundation` (+ its .data): encoder, embedding and decoder graphs
    and `<op>.onnx_adapter`; returns the manifest's `vision.onnx`. `check(path, gid)` reads the adapter file back."""
    from ..vision import image_spec
    from ..vision.program import VisionEncoder
    from .onnx_lora import graph_id, write_adapter_file

    data = f"{foundation}.data"
    decoder, embed = split_embedding(out / foundation, out, arch.dim)
    spec = image_spec(vision.meta)
    export_encoder(VisionEncoder(vision.encoder, vision.projector, spec).eval(), spec.size, out / ENCODER)
    if quant == "int8":
        int8_encoder_graph(out / ENCODER, vision.int8_convs)
    gid = graph_id(decoder, out / data)
    adapter = out / f"{vision.op}.onnx_adapter"
    write_adapter_file(adapter, adapter_params, gid)
    check(adapter, gid)
    return {"encoder": ENCODER, "embed": embed.name, "decoder": decoder.name, "data_files": [data],
            "adapter_file": adapter.name, "graph_id": gid,
            "past": {"layers": arch.n_layers, "kv_heads": arch.n_kv_heads, "head_dim": arch.head_dim}}
