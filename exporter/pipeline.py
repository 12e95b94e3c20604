"""The export pipeline: load -> plan -> (attach adapter -> quantize -> lower) per program -> validate -> bundle.

Each step is a small function; `run(spec)` chains them and returns the summary the CLI prints.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata as md
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from runtimes import prompts
from runtimes.manifest import SCHEMA_VERSION, dump, load_manifest, sha256_file

from .bundle import BundleWriter, check_output
from .errors import ExportError, ParityError
from .spec import ExportSpec

log = logging.getLogger("memlora.export")
FORMATS = {"executorch": ("executorch",), "onnx": ("onnx",), "both": ("executorch", "onnx")}
FOUNDATION = "foundation.ptd"
STOP_TOKEN_NAMES = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>", "<eos>")
QUANT_DESCRIPTION = {
    "int4": {"linear": "int8 dynamic activation + int4 weight, per-group", "lm_head": "int8 dynamic activation + int8 "
             "weight, per-channel", "embedding": "int8 weight, per-channel"},
    "int8": {"linear": "int8 dynamic activation + int8 weight, per-channel", "embedding": "int8 weight, per-channel"},
    "fp32": {"linear": "fp32", "embedding": "fp32"},
}
INT4_WEIGHTS = {
    "asymmetric": "min-max asymmetric 4-bit codes run as symmetric int4 (XNNPACK) + a float per-group offset on the "
                  "input's group sums",
    "symmetric": "symmetric int4, HQQ scales",
}


@contextlib.contextmanager
def step(name: str, timings: dict[str, float]) -> Iterator[None]:
    log.info("%s ...", name)
    t0 = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - t0, 2)
    log.info("%s done in %.1f s", name, timings[name])


@dataclass
class Program:
    """One program to lower: its file stem and the ops it serves, with the adapter it carries (if any)."""

    stem: str
    ops: list[str]
    adapter: Any | None


def plan(spec: ExportSpec, adapters: dict[str, Any]) -> list[Program]:
    if spec.adapters.strategy == "none":
        return [Program("base", spec.ops, None)]
    return [Program(op, [op], adapters[op]) for op in spec.ops]


def versions() -> dict[str, str]:
    out = {}
    for pkg in ("torch", "executorch", "torchao", "transformers", "peft", "onnxruntime", "onnxruntime-genai", "onnx"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def tool_version() -> str:
    try:
        return md.version("memlora")
    except md.PackageNotFoundError:
        return "0.1.0+src"


def stop_token_ids(tokenizer: Any, config: Any) -> list[int]:
    ids: set[int] = set()
    eos = getattr(config, "eos_token_id", None)
    ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[n] for n in STOP_TOKEN_NAMES if n in vocab)
    return sorted(int(i) for i in ids)


def prompt_format(tokenizer: Any, ops: list[str]) -> Any:
    """The chat template as per-role framing (runtimes.chat), checked against the template on every op's fidelity
    prompts and on a lone user message (memlora-run --prompt): readers then build prompts by substitution alone."""
    from .chatformat import check, derive

    fmt = derive(tokenizer)
    shapes = [prompts.render(t, **f) for t in dict.fromkeys(prompts.template_for(op) for op in ops)
              for f in prompts.FIDELITY_SAMPLES[t]]
    check(fmt, tokenizer, [*shapes, [{"role": "user", "content": "Where does Caroline live?"}]])
    return fmt


def lower_programs(spec: ExportSpec, base_decoder: Any, programs: list[Program], out: Path,
                   timings: dict[str, float], stop_ids: list[int] | None = None) -> dict[str, dict[str, Any]]:
    import torch
    from tqdm import tqdm

    from .adapters import with_adapter
    from .quant import quantize
    from .targets import get_target

    target = get_target("executorch")
    separate = spec.adapters.strategy == "separate"
    example = (torch.zeros(1, 8, dtype=torch.long), torch.tensor([0], dtype=torch.long))
    results: dict[str, dict[str, Any]] = {}
    foundation_sha = None
    for prog in tqdm(programs, desc="lower", unit="program", disable=None):
        with step(f"lower {prog.stem}", timings):
            dec = with_adapter(base_decoder, prog.adapter, spec.adapters.strategy)
            counts = quantize(dec, spec.quant, merged_adapter=prog.adapter is not None and not separate)
            scratch = out / f".scratch-{prog.stem}"
            scratch.mkdir()
            res = target.lower(dec, example, foundation_file=FOUNDATION if separate else None, out_dir=scratch,
                               program_name=prog.stem, stop_token_ids=stop_ids)
            del dec
            shutil.move(str(scratch / res["program"]), out / res["program"])
            if separate:
                sha = sha256_file(scratch / FOUNDATION)
                if foundation_sha is None:
                    foundation_sha = sha
                    shutil.move(str(scratch / FOUNDATION), out / FOUNDATION)
                elif sha != foundation_sha:
                    raise ExportError(f"foundation weights of {prog.stem!r} differ from the first op's: the shared "
                                      f"{FOUNDATION} would not serve every adapter")
            shutil.rmtree(scratch)
            res["quantized_modules"] = counts
            results[prog.stem] = res
    return results


def run(spec: ExportSpec) -> dict[str, Any]:
    from .arch import ArchConfig, build_decoder
    from .load import check_adapter, load_adapter, load_base

    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    out = spec.out_path
    # Inputs the output may not overlap (it would be replaced or land inside them): the base and adapter paths.
    inputs = [*([spec.model.base] if Path(spec.model.base).exists() else []), *spec.adapters.paths.values()]
    check_output(out, spec.output.force, inputs)
    with step("load adapters", timings):  # small and checked first: a bad adapter fails before the base loads
        adapters = {op: load_adapter(op, path) for op, path in spec.adapters.paths.items()}
    with step("load base", timings):
        base = load_base(spec.model.base)
        inputs.append(base.hf_dir)
        check_output(out, spec.output.force, inputs)
        arch = ArchConfig.from_hf(base.config, spec.model.max_seq_len)
        base_decoder = build_decoder(arch, base.model.state_dict())
    for a in adapters.values():
        check_adapter(a, base_decoder)
    programs = plan(spec, adapters)
    stops = stop_token_ids(base.tokenizer, base.config)
    chat_format = prompt_format(base.tokenizer, spec.ops)
    with BundleWriter(out, spec.output.force, inputs) as w:
        assert w.dir is not None
        base.tokenizer.backend_tokenizer.save(str(w.dir / "tokenizer.json"))
        formats = FORMATS[spec.format]
        lowered = lower_programs(spec, base_decoder, programs, w.dir, timings, stops) if "executorch" in formats else {}
        del base_decoder
        onnx_result = None
        if "onnx" in formats:
            from .targets import get_target

            with step("onnx", timings):
                onnx_result = get_target("onnx").export(spec, base, arch, adapters, w.dir, timings)
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "tool": {"name": "memlora", "version": tool_version()},
            "created_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "model": {"name": base.name, "source": spec.model.base if base.source.startswith("embedded") else base.source,
                      "architecture": arch.family, "vocab_size": arch.vocab_size, "max_seq_len": arch.max_seq_len,
                      "n_layers": arch.n_layers, "dim": arch.dim},
            "tokenizer": {"file": "tokenizer.json", "chat_template": base.tokenizer.chat_template,
                          "chat_format": chat_format.to_dict(),
                          "bos_token": base.tokenizer.bos_token, "eos_token": base.tokenizer.eos_token},
            "strategy": spec.adapters.strategy,
            "quantization": {"scheme": spec.quant.scheme, "group_size": spec.quant.group_size,
                             "lora": "fp32 (never quantized)", **QUANT_DESCRIPTION[spec.quant.scheme],
                             **({"int4_weights": INT4_WEIGHTS[spec.quant.int4_weights]}
                                if spec.quant.scheme == "int4" else {}),
                             **({"int4_weights_merged": INT4_WEIGHTS["symmetric"] + " (a merged LoRA delta is below "
                                 "one 4-bit step: min-max codes would snap it back onto the base's grid)"}
                                if spec.quant.scheme == "int4" and spec.adapters.strategy == "merged" else {})},
            "format": spec.format,
            "target": spec.target,
            "versions": versions(),
            "spec": spec.to_dict(),
            "ops": {},
            "files": {},
        }
        for prog in programs:
            res = lowered.get(prog.stem)
            for op in prog.ops:
                tpl = prompts.template_for(op)
                manifest["ops"][op] = {
                    **({"program": res["program"], "data_files": res["data_files"], "method": "forward",
                        "lowering": {k: res[k] for k in ("delegated_ops", "quantized_modules")}} if res else {}),
                    "prompt_template": tpl,
                    "prompt": prompts.op_prompt(tpl).to_dict(),
                    "generation": prompts.DEFAULT_GENERATION.get(op, prompts.FALLBACK_GENERATION),
                    "stop_token_ids": stops,
                    "adapter": prog.adapter.describe() if prog.adapter else None,
                }
        if onnx_result is not None:
            from .targets.onnx_genai import add_to_manifest

            add_to_manifest(manifest, onnx_result)
        if spec.embedder.enabled:
            from .embedder import export_embedder

            with step("embedder", timings):
                manifest["embedder"] = export_embedder(w.dir, spec.embedder.quant)
        manifest["files"] = w.file_table()
        (w.dir / "manifest.json").write_text(dump(manifest))
        if spec.fidelity.enabled:
            with step("fidelity", timings):
                per_backend = check_fidelity(spec, base, adapters, w.dir, backends=formats)
            fidelity = per_backend[formats[0]]
            for op, result in fidelity.items():
                manifest["ops"][op]["fidelity"] = result
                for b in manifest["ops"][op].get("backends", {}):
                    manifest["ops"][op]["backends"][b]["fidelity"] = per_backend[b][op]
                if "cross_check" in per_backend:
                    manifest["ops"][op]["backends"]["onnx"]["vs_executorch"] = per_backend["cross_check"][op]
            failed = [(b, op) for b in formats for op, r in per_backend[b].items() if not r["meets_target"]]
            if failed and spec.fidelity.strict:
                raise ParityError("fidelity below target for " + ", ".join(
                    f"{op}{f' ({b})' if len(formats) > 1 else ''} (agreement {per_backend[b][op]['token_agreement']:.1%}, "
                    f"max |dlogit| {per_backend[b][op]['max_abs_logit_diff']:.3g})" for b, op in failed))
        timings["total"] = round(time.perf_counter() - t_start, 2)
        manifest["export"] = {"seconds": timings}
        w.commit(manifest)
    return {"bundle": str(out), "manifest": manifest}


def check_fidelity(spec: ExportSpec, base: Any, adapters: dict[str, Any], bundle_dir: Path,
                   backends: tuple[str, ...] = ("executorch",)) -> dict[str, dict[str, dict[str, Any]]]:
    """Per backend, per op: the bundle's program against the PyTorch (+ PEFT) reference. With two backends also
    "cross_check": the ONNX program teacher-forced on the ExecuTorch program's greedy tokens."""
    from runtimes.factory import runtime_for

    from .validate import check_op, check_pair, meets_target

    manifest = load_manifest(bundle_dir, verify=False)
    runtimes = {b: runtime_for(manifest, b) for b in backends}
    runtime = runtimes[backends[0]]
    model = base.model
    if adapters:
        from peft import PeftModel

        first, *rest = adapters.values()
        # PEFT keeps adapters in ModuleDicts keyed by name: a bare "update" would shadow ModuleDict.update.
        model = PeftModel.from_pretrained(base.model, str(first.path), adapter_name=f"memlora_{first.op}")
        for a in rest:
            model.load_adapter(str(a.path), adapter_name=f"memlora_{a.op}")
        model.eval()
    results: dict[str, dict[str, Any]] = {b: {} for b in backends}
    if len(backends) > 1:
        results["cross_check"] = {}
    for op in spec.ops:
        if adapters:
            model.set_adapter(f"memlora_{op}")
        tpl = prompts.template_for(op)
        prompt_ids = [runtime.encode(prompts.render(tpl, **f)) for f in prompts.FIDELITY_SAMPLES[tpl]]
        longest = max(len(ids) for ids in prompt_ids)
        room = runtime.manifest.max_seq_len - longest
        if room < 2:
            raise ExportError(f"fidelity prompt for {op!r} ({longest} tokens) does not fit max_seq_len "
                              f"{runtime.manifest.max_seq_len}; raise --max-seq-len or pass --skip-fidelity")
        n = min(spec.fidelity.tokens, room - 1)
        stop = set(runtime.manifest.ops[op].stop_token_ids)
        for b, rt in runtimes.items():
            r = check_op(rt, op, model, prompt_ids, n, stop)
            r["meets_target"] = meets_target(spec.quant.scheme, r)
            results[b][op] = r
        if len(backends) > 1:
            results["cross_check"][op] = check_pair(runtimes[backends[0]], runtimes[backends[1]], op, prompt_ids, n,
                                                    stop)
    return results
