"""The export pipeline: load (adapters, base) -> each target exports its programs (targets/: ExecuTorch plans,
attaches adapters, quantizes and lowers; ONNX drives the ORT GenAI builder) -> the manifest assembled once from
what the targets returned -> fidelity against the PyTorch reference -> the bundle written once.

Each step is a small function; `run(spec)` chains them and returns the summary the CLI prints.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import logging
import time
from pathlib import Path
from typing import Any

from runtimes import prompts
from runtimes.manifest import SCHEMA_VERSION, from_dict

from .bundle import BundleWriter, check_output
from .errors import ExportError, InputError, ParityError
from .progress import step
from .spec import ExportSpec
from .targets import ExportJob, TargetResult, get_target

log = logging.getLogger("memlora.export")
FORMATS = {"executorch": ("executorch",), "onnx": ("onnx",), "both": ("executorch", "onnx")}
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
        vision = None
        if spec.vision.path is not None:
            from .vision import load_vision_op

            vision = load_vision_op(spec.vision.path, spec.model.base)
            inputs.append(str(vision.path))
            check_output(out, spec.output.force, inputs)
    with step("load base", timings):
        base = load_base(spec.model.base, vlm=vision.vlm if vision is not None else None)
        inputs.append(base.hf_dir)
        check_output(out, spec.output.force, inputs)
        arch = ArchConfig.from_hf(base.config, spec.model.max_seq_len)
        base_decoder = build_decoder(arch, base.model.state_dict())
    for a in [*adapters.values(), *([vision.adapter] if vision and vision.adapter else [])]:
        check_adapter(a, base_decoder)
    if vision is not None and vision.dim != arch.dim:
        raise InputError(f"{vision.path}: projector dim {vision.dim} does not fit {base.name} "
                         f"(hidden size {arch.dim})")
    # A VLM's tower can give hundreds of visual tokens (CLIP-L at 336 px: 576): they and a question must fit the cache.
    needed = int(vision.meta["visual_tokens"]) + 64 if vision is not None else 0
    if needed > arch.max_seq_len:
        raise InputError(f"{vision.path}: its {vision.meta['visual_tokens']} visual tokens and a question do not fit "
                         f"--max-seq-len {arch.max_seq_len}: pass at least {needed}")
    stops = stop_token_ids(base.tokenizer, base.config)
    chat_format = prompt_format(base.tokenizer, spec.ops)
    formats = FORMATS[spec.format]
    work = fidelity_prompts(spec, base.tokenizer, chat_format) if spec.fidelity.enabled else {}
    with SideJobs(spec, adapters, work) as side, BundleWriter(out, spec.output.force, inputs) as w:
        assert w.dir is not None
        base.tokenizer.backend_tokenizer.save(str(w.dir / "tokenizer.json"))
        job = ExportJob(spec=spec, base=base, arch=arch, adapters=adapters, out=w.dir, timings=timings,
                        stop_token_ids=stops, decoder=base_decoder, vision=vision)
        del base_decoder
        results: dict[str, TargetResult] = {}
        for fmt in formats:
            results[fmt] = get_target(fmt).export(job)
            job.decoder = None  # only ExecuTorch lowers it (and comes first): free it for the next target
        embedder = None
        if spec.embedder.enabled:
            from .embedder import export_embedder

            with step("embedder", timings):
                side.embedder_ready()
                embedder = export_embedder(w.dir, spec.embedder.quant)
        manifest = assemble(spec, base, arch, adapters, stops, chat_format, results, embedder)
        if vision is not None:
            from .vision import vision_entry

            et = results.get("executorch")  # None: ONNX graphs only (--format onnx)
            manifest["vision"] = vision_entry(vision, base.tokenizer, stops, et.vision if et else None,
                                              quant=spec.vision.quant)
            if "onnx" in results:
                manifest["vision"]["onnx"] = results["onnx"].vision
        manifest["files"] = w.file_table()
        if spec.fidelity.enabled:
            with step("fidelity", timings):
                per_backend = check_fidelity(spec, from_dict(w.dir, manifest), work, side.reference(),
                                             backends=formats)
            attach_fidelity(manifest, per_backend, formats)
            failed = [(b, op) for b in formats for op, r in per_backend[b].items() if not r["meets_target"]]
            if failed and spec.fidelity.strict:
                raise ParityError("fidelity below target for " + ", ".join(
                    f"{op}{f' ({b})' if len(formats) > 1 else ''} (agreement {per_backend[b][op]['token_agreement']:.1%}, "
                    f"max |dlogit| {per_backend[b][op]['max_abs_logit_diff']:.3g})" for b, op in failed))
        if vision is not None and spec.fidelity.enabled:
            from .vision import vision_fidelity

            with step("vision fidelity", timings):
                backends = [b for b in ("executorch", "onnx") if b in results]
                got = vision_fidelity(from_dict(w.dir, manifest), vision, base, backends=backends)
                if "executorch" in got:
                    manifest["vision"]["fidelity"] = got["executorch"]
                if "onnx" in got:
                    manifest["vision"]["onnx"]["fidelity"] = got["onnx"]
        timings["total"] = round(time.perf_counter() - t_start, 2)
        manifest["export"] = {"seconds": timings}
        w.commit(manifest)  # checked against the reader's schema, then written, once
    return {"bundle": str(out), "manifest": manifest}


def assemble(spec: ExportSpec, base: Any, arch: Any, adapters: dict[str, Any], stops: list[int], chat_format: Any,
             results: dict[str, TargetResult], embedder: dict[str, Any] | None) -> dict[str, Any]:
    """The manifest (docs/manifest.md), from the spec and what the targets returned; `files` and fidelity follow.
    An op's `program` / `data_files` are the first format's files; bundles with ONNX programs also list each
    format's files under `ops.<op>.backends` and its graph facts under `backends`."""
    formats = list(results)
    first = results[formats[0]]
    quantization = first.quantization or {
        "scheme": spec.quant.scheme, "group_size": spec.quant.group_size, "lora": "fp32 (never quantized)",
        **QUANT_DESCRIPTION[spec.quant.scheme],
        **({"int4_weights": INT4_WEIGHTS[spec.quant.int4_weights]} if spec.quant.scheme == "int4" else {}),
        **({"int4_weights_merged": INT4_WEIGHTS["symmetric"] + " (a merged LoRA delta is below one 4-bit step: "
            "min-max codes would snap it back onto the base's grid)"}
           if spec.quant.scheme == "int4" and spec.adapters.strategy == "merged" else {})}
    ops: dict[str, Any] = {}
    for op in spec.ops:
        e = first.ops[op]
        tpl = prompts.template_for(op)
        adapter = adapters.get(op) if spec.adapters.strategy != "none" else None
        ops[op] = {
            "program": e["program"],
            "data_files": [*e["data_files"], *([e["adapter_file"]] if e.get("adapter_file") else [])],
            **{k: e[k] for k in ("method", "lowering") if k in e},
            "prompt_template": tpl,
            "prompt": prompts.op_prompt(tpl).to_dict(),
            "generation": prompts.DEFAULT_GENERATION.get(op, prompts.FALLBACK_GENERATION),
            "stop_token_ids": stops,
            "adapter": adapter.describe() if adapter else None,
        }
        if formats != ["executorch"]:
            ops[op]["backends"] = {f: {k: v for k, v in r.ops[op].items() if k != "lowering"}
                                   for f, r in results.items()}
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
        "quantization": quantization,
        "format": spec.format,
        "target": spec.target,
        "versions": versions(),
        "spec": spec.to_dict(),
        "ops": ops,
        "files": {},
    }
    infos = {f: r.info for f, r in results.items() if r.info is not None}
    if infos:
        manifest["backends"] = infos
    if embedder is not None:
        manifest["embedder"] = embedder
    return manifest


def attach_fidelity(manifest: dict[str, Any], per_backend: dict[str, dict[str, Any]], formats: tuple[str, ...]) -> None:
    for op, result in per_backend[formats[0]].items():
        entry = manifest["ops"][op]
        entry["fidelity"] = result
        for b in entry.get("backends", {}):
            entry["backends"][b]["fidelity"] = per_backend[b][op]
        if "cross_check" in per_backend:
            entry["backends"]["onnx"]["vs_executorch"] = per_backend["cross_check"][op]


def fidelity_prompts(spec: ExportSpec, tokenizer: Any, chat_format: Any) -> dict[str, tuple[list[list[int]], int]]:
    """Per op: its fidelity prompts as token ids (encoded as the runtimes encode them: the bundle's chat format,
    then its tokenizer) and the number of tokens to generate after each."""
    work = {}
    for op in spec.ops:
        tpl = prompts.template_for(op)
        ids = [tokenizer.backend_tokenizer.encode(chat_format.render(prompts.render(tpl, **f)),
                                                  add_special_tokens=chat_format.add_special_tokens).ids
               for f in prompts.FIDELITY_SAMPLES[tpl]]
        longest = max(len(i) for i in ids)
        room = spec.model.max_seq_len - longest
        if room < 2:
            raise ExportError(f"fidelity prompt for {op!r} ({longest} tokens) does not fit max_seq_len "
                              f"{spec.model.max_seq_len}; raise --max-seq-len or pass --skip-fidelity")
        work[op] = (ids, min(spec.fidelity.tokens, room - 1))
    return work


def reference_model(base_model: Any, adapters: dict[str, Any]) -> Any:
    """The float base with every op's adapter loaded in PEFT (`set_adapter(f"memlora_{op}")` picks one). PEFT
    injects the LoRA layers into `base_model` itself: take anything else from it (a state dict) before."""
    if not adapters:
        return base_model
    from peft import PeftModel

    first, *rest = adapters.values()
    # PEFT keeps adapters in ModuleDicts keyed by name: a bare "update" would shadow ModuleDict.update.
    model = PeftModel.from_pretrained(base_model, str(first.path), adapter_name=f"memlora_{first.op}")
    for a in rest:
        model.load_adapter(str(a.path), adapter_name=f"memlora_{a.op}")
    return model.eval()


def reference_for(base_model: Any, adapters: dict[str, Any], work: dict[str, tuple[list[list[int]], int]]) -> dict:
    """Per op, the reference's greedy runs (tokens, logits) on its fidelity prompts."""
    from .validate import reference_runs

    model = reference_model(base_model, adapters)
    out = {}
    for op, (ids, n) in work.items():
        if adapters:
            model.set_adapter(f"memlora_{op}")
        out[op] = reference_runs(model, ids, n)
    return out


def _reference_process(base: str, adapter_paths: dict[str, str], work: dict) -> dict:
    """The reference in a spawned process: its own base and adapters, loaded the way the export loaded them."""
    import torch

    from .load import load_adapter, load_base

    torch.set_num_threads(1)  # the other core lowers
    return reference_for(load_base(base).model, {op: load_adapter(op, p) for op, p in adapter_paths.items()}, work)


def _quiet_child() -> None:
    import signal

    # The parent handles Ctrl-C / SIGHUP and terminates this process: no second traceback from it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def _embedder_process(scheme: str) -> None:
    """The embedder lowered into its cache in a spawned process (see SideJobs)."""
    import torch

    from .embedder import lower_into_cache

    torch.set_num_threads(1)
    lower_into_cache(scheme)


class SideJobs:
    """Work that runs in one spawned process on the other core while this one lowers (lowering is single-threaded
    Python), one job after the other: the fidelity reference (PyTorch + PEFT greedy runs of every op's prompts; the
    default export's fidelity step 64 s -> 8.7 s after lowering) and, when its cache is cold, the embedder's lowering
    (68 s -> 0 of the default export from a cold cache). Nothing starts when there is neither."""

    def __init__(self, spec: ExportSpec, adapters: dict[str, Any], work: dict[str, Any]):
        self._pool = self._reference = self._embedder = None
        embedder_cold = False
        if spec.embedder.enabled:
            from .embedder import cached_program

            embedder_cold = not (cached_program(spec.embedder.quant) / "meta.json").is_file()
        if work or embedder_cold:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # An executor, not multiprocessing.Pool: a worker that dies (killed, out of memory) fails the future
            # instead of leaving it waiting forever.
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_quiet_child)
        if work:
            self._reference = self._pool.submit(
                _reference_process, spec.model.base, {op: str(a.path) for op, a in adapters.items()}, work)
        if embedder_cold:
            log.info("the embedder is not in the cache: lowering it once, beside the model")
            self._embedder = self._pool.submit(_embedder_process, spec.embedder.quant)

    def reference(self) -> dict:
        assert self._reference is not None
        return self._wait(self._reference, "the fidelity reference process", "--skip-fidelity")

    def embedder_ready(self) -> None:
        """Returns once the side job lowered the embedder into its cache (if it had to); its errors are raised here."""
        if self._embedder is not None:
            self._wait(self._embedder, "the embedder's lowering process", "--no-embedder")

    @staticmethod
    def _wait(future: Any, what: str, option: str) -> Any:
        from concurrent.futures.process import BrokenProcessPool

        try:
            return future.result()
        except BrokenProcessPool:
            raise ExportError(f"{what} died (out of memory?); export again, or pass {option}") from None

    def __enter__(self) -> "SideJobs":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._pool is not None:
            procs = getattr(self._pool, "_processes", None) or {}  # CPython's; 3.14 has terminate_workers()
            for proc in list(procs.values()):
                proc.terminate()  # unfinished work (an interrupted export) is not waited for
            self._pool.shutdown(wait=True, cancel_futures=True)


def check_fidelity(spec: ExportSpec, manifest: Any, work: dict[str, tuple[list[list[int]], int]],
                   reference: dict[str, list], backends: tuple[str, ...] = ("executorch",)) -> dict[str, dict[str, dict[str, Any]]]:
    """Per backend, per op: the bundle's program against the reference runs (`reference_for`) of the `work` prompts
    (`fidelity_prompts`). With two backends also "cross_check": the ONNX program teacher-forced on the ExecuTorch
    program's greedy tokens."""
    from runtimes.factory import runtime_for

    from .validate import check_op, check_pair, meets_target

    runtimes = {b: runtime_for(manifest, b) for b in backends}
    runtime = runtimes[backends[0]]
    results: dict[str, dict[str, Any]] = {b: {} for b in backends}
    if len(backends) > 1:
        results["cross_check"] = {}
    for op in spec.ops:
        prompt_ids, n = work[op]
        tpl = prompts.template_for(op)
        if [runtime.encode(prompts.render(tpl, **f)) for f in prompts.FIDELITY_SAMPLES[tpl]] != prompt_ids:
            raise ExportError(f"the bundle's runtime encodes the {op!r} fidelity prompts differently from the export")
        stop = set(runtime.manifest.ops[op].stop_token_ids)
        for b, rt in runtimes.items():
            r = check_op(rt, op, reference[op], prompt_ids, n, stop)
            r["meets_target"] = meets_target(spec.quant.scheme, r)
            results[b][op] = r
        if len(backends) > 1:
            results["cross_check"][op] = check_pair(runtimes[backends[0]], runtimes[backends[1]], op, prompt_ids, n,
                                                    stop)
    return results
