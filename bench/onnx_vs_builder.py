"""ONNX backend benchmark on the real model: our bundles against anchors measured in the same run.

    nice -n 10 python bench/onnx_vs_builder.py [--base smollm2-135m] [--work DIR] [--stages int4,separate,int8,dynamo]

Stages (each prints its own table; everything lands in DIR/results.json and DIR/onnx_bench.png):
- int4:     decode / prefill tok/s of our int4 bundles (strategy none; the default recipe: exact asymmetric body +
            8-bit head, and the fast one: `--int4-weights symmetric --lm-head-bits 4`) vs the ORT GenAI model builder's
            untouched output (`builder.py -p int4 -e cpu`, no options) on the same model. All run through
            onnxruntime-genai with the same loop, threads and max_length, rounds interleaved.
- separate: three ops (random LoRA, the trainer's default shape: rank 16, alpha 32, all seven linears): separate
            (foundation + .onnx_adapter; fp32 LoRA and `--lora-dtype fp16`) vs merged decode tok/s per op, adapter
            switch ms (fresh generator + set_active_adapter, and set_active_adapter alone), storage of 3 ops vs one
            base; int4 fidelity per op vs PyTorch + PEFT for accuracy_level 4 and 1.
- int8:     MatMulNBits 8-bit vs onnxruntime dynamic int8 (quantize_dynamic): prefill + decode tok/s, size, fidelity.
- dynamo:   a plain `torch.onnx.export(dynamo=True)` of the Hugging Face model with its KV cache as graph inputs /
            outputs, run by onnxruntime (fp32 and dynamic int8), vs the builder's fp32 graph.

Timing: prompt = the update op's fixed sample prompt (~130 tokens), then `--decode` greedy tokens one at a time
(append_tokens / get_logits), `--rounds` rounds after a warm-up, median reported; ratios are within one round set.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OPS = ("extract", "update", "generate")
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------- fixtures

def make_adapters(hf_dir: Path, root: Path, rank: int, targets: tuple[str, ...], scale: float) -> dict[str, Path]:
    """Random non-zero PEFT LoRA adapters (seeded), one per op, shaped like memlora-train's default."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = {}
    for seed, op in enumerate(OPS, start=1):
        d = root / f"adapter_{op}_r{rank}_{len(targets)}"
        if not (d / "adapter_model.safetensors").exists():
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_pretrained(hf_dir)
            peft = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(targets),
                                                    lora_dropout=0.0))
            with torch.no_grad():
                for name, p in peft.named_parameters():
                    if "lora_" in name:
                        p.copy_(scale * torch.randn_like(p))
            peft.save_pretrained(d, safe_serialization=True)
        out[op] = d
    return out


def export(base: str, out: Path, *, quant: str, strategy: str | None = None, adapters: dict[str, Path] | None = None,
           fidelity: bool = False, accuracy_level: int = 4, seq: int = 1024, tokens: int = 64,
           **quant_options: Any) -> dict[str, Any]:
    from exporter.pipeline import run
    from exporter.spec import AdapterSpec, ExportSpec, FidelitySpec, ModelSpec, OutputSpec, QuantSpec

    if (out / "manifest.json").exists():
        return json.loads((out / "manifest.json").read_text())
    t0 = time.perf_counter()
    spec = ExportSpec(model=ModelSpec(base=base, max_seq_len=seq),
                      adapters=AdapterSpec(paths={k: str(v) for k, v in (adapters or {}).items()}, strategy=strategy),
                      quant=QuantSpec(quant, accuracy_level=accuracy_level, **quant_options),
                      output=OutputSpec(str(out)),
                      fidelity=FidelitySpec(enabled=fidelity, tokens=tokens), target="host", format="onnx")
    m = run(spec)["manifest"]
    log(f"exported {out.name} in {time.perf_counter() - t0:.0f} s")
    return m


def builder_untouched(hf_dir: Path, out: Path, precision: str, extra: tuple[str, ...] = ()) -> Path:
    """The model builder exactly as `python -m onnxruntime_genai.models.builder -i DIR -o OUT -p P -e cpu` runs."""
    if (out / "genai_config.json").exists():
        return out
    from onnxruntime_genai.models.builder import create_model, parse_extra_options

    from exporter.targets.onnx_genai import _quiet

    t0 = time.perf_counter()
    cache = out.parent / f".cache-{out.name}"
    with _quiet(False):
        opts = parse_extra_options(None, str(hf_dir), str(out), precision, "cpu", str(cache), ["hf_token=false", *extra])
        create_model(None, str(hf_dir), str(out), precision, "cpu", str(cache), **opts)
    shutil.rmtree(cache, ignore_errors=True)
    log(f"builder untouched {precision} in {time.perf_counter() - t0:.0f} s")
    return out


def dir_bytes(d: Path, names: list[str] | None = None) -> int:
    return sum(p.stat().st_size for p in d.iterdir() if p.is_file() and (names is None or p.name in names))


# ---------------------------------------------------------------------------------------------------- timing

class OgCase:
    """One graph run through onnxruntime-genai: prefill the prompt, then greedy decode one token at a time."""

    def __init__(self, label: str, model_dir: Path, filename: str | None, threads: int, max_length: int,
                 adapter: tuple[Path, str] | None = None):
        import onnxruntime_genai as og

        self.label, self.max_length = label, max_length
        cfg = og.Config(str(model_dir))
        overlay: dict[str, Any] = {"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}
        if filename:
            overlay["model"]["decoder"]["filename"] = filename
        cfg.overlay(json.dumps(overlay))
        self.model = og.Model(cfg)
        self.adapters, self.adapter_name = None, None
        if adapter:
            self.adapters = og.Adapters(self.model)
            self.adapters.load(str(adapter[0]), adapter[1])
            self.adapter_name = adapter[1]

    def run(self, prompt: list[int], n: int) -> dict[str, float]:
        import onnxruntime_genai as og

        t0 = time.perf_counter()
        p = og.GeneratorParams(self.model)
        p.set_search_options(max_length=self.max_length)
        gen = og.Generator(self.model, p)
        t1 = time.perf_counter()
        if self.adapters is not None:
            gen.set_active_adapter(self.adapters, self.adapter_name)
        t2 = time.perf_counter()
        gen.append_tokens(np.asarray(prompt, dtype=np.int32))
        tok = int(np.argmax(gen.get_logits()))
        t3 = time.perf_counter()
        for _ in range(n - 1):
            gen.append_tokens(np.asarray([tok], dtype=np.int32))
            tok = int(np.argmax(gen.get_logits()))
        t4 = time.perf_counter()
        return {"generator_ms": (t1 - t0) * 1e3, "set_adapter_ms": (t2 - t1) * 1e3,
                "prefill_tok_s": len(prompt) / (t3 - t2), "decode_tok_s": (n - 1) / (t4 - t3)}


class OrtKvCase:
    """A plain dynamo-exported graph (input_ids, position_ids, past KV -> logits, present KV) run by an
    onnxruntime InferenceSession with a hand-written KV loop (what a dynamo export leaves to the caller)."""

    def __init__(self, label: str, path: Path, threads: int, n_layers: int, kv_heads: int, head_dim: int):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        self.label = label
        self.sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.n_layers, self.kv_heads, self.head_dim = n_layers, kv_heads, head_dim
        self.outputs = [o.name for o in self.sess.get_outputs()]

    def _step(self, ids: list[int], past: list[np.ndarray], pos0: int):
        feeds = {"input_ids": np.asarray([ids], np.int64),
                 "position_ids": np.arange(pos0, pos0 + len(ids), dtype=np.int64)[None]}
        for i in range(self.n_layers):
            feeds[f"past_key_{i}"], feeds[f"past_value_{i}"] = past[2 * i], past[2 * i + 1]
        out = self.sess.run(None, feeds)
        return out[0][0, -1], out[1:]

    def run(self, prompt: list[int], n: int) -> dict[str, float]:
        empty = np.zeros((1, self.kv_heads, 0, self.head_dim), np.float32)
        past = [empty] * (2 * self.n_layers)
        t2 = time.perf_counter()
        logits, past = self._step(prompt, past, 0)
        tok = int(np.argmax(logits))
        t3 = time.perf_counter()
        pos = len(prompt)
        for _ in range(n - 1):
            logits, past = self._step([tok], past, pos)
            tok, pos = int(np.argmax(logits)), pos + 1
        t4 = time.perf_counter()
        return {"generator_ms": 0.0, "set_adapter_ms": 0.0, "prefill_tok_s": len(prompt) / (t3 - t2),
                "decode_tok_s": (n - 1) / (t4 - t3)}


def measure(cases: list[Any], prompt: list[int], n: int, rounds: int) -> dict[str, dict[str, float]]:
    """Warm-up once, then `rounds` interleaved rounds; per case the median of each figure."""
    samples: dict[str, list[dict[str, float]]] = {c.label: [] for c in cases}
    for c in cases:
        c.run(prompt, min(n, 8))
    for r in range(rounds):
        for c in cases:
            samples[c.label].append(c.run(prompt, n))
        log(f"round {r + 1}/{rounds}: " + ", ".join(f"{c.label} {samples[c.label][-1]['decode_tok_s']:.1f}" for c in cases))
    return {k: {f: statistics.median(s[f] for s in v) for f in v[0]} | {"decode_samples": [s["decode_tok_s"] for s in v]}
            for k, v in samples.items()}


def print_table(title: str, rows: list[list[Any]], header: list[str]) -> None:
    print(f"\n## {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(f"{x:.3g}" if isinstance(x, float) else str(x) for x in r) + " |")
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------------- stages

def stage_int4(a, ctx) -> dict[str, Any]:
    # Two memlora recipes: the default (exact asymmetric int4 body + 8-bit head) and the fast one (the builder's
    # symmetric int4 everywhere: --int4-weights symmetric --lm-head-bits 4), both against the builder's own output.
    ours = ctx["work"] / "ours_int4"
    fast = ctx["work"] / "ours_int4_symmetric"
    export(a.base, ours, quant="int4", seq=a.max_length)
    export(a.base, fast, quant="int4", seq=a.max_length, int4_weights="symmetric", lm_head_bits=4)
    builder = builder_untouched(ctx["hf_dir"], ctx["work"] / "builder_int4", "int4")
    labels = {"memlora int4 (default: exact, 8-bit head)": ours, "memlora int4 (symmetric, 4-bit head)": fast}
    cases = [OgCase("builder int4 (untouched)", builder, None, a.threads, a.max_length),
             *(OgCase(k, d, "base.onnx", a.threads, a.max_length) for k, d in labels.items())]
    res = measure(cases, ctx["prompt"], a.decode, a.rounds)
    b = res["builder int4 (untouched)"]
    out: dict[str, Any] = {"cases": res, "bytes": {"builder": dir_bytes(builder, ["model.onnx", "model.onnx.data"])}}
    rows = [[k, v["prefill_tok_s"], v["decode_tok_s"]] for k, v in res.items()]
    for k, d in labels.items():
        o = res[k]
        paired = [x / y for x, y in zip(o["decode_samples"], b["decode_samples"])]  # rounds are interleaved
        out[k] = {"decode_ratio": o["decode_tok_s"] / b["decode_tok_s"],
                  "decode_ratio_paired_median": statistics.median(paired),
                  "rounds_memlora_faster": sum(r > 1 for r in paired), "rounds": len(paired),
                  "prefill_ratio": o["prefill_tok_s"] / b["prefill_tok_s"]}
        out["bytes"][k] = dir_bytes(d, ["base.onnx", "base.onnx.data"])
        rows += [[f"{k} / builder (of medians)", out[k]["prefill_ratio"], out[k]["decode_ratio"]],
                 [f"{k}: decode ratio, median of per-round ratios", "", out[k]["decode_ratio_paired_median"]],
                 [f"{k}: rounds it decoded faster", "", f"{out[k]['rounds_memlora_faster']}/{out[k]['rounds']}"]]
    print_table("int4: memlora bundles vs the ORT GenAI builder's untouched output", rows,
                ["graph", "prefill tok/s", "decode tok/s"])
    return out


def stage_separate(a, ctx) -> dict[str, Any]:
    work, ads = ctx["work"], ctx["adapters"]
    base = ctx["work"] / "ours_int4"
    export(a.base, base, quant="int4", seq=a.max_length)
    fid = not a.no_fidelity
    sep = export(a.base, work / "sep_int4_acc4", quant="int4", strategy="separate", adapters=ads, fidelity=fid,
                 accuracy_level=4, seq=a.max_length)
    sep1 = export(a.base, work / "sep_int4_acc1", quant="int4", strategy="separate", adapters=ads, fidelity=True,
                  accuracy_level=1, seq=a.max_length) if fid else None
    mer = export(a.base, work / "merged_int4", quant="int4", strategy="merged", adapters=ads, fidelity=fid,
                 seq=a.max_length)
    sep16 = export(a.base, work / "sep_int4_fp16", quant="int4", strategy="separate", adapters=ads, fidelity=fid,
                   seq=a.max_length, lora_dtype="fp16")
    cases = []
    for op in OPS:
        cases.append(OgCase(f"separate {op}", work / "sep_int4_acc4", "foundation.onnx", a.threads, a.max_length,
                            adapter=(work / "sep_int4_acc4" / f"{op}.onnx_adapter", op)))
        cases.append(OgCase(f"separate fp16 LoRA {op}", work / "sep_int4_fp16", "foundation.onnx", a.threads,
                            a.max_length, adapter=(work / "sep_int4_fp16" / f"{op}.onnx_adapter", op)))
        cases.append(OgCase(f"merged {op}", work / "merged_int4", f"{op}.onnx", a.threads, a.max_length))
    cases.append(OgCase("foundation, no adapter", work / "sep_int4_acc4", "foundation.onnx", a.threads, a.max_length))
    res = measure(cases, ctx["prompt"], a.decode, a.rounds)
    # Switching: the memlora runtime's own figure (fresh generator + set_active_adapter), cycling through the ops.
    from runtimes.factory import open_bundle

    rt = open_bundle(work / "sep_int4_acc4", backend="onnx", threads=a.threads)
    for op in OPS:
        rt.ensure_loaded(op)
    switch, gen_ms = [], []
    for i in range(30):
        op = OPS[i % 3]
        rt.new_generator(op)
        switch.append(rt.switch_ms[op])
        gen_ms.append(rt.generator_ms[op])
    merged_gen = [res[f"merged {op}"]["generator_ms"] for op in OPS]
    base_bytes = dir_bytes(base, ["base.onnx", "base.onnx.data"])
    sep_bytes = sum(e["bytes"] for f, e in sep["files"].items() if f.endswith((".onnx", ".data", ".onnx_adapter")))
    mer_bytes = sum(e["bytes"] for f, e in mer["files"].items() if f.endswith((".onnx", ".data")))
    sep16_bytes = sum(e["bytes"] for f, e in sep16["files"].items() if f.endswith((".onnx", ".data", ".onnx_adapter")))
    out = {"cases": res, "adapter_switch_ms_median": statistics.median(switch), "adapter_switch_ms_max": max(switch),
           "fresh_generator_ms_median": statistics.median(gen_ms), "fresh_generator_ms_max": max(gen_ms),
           "merged_fresh_generator_ms_median": statistics.median(merged_gen),
           "storage": {"base": base_bytes, "separate_3ops": sep_bytes, "merged_3ops": mer_bytes,
                       "adapter_files": {op: sep["files"][f"{op}.onnx_adapter"]["bytes"] for op in OPS},
                       "separate_over_base": sep_bytes / base_bytes, "merged_over_base": mer_bytes / base_bytes,
                       "separate_fp16_3ops": sep16_bytes, "separate_fp16_over_base": sep16_bytes / base_bytes,
                       "adapter_files_fp16": {op: sep16["files"][f"{op}.onnx_adapter"]["bytes"] for op in OPS}},
           "decode_separate_over_merged": {op: res[f"separate {op}"]["decode_tok_s"] / res[f"merged {op}"]["decode_tok_s"]
                                           for op in OPS},
           "decode_separate_fp16_over_merged": {
               op: res[f"separate fp16 LoRA {op}"]["decode_tok_s"] / res[f"merged {op}"]["decode_tok_s"] for op in OPS},
           "fidelity": {} if not fid else {f"separate acc{lvl}": {op: m["ops"][op]["fidelity"] for op in OPS}
                                          for lvl, m in ((4, sep), (1, sep1))}
           | {"merged acc4": {op: mer["ops"][op]["fidelity"] for op in OPS},
              "separate fp16 LoRA acc4": {op: sep16["ops"][op]["fidelity"] for op in OPS}}}
    print_table("separate vs merged (int4, accuracy_level 4)", [
        [op, res[f"separate {op}"]["decode_tok_s"], res[f"separate fp16 LoRA {op}"]["decode_tok_s"],
         res[f"merged {op}"]["decode_tok_s"], out["decode_separate_over_merged"][op],
         out["decode_separate_fp16_over_merged"][op]] for op in OPS],
        ["op", "separate decode tok/s", "separate fp16 LoRA", "merged decode tok/s", "separate / merged",
         "fp16 LoRA / merged"])
    print_table("adapter switch and storage", [
        ["adapter switch (set_active_adapter on the op's fresh generator), median ms", out["adapter_switch_ms_median"]],
        ["adapter switch, max of 30 ms", out["adapter_switch_ms_max"]],
        ["fresh generator per op (separate), median ms", out["fresh_generator_ms_median"]],
        ["fresh generator per op (merged), median ms", out["merged_fresh_generator_ms_median"]],
        ["storage separate (3 ops) / one base", out["storage"]["separate_over_base"]],
        ["storage separate, fp16 LoRA (3 ops) / one base", out["storage"]["separate_fp16_over_base"]],
        ["storage merged (3 ops) / one base", out["storage"]["merged_over_base"]],
        ["one base MiB", base_bytes / 2**20], ["separate 3 ops MiB", sep_bytes / 2**20]], ["figure", "value"])
    print_table("int4 fidelity vs PyTorch + PEFT (64 greedy tokens, teacher-forced)", [
        [k, op, f["token_agreement"], f["max_abs_logit_diff"]] for k, v in out["fidelity"].items() for op, f in v.items()],
        ["bundle", "op", "token agreement", "max |dlogit|"])
    return out


def stage_int8(a, ctx) -> dict[str, Any]:
    from exporter.spec import QuantSpec, choices

    work, res_f = ctx["work"], {}
    variants = choices(QuantSpec, "int8_variant")
    for variant in variants:  # quant.int8_variant, one export each
        m = export(a.base, work / f"int8_{variant}", quant="int8", fidelity=True, seq=a.max_length,
                   int8_variant=variant)
        res_f[variant] = m
    fp32 = export(a.base, work / "ours_fp32", quant="fp32", seq=a.max_length)
    cases = [OgCase(f"int8 {v}", work / f"int8_{v}", "base.onnx", a.threads, a.max_length) for v in variants]
    cases.append(OgCase("fp32", work / "ours_fp32", "base.onnx", a.threads, a.max_length))
    cases.append(OgCase("int4", work / "ours_int4", "base.onnx", a.threads, a.max_length))
    res = measure(cases, ctx["prompt"], a.decode, a.rounds)
    out = {"cases": res, "bytes": {v: sum(e["bytes"] for f, e in m["files"].items() if f.startswith("base.onnx"))
                                   for v, m in res_f.items()} | {"fp32": sum(e["bytes"] for f, e in fp32["files"].items()
                                                                            if f.startswith("base.onnx"))},
           "fidelity": {v: {op: m["ops"][op]["fidelity"] for op in OPS} for v, m in res_f.items()}}
    print_table("int8 variants (strategy none)", [
        [k, v["prefill_tok_s"], v["decode_tok_s"], out["bytes"].get(k.split(" ")[-1], float("nan")) / 2**20,
         statistics.mean(f["token_agreement"] for f in out["fidelity"].get(k.split(" ")[-1], {}).values())
         if k.split(" ")[-1] in out["fidelity"] else "-"]
        for k, v in res.items()], ["graph", "prefill tok/s", "decode tok/s", "MiB", "token agreement (mean of 3 ops)"])
    return out


def dynamo_export(hf_dir: Path, out: Path) -> Path:
    """torch.onnx.export(dynamo=True) of the HF model with the KV cache as explicit inputs / outputs."""
    path = out / "model.onnx"
    if path.exists():
        return path
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    cfg = model.config
    n, kvh = cfg.num_hidden_layers, cfg.num_key_value_heads
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads

    class KV(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, position_ids, *past):
            cache = DynamicCache(config=cfg)
            for i in range(n):
                cache.update(past[2 * i], past[2 * i + 1], i)
            past_len = past[0].shape[2]
            mask = torch.ones(1, past_len + input_ids.shape[1], dtype=torch.long)
            o = self.m(input_ids=input_ids, position_ids=position_ids, attention_mask=mask, past_key_values=cache,
                       use_cache=True)
            kv = []
            for i in range(n):
                layer = o.past_key_values.layers[i]
                kv += [layer.keys, layer.values]
            return (o.logits, *kv)

    seq, past = torch.export.Dim("seq", min=1, max=2048), torch.export.Dim("past", min=0, max=2048)
    ids = torch.zeros(1, 4, dtype=torch.long)
    pos = torch.arange(4)[None]
    kv = [torch.zeros(1, kvh, 3, hd) for _ in range(2 * n)]
    names = ["input_ids", "position_ids"] + [f"past_{t}_{i}" for i in range(n) for t in ("key", "value")]
    dyn = {"input_ids": {1: seq}, "position_ids": {1: seq}} | {k: {2: past} for k in names[2:]}
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    prog = torch.onnx.export(KV(model), (ids, pos, *kv), dynamo=True, input_names=names,
                             output_names=["logits"] + [f"present_{t}_{i}" for i in range(n) for t in ("key", "value")],
                             dynamic_shapes=(dyn["input_ids"], dyn["position_ids"], tuple(dyn[k] for k in names[2:])),
                             optimize=True)
    prog.save(str(path), external_data=True)
    log(f"dynamo export in {time.perf_counter() - t0:.0f} s")
    return path


def stage_dynamo(a, ctx) -> dict[str, Any]:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(ctx["hf_dir"])
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    path = dynamo_export(ctx["hf_dir"], ctx["work"] / "dynamo_fp32")
    builder32 = builder_untouched(ctx["hf_dir"], ctx["work"] / "builder_fp32", "fp32")
    builder4 = builder_untouched(ctx["hf_dir"], ctx["work"] / "builder_int4", "int4")
    q8 = ctx["work"] / "dynamo_int8" / "model.onnx"
    if not q8.exists():
        q8.parent.mkdir(parents=True, exist_ok=True)
        quantize_dynamic(path, q8, op_types_to_quantize=["MatMul"], per_channel=True, weight_type=QuantType.QInt8,
                         use_external_data_format=True)
    ops = {}
    for label, p in (("dynamo fp32", path), ("builder fp32", builder32 / "model.onnx")):
        g = onnx.load(str(p), load_external_data=False)
        ops[label] = len(g.graph.node)
    cases = [OrtKvCase("dynamo fp32", path, a.threads, cfg.num_hidden_layers, cfg.num_key_value_heads, hd),
             OrtKvCase("dynamo int8 (quantize_dynamic)", q8, a.threads, cfg.num_hidden_layers, cfg.num_key_value_heads, hd),
             OgCase("builder fp32", builder32, None, a.threads, a.max_length),
             OgCase("builder int4", builder4, None, a.threads, a.max_length)]
    # Sanity: the dynamo graph computes the same model (prompt logits vs the builder's fp32 graph).
    ref = cases[2]
    import onnxruntime_genai as og

    p = og.GeneratorParams(ref.model)
    p.set_search_options(max_length=a.max_length)
    g = og.Generator(ref.model, p)
    g.append_tokens(np.asarray(ctx["prompt"], dtype=np.int32))
    empty = np.zeros((1, cfg.num_key_value_heads, 0, hd), np.float32)
    dyn_logits, _ = cases[0]._step(ctx["prompt"], [empty] * (2 * cfg.num_hidden_layers), 0)
    max_diff = float(np.abs(np.asarray(g.get_logits()).reshape(-1) - dyn_logits).max())
    log(f"dynamo fp32 vs builder fp32 prompt logits: max |diff| {max_diff:.2e}")
    res = measure(cases, ctx["prompt"], a.decode, a.rounds)
    out = {"cases": res, "nodes": ops, "dynamo_vs_builder_fp32_max_abs_logit_diff": max_diff,
           "builder_fp32_over_dynamo_fp32": res["builder fp32"]["decode_tok_s"] / res["dynamo fp32"]["decode_tok_s"],
           "builder_int4_over_dynamo_fp32": res["builder int4"]["decode_tok_s"] / res["dynamo fp32"]["decode_tok_s"]}
    print_table("plain torch.onnx dynamo export vs the builder's graph", [
        [k, v["prefill_tok_s"], v["decode_tok_s"]] for k, v in res.items()] + [
        ["builder fp32 / dynamo fp32 (decode)", "", out["builder_fp32_over_dynamo_fp32"]],
        ["builder int4 / dynamo fp32 (decode)", "", out["builder_int4_over_dynamo_fp32"]]],
        ["graph", "prefill tok/s", "decode tok/s"])
    return out


def plot(results: dict[str, Any], path: Path) -> None:
    """One panel per stage: only bars within a panel were measured together (interleaved rounds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s in ("int4", "separate", "int8", "dynamo") if (results.get(s) or {}).get("cases")]
    if not stages:
        return
    heights = [len(results[s]["cases"]) for s in stages]
    fig, axes = plt.subplots(len(stages), 1, figsize=(9, 0.38 * sum(heights) + 1.3 * len(stages)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, stage in zip(axes[:, 0], stages):
        cases = results[stage]["cases"]
        labels, vals = list(cases)[::-1], [cases[k]["decode_tok_s"] for k in cases][::-1]
        ax.barh(labels, vals, color="#4c72b0")
        for y, v in enumerate(vals):
            ax.text(v, y, f" {v:.1f}", va="center", fontsize=8)
        ax.set_title(f"stage {stage}", fontsize=10, loc="left")
        ax.set_xlim(0, max(vals) * 1.15)
    axes[-1, 0].set_xlabel("decode tok/s (greedy, CPU; compare bars within a panel only)")
    fig.suptitle("ONNX backend on " + results["meta"]["base"])
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="smollm2-135m")
    p.add_argument("--work", default="/tmp/memlora-onnx-bench")
    p.add_argument("--stages", default="int4,separate,int8,dynamo")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--decode", type=int, default=64, help="greedy tokens decoded per run")
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--rank", type=int, default=16, help="random adapters' LoRA rank (memlora-train's default)")
    p.add_argument("--targets", default=",".join(ALL_LINEAR), help="random adapters' target modules")
    p.add_argument("--adapter", action="append", default=[], metavar="OP=DIR", help="use trained adapters instead")
    p.add_argument("--no-fidelity", action="store_true", help="separate stage: timing and storage only")
    a = p.parse_args()
    os.environ.setdefault("MEMLORA_CACHE", str(Path.home() / ".cache" / "memlora"))
    import logging

    logging.basicConfig(level=logging.WARNING)  # onnxruntime.quantization logs every node at INFO on the root logger
    from exporter.load import resolve_base
    from runtimes import prompts

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    hf_dir = resolve_base(a.base)[1]
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    from transformers import AutoTokenizer

    text = AutoTokenizer.from_pretrained(hf_dir).apply_chat_template(
        prompts.render("memlora.update.v1", **prompts.SAMPLE_FIELDS["memlora.update.v1"]), tokenize=False,
        add_generation_prompt=True)
    prompt = tok.encode(text, add_special_tokens=False).ids
    if a.adapter:
        adapters = {k: Path(v) for k, v in (x.split("=", 1) for x in a.adapter)}
    else:
        adapters = make_adapters(hf_dir, work, a.rank, tuple(a.targets.split(",")), 0.02)
    ctx = {"work": work, "hf_dir": hf_dir, "prompt": prompt, "adapters": adapters}
    results_path = work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    import onnxruntime
    import onnxruntime_genai

    results["meta"] = {"base": a.base, "threads": a.threads, "rounds": a.rounds, "decode_tokens": a.decode,
                       "prompt_tokens": len(prompt), "max_length": a.max_length, "cpus": os.cpu_count(),
                       "loadavg_start": os.getloadavg(), "onnxruntime": onnxruntime.__version__,
                       "onnxruntime_genai": onnxruntime_genai.__version__,
                       "adapters": "trained: " + ", ".join(f"{k}={v}" for k, v in adapters.items()) if a.adapter
                       else f"random rank {a.rank}, alpha {2 * a.rank}, {a.targets}"}
    stages: dict[str, Callable] = {"int4": stage_int4, "separate": stage_separate, "int8": stage_int8,
                                   "dynamo": stage_dynamo}
    for name in a.stages.split(","):
        log(f"stage {name}")
        results[name] = stages[name](a, ctx)
        results["meta"]["loadavg_end"] = os.getloadavg()
        results_path.write_text(json.dumps(results, indent=2, default=float))
    plot(results, work / "onnx_bench.png")
    log(f"results: {results_path}, plot: {work / 'onnx_bench.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
