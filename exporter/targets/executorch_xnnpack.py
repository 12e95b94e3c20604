"""ExecuTorch + XNNPACK: export the KV-cache decoder with a dynamic sequence length and lower it.

Separate adapters are lowered once for every op (ExecuTorch program-data separation): the weights of the base are
tagged for `foundation.ptd`, those of the LoRA path for `lora.ptd`, delegated XNNPACK weights included, so
`model.pte` keeps only the graph. The graph carries a LoRA path in every (layer, module) any adapter targets, at the
largest rank among them (`adapters.lora_slots`), and is lowered with distinct random placeholder weights; each op's
`<op>.lora.ptd` then holds that op's zero-padded weights under the placeholders' keys (`write_op_lora`). An op is
loaded from model.pte + foundation.ptd + its <op>.lora.ptd. Before quantization the projections that read one input
run as one linear (`exporter.fuse`: q/k/v, gate/up), so the LoRA data is written in that fused layout.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import ExportError
from ..progress import step
from . import ExportJob, TargetResult, register_target

FOUNDATION = "foundation.ptd"
LORA = "lora.ptd"  # the lowering's placeholder LoRA data; never in a bundle
PROGRAM = "model.pte"  # separate adapters: the one program every op runs


def _data_tag(node: torch.fx.Node) -> str | None:
    """The external data file (stem) a weight goes to: the LoRA path's to lora.ptd, the base's to foundation.ptd;
    the KV cache stays in the program."""
    if "cache" in node.name:
        return None
    return Path(LORA).stem if "lora" in node.name else Path(FOUNDATION).stem


class _TagLiftedConstants:
    """Tag every lifted weight placeholder with its data file: XNNPACK reads the tag from the placeholder it
    serialises, and torchao's quantized weights are tensor subclasses that export flattens into new placeholders
    (qdata / scale / zero point), which only exist on the lifted graph."""

    def __init__(self, tag, ep):
        self.tag = tag  # node -> data file stem or None
        self.user_inputs = set(ep.graph_signature.user_inputs)

    def __call__(self, gm: torch.fx.GraphModule):
        from torch.fx.passes.infra.pass_base import PassResult

        for node in gm.graph.nodes:
            # Every lifted weight / constant except user inputs and the KV cache. Names of the lifted
            # subclass parts (`_lifted_tensor_constantN`) are not in the export signature, hence the negative test.
            if node.op == "placeholder" and node.name not in self.user_inputs and self.tag(node):
                node.meta.setdefault("custom", {})["delegate_constant_tag"] = self.tag(node)
        return PassResult(gm, True)


@register_target("executorch")
class ExecuTorchXnnpack:
    file_suffix = ".pte"

    @staticmethod
    def plan(spec: Any, adapters: dict[str, Any]) -> list[tuple[str, list[str], Any]]:
        """(program stem, ops it serves, adapter it carries): one base program for every op without adapters,
        else one program per op with its LoRA merged in. Separate adapters share one program (`export_separate`)."""
        if spec.adapters.strategy == "separate":
            return [(Path(PROGRAM).stem, list(spec.ops), None)]
        if spec.adapters.strategy == "none":
            return [("base", list(spec.ops), None)]
        return [(op, [op], adapters[op]) for op in spec.ops]

    def export(self, job: ExportJob) -> TargetResult:
        """Lower each planned program; separate adapters are lowered once for every op (`export_separate`)."""
        import shutil

        from ..adapters import with_adapter
        from ..fuse import fuse_projections
        from ..quant import quantize

        spec = job.spec
        if spec.adapters.strategy == "separate":
            return self.export_separate(job)
        ops: dict[str, dict[str, Any]] = {}
        for stem, served, adapter in self.plan(spec, job.adapters):
            with step(f"lower {stem}", job.timings):
                dec = with_adapter(job.decoder, adapter, spec.adapters.strategy)
                fuse_projections(dec)
                counts = quantize(dec, spec.quant, merged_adapter=adapter is not None)
                scratch = job.out / f".scratch-{stem}"
                scratch.mkdir()
                res = self.lower(dec, example_inputs(), separate=False, out_dir=scratch, program_name=stem,
                                 stop_token_ids=job.stop_token_ids)
                del dec
                shutil.move(str(scratch / res["program"]), job.out / res["program"])
                shutil.rmtree(scratch)
            for op in served:
                ops[op] = {"program": res["program"], "data_files": [], "method": "forward",
                           "lowering": {"delegated_ops": res["delegated_ops"], "quantized_modules": counts}}
        return TargetResult(ops=ops)

    def export_separate(self, job: ExportJob) -> TargetResult:
        """One lowering for every op: model.pte + foundation.ptd + one <op>.lora.ptd per op; with a vision op, also
        vision.pte (lowered from the same quantized decoder, so it reads the same foundation.ptd) + its lora.ptd."""
        import shutil

        from ..adapters import lora_slots, slot_weights, with_lora_slots
        from ..fuse import fuse_projections, fused_lora_weights
        from ..quant import quantize

        spec = job.spec
        served = {op: job.adapters[op] for op in spec.ops}
        if job.vision is not None:
            served[job.vision.op] = job.vision.slot_adapter()
        slots = lora_slots(list(served.values()))
        with step("lower model", job.timings):
            dec, names = with_lora_slots(job.decoder, slots)
            shapes = {n: tuple(t.shape) for n, t in dec.state_dict().items() if n in names}
            plan = fuse_projections(dec)
            counts = quantize(dec, spec.quant, merged_adapter=False)
            placeholders = {n: t.detach().clone() for n, t in dec.state_dict().items() if n in plan or n in names}
            scratch = job.out / ".scratch-model"
            scratch.mkdir()
            res = self.lower(dec, example_inputs(), separate=True, out_dir=scratch, program_name=Path(PROGRAM).stem,
                             stop_token_ids=job.stop_token_ids)
        vision = None
        if job.vision is not None:
            with step("lower vision program", job.timings):
                vscratch = job.out / ".scratch-vision"
                vscratch.mkdir()
                vres = self.lower_vision(dec, job.vision, out_dir=vscratch, stop_token_ids=job.stop_token_ids,
                                         quant=spec.vision.quant)
                same_data(vscratch / FOUNDATION, scratch / FOUNDATION, "the vision program's decoder weights")
                same_data(vscratch / LORA, scratch / LORA, "the vision program's LoRA slots", exact=True)
                shutil.move(str(vscratch / vres["program"]), job.out / vres["program"])
                shutil.rmtree(vscratch)
            vision = {"program": vres["program"], "data_files": [FOUNDATION, op_lora_file(job.vision.op)],
                      "lowering": {"delegated_ops": vres["delegated_ops"], "seconds": round(vres["seconds"], 1)}}
        del dec
        with step("adapter data", job.timings):
            layout = lora_layout(scratch / LORA, placeholders)
            for op, adapter in served.items():
                unfused = slot_weights(adapter, slots, names, shapes)
                weights = {**{n: t for n, t in unfused.items() if n in placeholders}, **fused_lora_weights(unfused, plan)}
                write_op_lora(job.out / op_lora_file(op), layout, weights)
            shutil.move(str(scratch / res["program"]), job.out / res["program"])
            shutil.move(str(scratch / FOUNDATION), job.out / FOUNDATION)
            shutil.rmtree(scratch)
        lowering = {"delegated_ops": res["delegated_ops"], "quantized_modules": counts,
                    "lora_slots": {"modules": len(slots), "max_rank": max(slots.values(), default=0)}}
        ops = {op: {"program": res["program"], "data_files": [FOUNDATION, op_lora_file(op)], "method": "forward",
                    "lowering": dict(lowering)} for op in spec.ops}
        return TargetResult(ops=ops, vision=vision)

    def lower(self, decoder, example, *, separate: bool, out_dir: Path, program_name: str,
              stop_token_ids: list[int] | None = None, as_shipped: bool = False) -> dict[str, Any]:
        """The text program: `forward(tokens, start_pos)`; `separate`: weights tagged for foundation.ptd / lora.ptd;
        `as_shipped`: lowered by ExecuTorch's code alone, not `faster_lowering` (the same bytes, slower)."""
        from torch.export import Dim

        seq = Dim("seq", min=1, max=decoder.cfg.max_seq_len - 1)
        return lower_methods({"forward": (decoder, example, ({1: seq}, None))}, tag=_data_tag if separate else None,
                             out_dir=out_dir, program_name=program_name,
                             constant_methods=llm_metadata(decoder.cfg, stop_token_ids or []), as_shipped=as_shipped)

    def lower_vision(self, decoder, vision: Any, *, out_dir: Path, stop_token_ids: list[int],
                     quant: str = "int8") -> dict[str, Any]:
        """The vision op's program (exporter.vision.program): `vision_encoder` (weights inside the program; `quant`
        int8 or fp32), `token_embedding` and `text_decoder` over the same quantized decoder as the text program."""
        from torch.export import Dim

        from ..arch import TextDecoder, TokenEmbedding
        from ..vision import image_spec
        from ..vision.program import VISION_PROGRAM, VisionEncoder, quantize_vision_encoder

        spec = image_spec(vision.meta)
        encoder = VisionEncoder(vision.encoder, vision.projector, spec).eval()
        image = (torch.zeros(1, 3, spec.size, spec.size, dtype=torch.uint8),)
        if quant == "int8":
            encoder = quantize_vision_encoder(encoder, image, vision.int8_convs)
        cfg = decoder.cfg
        seq = Dim("seq", min=1, max=cfg.max_seq_len - 1)
        methods = {
            "vision_encoder": (encoder, image, None),
            "token_embedding": (TokenEmbedding(decoder), (torch.zeros(1, 8, dtype=torch.long),), ({1: seq},)),
            "text_decoder": (TextDecoder(decoder), (torch.zeros(1, 8, cfg.dim), torch.tensor([0])), ({1: seq}, None)),
        }
        return lower_methods(methods, tag=_vision_tag, out_dir=out_dir, program_name=Path(VISION_PROGRAM).stem,
                             constant_methods=llm_metadata(cfg, stop_token_ids))


def _vision_tag(node: torch.fx.Node) -> str | None:
    """The vision program's data files: the encoder's and projector's weights stay in the program, the decoder's go
    where the text program's go. Tensors ExecuTorch's constant propagation makes (`_prop_tensor_constantN`, e.g. a
    ViT's position embeddings gathered at fixed positions) stay in the program too: they carry no module name and
    are not the decoder's weights (`same_data` checks that the decoder's all land in the text program's files)."""
    return None if "vision" in node.name or node.name.startswith("_prop_tensor_constant") else _data_tag(node)


# Three costs of ExecuTorch's lowering that grow with the graph, cut here without changing a byte of its output
# (tests/test_export.py::test_faster_lowering_is_byte_identical holds them to the library's own lowering):
#
# 1. XNNPACK's preprocess runs its 17 graph passes over every partition, each one a full re-trace of the partition with
#    symbolic shapes. On a partition of the decoder (only the ops below: linears and their int8/int4 quantization, the
#    norms, RoPE, the MLP activations, the residual adds) all but three of them find nothing to act on (batch norm,
#    convolution, pooling, upsampling, PReLU, padding, activation fusion, a cat of more than 5 inputs, channels-last
#    layouts, clones, SDPA patterns), so such a partition runs only those three, in XNNPACK's order; any other
#    partition (the vision encoder's) runs them all.
# 2. Cutting each partition out of the graph (`create_submodule_from_nodes`) re-sorts the whole graph with torch.fx's
#    `legalize_graph`, which copies every node into a new graph and so regenerates the whole module's Python code: per
#    partition, 273 times for SmolLM2. The same order is reached by moving the nodes within the graph.
# 3. XNNPACK's partitioner asks ExecuTorch to keep the linears and torchao's quantization ops whole, with a per-node
#    check; given a check, ExecuTorch re-traces the whole program through three decomposition passes instead of one
#    (`_gen_edge_manager_for_partitioners`). When the check accepts every such node of the program (it does for the
#    decoder) the partitioner says so up front (`Partitioner` below): the same ops kept, one pass.
# The default export (SmolLM2-135M, 30 layers): lowering 361 s -> 222 s, byte for byte the same (docs/export.md).
DECODER_OPS = frozenset({
    "aten.add.Tensor", "aten.cat.default", "aten.gelu.default", "aten.linear.default", "aten.mul.Tensor",
    "aten.neg.default", "aten.pow.Tensor_Scalar", "aten.rsqrt.default", "aten.sigmoid.default", "getitem",
    "torchao.choose_qparams_affine.default", "torchao.dequantize_affine.default", "torchao.quantize_affine.default",
})
_XNNPACK_CAT_INPUTS = 5  # XNNPACK's DecomposeConcatenate splits a longer cat


def is_decoder_partition(graph: torch.fx.Graph) -> bool:
    """Only DECODER_OPS, and no cat longer than XNNPACK's concatenate takes."""
    for n in graph.nodes:
        if n.op != "call_function":
            continue
        name = getattr(n.target, "__name__", "")
        if name not in DECODER_OPS or (name == "aten.cat.default" and len(n.args[0]) > _XNNPACK_CAT_INPUTS):
            return False
    return True


def legalize_in_place(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """torch.fx.passes.tools_common.legalize_graph's topological order (Kahn's, the same queue and the same
    prioritised ops), reached by moving the nodes within `gm`'s graph instead of copying them into a new one."""
    import collections
    import operator

    prioritized = {operator.add, operator.mul, operator.sub, operator.floordiv, operator.truediv, operator.mod,
                   operator.le, operator.lt, operator.ge, operator.gt, operator.eq, operator.ne,
                   torch.ops.aten.sym_constrain_range.default, torch.ops.aten.sym_constrain_range_for_size.default,
                   torch.ops.aten._assert_async.msg, torch.ops.aten.scalar_tensor.default,
                   torch.ops.aten._assert_scalar.default}
    nodes = list(gm.graph.nodes)
    indeg = dict.fromkeys(nodes, 0)
    for node in nodes:
        for user in node.users:
            indeg[user] += 1
    queue = collections.deque(n for n in nodes if indeg[n] == 0)
    order = []
    while queue:
        cur = queue.popleft()
        order.append(cur)
        for user in cur.users:
            indeg[user] -= 1
            if indeg[user] == 0:
                if user.op == "call_function" and user.target in prioritized:
                    queue.appendleft(user)
                else:
                    queue.append(user)
    if len(order) < len(nodes):
        raise RuntimeError(f"Input graph has cycles, unable to add {[n for n in indeg if indeg[n] != 0]}")
    for prev, node in zip(order, order[1:]):
        if prev.next is not node:
            prev.append(node)
    return gm


def xnnpack_partitioner(as_shipped: bool = False):
    """XNNPACK's partitioner; unless `as_shipped`, one that drops its per-node check when that check accepts every
    node it would apply to (item 3 above)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    if as_shipped:
        return XnnpackPartitioner()

    class Partitioner(XnnpackPartitioner):
        def ops_to_not_decompose(self, ep):
            ops, check = super().ops_to_not_decompose(ep)
            if check is not None:
                keep = {op.name() for op in ops}
                if all(check(n) for n in ep.graph.nodes
                       if n.op == "call_function" and getattr(n.target, "name", lambda: None)() in keep):
                    return ops, None
            return ops, check

    return Partitioner()


@contextlib.contextmanager
def faster_lowering(stats: dict[str, int] | None = None):
    """While lowering: decoder partitions run only the XNNPACK passes that can change them, and partitions are cut
    out without re-copying the graph (items 1 and 2 above; 3 is `xnnpack_partitioner`). `stats` counts partitions
    per pass list ("decoder" / "all")."""
    from executorch.backends.xnnpack import xnnpack_preprocess
    from executorch.backends.xnnpack._passes import ConvertToLinearPass, DimOrderOpsRevertPass, PropagateCustomMetaPass
    from executorch.exir import lowered_backend_module

    full, legalize = xnnpack_preprocess.XNNPACKPassManager, lowered_backend_module.legalize_graph

    def manager(ep, passes=None):
        if passes is None and is_decoder_partition(ep.graph):
            passes = [DimOrderOpsRevertPass, ConvertToLinearPass, PropagateCustomMetaPass]
        if stats is not None:
            key = "decoder" if passes else "all"
            stats[key] = stats.get(key, 0) + 1
        return full(ep, passes=passes)

    xnnpack_preprocess.XNNPACKPassManager, lowered_backend_module.legalize_graph = manager, legalize_in_place
    try:
        yield
    finally:
        xnnpack_preprocess.XNNPACKPassManager, lowered_backend_module.legalize_graph = full, legalize


def lower_methods(methods: dict[str, tuple[Any, tuple, Any]], *, tag, out_dir: Path, program_name: str,
                  constant_methods: dict[str, Any], as_shipped: bool = False) -> dict[str, Any]:
    """Export (non-strict) and lower each method (module, example inputs, dynamic shapes) to XNNPACK into one
    program, `out_dir/<program_name>.pte`; with `tag`, weights go to the data files it names (`_data_tag`).
    The lowering is `faster_lowering`'s unless `as_shipped` (ExecuTorch's own code throughout: the same bytes)."""
    from torch.export import export

    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass

    t0 = time.perf_counter()
    passes: dict[str, int] = {}
    try:
        with torch.no_grad(), (contextlib.nullcontext() if as_shipped else faster_lowering(passes)):
            # One non-strict export per method; the data-file tags go on the lifted weight placeholders
            # (_TagLiftedConstants). A strict re-export of `ep.module()` (36 s of the default export) gave
            # byte-identical files and outputs.
            eps = {name: export(mod, example, dynamic_shapes=dyn, strict=False)
                   for name, (mod, example, dyn) in methods.items()}
            edge = to_edge_transform_and_lower(
                eps if len(eps) > 1 else next(iter(eps.values())),
                constant_methods=constant_methods,
                transform_passes=(None if not tag else [_TagLiftedConstants(tag, eps["forward"])] if len(eps) == 1
                                  else {n: [_TagLiftedConstants(tag, ep)] for n, ep in eps.items()}),
                partitioner=({n: [xnnpack_partitioner(as_shipped)] for n in eps} if len(eps) > 1
                             else [xnnpack_partitioner(as_shipped)]),
                compile_config=EdgeCompileConfig(_check_ir_validity=False, _skip_dim_order=True),
            )
            et = edge.to_executorch(ExecutorchBackendConfig(
                extract_delegate_segments=True,
                do_quant_fusion_and_const_prop=True,
                memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False),
                sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass(),
                external_constants=tag or False,
            ))
    except Exception as e:
        raise ExportError(f"ExecuTorch lowering of {program_name!r} failed: {type(e).__name__}: {e}") from e
    program = out_dir / f"{program_name}.pte"
    program.write_bytes(et.buffer)
    data_files = []
    if tag:
        et.write_tensor_data_to_file(str(out_dir))
        missing = [f for f in (FOUNDATION, LORA) if not (out_dir / f).exists()]
        if missing:
            raise ExportError(f"ExecuTorch wrote no {missing[0]} for {program_name!r}")
        data_files = [FOUNDATION, LORA]
    summary = {n: delegation_summary(edge.exported_program(n).graph) for n in eps}
    return {
        "program": program.name,
        "data_files": data_files,
        "seconds": time.perf_counter() - t0,
        "xnnpack_passes": passes,
        "delegated_ops": summary["forward"] if list(summary) == ["forward"] else summary,
    }


def example_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens [1, 8], start_pos [1]): the decoder's export inputs (the sequence length is dynamic)."""
    return torch.zeros(1, 8, dtype=torch.long), torch.tensor([0], dtype=torch.long)


def same_data(sub: Path, full: Path, what: str, exact: bool = False) -> None:
    """Every named tensor of `sub` is in `full` under the same key with the same bytes (`exact`: and nothing else):
    a second program lowered from the same decoder reads the first one's data files."""
    from executorch.extension.flat_tensor.serialize.serialize import FlatTensorSerializer

    ser = FlatTensorSerializer()
    a, b = ser.deserialize(sub.read_bytes()), ser.deserialize(full.read_bytes())
    bad = [k for k, e in a.named_data.items()
           if k not in b.named_data or bytes(a.buffers[e.buffer_index]) != bytes(b.buffers[b.named_data[k].buffer_index])]
    if bad or (exact and set(a.named_data) != set(b.named_data)):
        raise ExportError(f"{what} do not match the text program's {full.name} "
                          f"({(bad or sorted(set(b.named_data) ^ set(a.named_data)))[0]!r})")


def op_lora_file(op: str) -> str:
    return f"{op}.lora.ptd"


def lora_layout(path: Path, placeholders: dict[str, torch.Tensor]) -> list[tuple[str, str, bool, Any]]:
    """The lowering's lora.ptd read back: per entry (key, LoRA weight name, transposed, tensor layout). XNNPACK keys
    a delegated weight by the sha256 of its bytes, a weight left to the portable kernels by its name; each entry is
    matched to its placeholder by content (as stored or transposed), so the program's keys need not be recomputed."""
    from executorch.extension.flat_tensor.serialize.serialize import FlatTensorSerializer

    payload = FlatTensorSerializer().deserialize(path.read_bytes())
    by_bytes: dict[bytes, tuple[str, bool]] = {}
    for name, t in placeholders.items():
        for transposed in (False, True):
            b = (t.t() if transposed else t).contiguous().numpy().tobytes()
            by_bytes.setdefault(b, (name, transposed))
    if len({t.numpy().tobytes() for t in placeholders.values()}) != len(placeholders):
        raise ExportError("two LoRA placeholders are equal: their data keys would collide")
    layout, seen = [], set()
    for key, entry in payload.named_data.items():
        hit = by_bytes.get(bytes(payload.buffers[entry.buffer_index]))
        if hit is None:
            raise ExportError(f"{LORA}: entry {key!r} matches no LoRA weight (transformed by the lowering?)")
        layout.append((key, hit[0], hit[1], entry.tensor_layout))
        seen.add(hit[0])
    if seen != set(placeholders):
        raise ExportError(f"{LORA} lacks LoRA weights {sorted(set(placeholders) - seen)[:3]}: they stayed in the "
                          "program, where no other op's data can replace them")
    return layout


def write_op_lora(path: Path, layout: list[tuple[str, str, bool, Any]], weights: dict[str, torch.Tensor]) -> None:
    """One op's LoRA data file: its weights under the lowered program's keys (equal tensors, e.g. the zeros of a
    slot the adapter leaves out, share one segment)."""
    from executorch.backends.xnnpack.serialization.xnnpack_graph_serialize import CONSTANT_TENSOR_ALIGNMENT
    from executorch.exir._serialize.data_serializer import DataEntry, DataPayload
    from executorch.extension.flat_tensor.serialize.serialize import FlatTensorSerializer

    buffers: list[bytes] = []
    index: dict[bytes, int] = {}
    named = {}
    for key, name, transposed, tensor_layout in layout:
        t = weights[name]
        b = (t.t() if transposed else t).contiguous().numpy().tobytes()
        if b not in index:
            index[b] = len(buffers)
            buffers.append(b)
        named[key] = DataEntry(buffer_index=index[b], alignment=CONSTANT_TENSOR_ALIGNMENT, tensor_layout=tensor_layout)
    with open(path, "wb") as f:
        FlatTensorSerializer().serialize(DataPayload(buffers=buffers, named_data=named)).write_to_file(f)


def llm_metadata(cfg, stop_token_ids: list[int]) -> dict[str, Any]:
    """The metadata methods ExecuTorch's LLM runner (TextLLMRunner, Android's LlmModule) reads from a .pte before it
    runs one: without them it refuses the program ("Required metadata method get_max_seq_len not found")."""
    return {
        "get_max_seq_len": cfg.max_seq_len,
        "get_max_context_len": cfg.max_seq_len,
        "get_vocab_size": cfg.vocab_size,
        "get_eos_ids": list(stop_token_ids),
        "use_kv_cache": True,
        "use_sdpa_with_kv_cache": True,
        "enable_dynamic_shape": True,
    }


def delegation_summary(graph) -> dict[str, int]:
    """Count of XNNPACK delegate calls vs operators left to the portable/optimized kernels."""
    counts = {"xnnpack_delegates": 0, "cpu_ops": 0, "cpu_matmuls": 0}
    for n in graph.nodes:
        if n.op != "call_function":
            continue
        name = str(n.target)
        if "executorch_call_delegate" in name:
            counts["xnnpack_delegates"] += 1
        elif "EdgeOpOverload" in name or "llama." in name:
            counts["cpu_ops"] += 1
            feeds_embedding = any("aten.embedding" in str(u.target) for u in n.users)
            if any(op in name for op in ("aten.linear", "aten.mm.", "aten.addmm", "aten.bmm")) or (
                "dequantize_affine" in name and not feeds_embedding
            ):
                counts["cpu_matmuls"] += 1  # a (quantized) linear that XNNPACK did not take
    return counts
