"""ExecuTorch + XNNPACK: export the KV-cache decoder with a dynamic sequence length and lower it.

With `foundation_file` set (separate adapters), every weight except the LoRA path is tagged for an external
`.ptd` file (ExecuTorch program-data separation), delegated XNNPACK weights included; the `.pte` keeps only the
graph and the float LoRA weights.
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


def _is_foundation(node: torch.fx.Node) -> bool:
    return "lora" not in node.name and "cache" not in node.name


class _TagLiftedConstants:
    """Tag the lifted weight placeholders too. torchao's quantized weights are tensor subclasses that export
    flattens into new placeholders (qdata / scale / zero point) without the tags placed on the unlifted graph;
    XNNPACK reads the tag from the placeholder it serialises, so without this the int4 weights stayed in each .pte."""

    def __init__(self, tag: str, ep):
        self.tag = tag
        self.user_inputs = set(ep.graph_signature.user_inputs)

    def __call__(self, gm: torch.fx.GraphModule):
        from torch.fx.passes.infra.pass_base import PassResult

        for node in gm.graph.nodes:
            # Every lifted weight / constant except user inputs, the KV cache and the LoRA path. Names of the lifted
            # subclass parts (`_lifted_tensor_constantN`) are not in the export signature, hence the negative test.
            if node.op == "placeholder" and node.name not in self.user_inputs and _is_foundation(node):
                node.meta.setdefault("custom", {})["delegate_constant_tag"] = self.tag
        return PassResult(gm, True)


@register_target("executorch")
class ExecuTorchXnnpack:
    file_suffix = ".pte"

    @staticmethod
    def plan(spec: Any, adapters: dict[str, Any]) -> list[tuple[str, list[str], Any]]:
        """(program stem, ops it serves, adapter it carries): one base program for every op without adapters,
        else one program per op (its LoRA merged in, or kept as separate weights over the shared foundation)."""
        if spec.adapters.strategy == "none":
            return [("base", list(spec.ops), None)]
        return [(op, [op], adapters[op]) for op in spec.ops]

    def export(self, job: ExportJob) -> TargetResult:
        """Lower each planned program; with separate adapters every program must write a byte-identical
        foundation.ptd (one copy is kept: the shared base weights)."""
        import shutil

        from ..adapters import with_adapter
        from ..quant import quantize
        from runtimes.manifest import sha256_file

        spec = job.spec
        separate = spec.adapters.strategy == "separate"
        example = (torch.zeros(1, 8, dtype=torch.long), torch.tensor([0], dtype=torch.long))
        ops: dict[str, dict[str, Any]] = {}
        foundation_sha = None
        for stem, served, adapter in self.plan(spec, job.adapters):
            with step(f"lower {stem}", job.timings):
                dec = with_adapter(job.decoder, adapter, spec.adapters.strategy)
                counts = quantize(dec, spec.quant, merged_adapter=adapter is not None and not separate)
                scratch = job.out / f".scratch-{stem}"
                scratch.mkdir()
                res = self.lower(dec, example, foundation_file=FOUNDATION if separate else None, out_dir=scratch,
                                 program_name=stem, stop_token_ids=job.stop_token_ids)
                del dec
                shutil.move(str(scratch / res["program"]), job.out / res["program"])
                if separate:
                    sha = sha256_file(scratch / FOUNDATION)
                    if foundation_sha is None:
                        foundation_sha = sha
                        shutil.move(str(scratch / FOUNDATION), job.out / FOUNDATION)
                    elif sha != foundation_sha:
                        raise ExportError(f"foundation weights of {stem!r} differ from the first op's: the shared "
                                          f"{FOUNDATION} would not serve every adapter")
                shutil.rmtree(scratch)
            for op in served:
                ops[op] = {"program": res["program"], "data_files": res["data_files"], "method": "forward",
                           "lowering": {"delegated_ops": res["delegated_ops"], "quantized_modules": counts}}
        return TargetResult(ops=ops)

    def lower(self, decoder, example, *, foundation_file: str | None, out_dir: Path, program_name: str,
              stop_token_ids: list[int] | None = None) -> dict[str, Any]:
        from torch.export import Dim, export

        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
        from executorch.exir.passes import MemoryPlanningPass
        from executorch.exir.passes.external_constants_pass import delegate_external_constants_pass_unlifted
        from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass

        stem = Path(foundation_file).stem if foundation_file else None
        tag = (lambda n: stem if _is_foundation(n) else None) if stem else None
        seq = Dim("seq", min=1, max=decoder.cfg.max_seq_len - 1)
        dyn = ({1: seq}, None)
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                ep = export(decoder, example, dynamic_shapes=dyn, strict=False)
                # Re-export the unlifted module strictly: the way through torch 2.13's run_decompositions trap, and
                # the graph on which the external-constant tags are placed (they ride on get_attr nodes).
                gm = ep.module()
                if tag:
                    delegate_external_constants_pass_unlifted(gm, tag)
                ep = export(gm, example, dynamic_shapes=dyn, strict=True)
                edge = to_edge_transform_and_lower(
                    ep,
                    constant_methods=llm_metadata(decoder.cfg, stop_token_ids or []),
                    transform_passes=[_TagLiftedConstants(stem, ep)] if stem else None,
                    partitioner=[XnnpackPartitioner()],
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
            if not (out_dir / foundation_file).exists():
                raise ExportError(f"ExecuTorch wrote no {foundation_file} for {program_name!r}")
            data_files = [foundation_file]
        graph = edge.exported_program().graph
        return {
            "program": program.name,
            "data_files": data_files,
            "seconds": time.perf_counter() - t0,
            "delegated_ops": delegation_summary(graph),
        }


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
