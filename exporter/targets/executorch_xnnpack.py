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
            served[job.vision.op] = job.vision.adapter
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
              stop_token_ids: list[int] | None = None) -> dict[str, Any]:
        """The text program: `forward(tokens, start_pos)`; `separate`: weights tagged for foundation.ptd / lora.ptd."""
        from torch.export import Dim

        seq = Dim("seq", min=1, max=decoder.cfg.max_seq_len - 1)
        return lower_methods({"forward": (decoder, example, ({1: seq}, None))}, tag=_data_tag if separate else None,
                             out_dir=out_dir, program_name=program_name,
                             constant_methods=llm_metadata(decoder.cfg, stop_token_ids or []))

    def lower_vision(self, decoder, vision: Any, *, out_dir: Path, stop_token_ids: list[int],
                     quant: str = "int8") -> dict[str, Any]:
        """The vision op's program (exporter.vision.program): `vision_encoder` (weights inside the program; `quant`
        int8 or fp32), `token_embedding` and `text_decoder` over the same quantized decoder as the text program."""
        from torch.export import Dim

        from ..arch import TextDecoder, TokenEmbedding
        from ..vision import image_spec
        from ..vision.encoder import load_encoder
        from ..vision.program import VISION_PROGRAM, VisionEncoder, quantize_vision_encoder

        spec = image_spec(vision.meta)
        encoder = VisionEncoder(load_encoder(), vision.projector, spec).eval()
        image = (torch.zeros(1, 3, spec.size, spec.size, dtype=torch.uint8),)
        if quant == "int8":
            encoder = quantize_vision_encoder(encoder, image)
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
    where the text program's go."""
    return None if "vision" in node.name else _data_tag(node)


def lower_methods(methods: dict[str, tuple[Any, tuple, Any]], *, tag, out_dir: Path, program_name: str,
                  constant_methods: dict[str, Any]) -> dict[str, Any]:
    """Export (non-strict) and lower each method (module, example inputs, dynamic shapes) to XNNPACK into one
    program, `out_dir/<program_name>.pte`; with `tag`, weights go to the data files it names (`_data_tag`)."""
    from torch.export import export

    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass

    t0 = time.perf_counter()
    try:
        with torch.no_grad():
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
                partitioner={n: [XnnpackPartitioner()] for n in eps} if len(eps) > 1 else [XnnpackPartitioner()],
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
