"""The profile report: one JSON document (schema `memlora.profile`, version below; fields documented in
docs/profiler.md and in SCHEMA_DOC) and its human form, report.md with PNG plots. Both are written to a temp
directory and renamed into place, so a failed run never leaves a half-written report."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

from runtimes.outdir import OutputDir, json_file_has

SCHEMA = "memlora.profile"
SCHEMA_VERSION = 1
METRICS = ("e2e_ms", "ttft_ms", "prefill_ms", "decode_ms", "prefill_tok_s", "decode_tok_s")
AGREEMENT = 0.10  # repeated profiles should agree within 10% on the median
PROJECTION_LABEL = "PROJECTION (roofline model from spec-sheet figures) - not a measurement"

SCHEMA_DOC = {
    "schema / schema_version": "'memlora.profile' / 1. A reader rejects another schema and a newer major version.",
    "tool, created_utc": "memlora version that wrote it; UTC time.",
    "bundle": "path, model, strategy, quantization, format, manifest sha256, per-op program/data files and "
              "bytes_on_disk (program + data files + tokenizer the op needs), total_bytes (each file once).",
    "target": "kind ('host' | 'adb'), profile (device profile name or null), serial (adb), device (profile or "
              "adb description).",
    "host": "(host kind) cpu, cpu_count, threads used, threads_capped, machine = measured copy bandwidth (GB/s, "
            "read+write bytes, 1 and N threads) and int8 GEMM GOPS at the start and the end of the run.",
    "settings": "warmup, repeats, samples, rounds, k, window, seed, data path + sha256, new_tokens per op, "
                "stop_tokens ('ignored': fixed output length).",
    "ops.<op>": "new_tokens, bytes_on_disk, workload (sample ids + prompt tokens), load_ms and rss_mb per round, "
                "runs (raw per-run figures), summary (per metric: median, p10, p90, min, max, n, cv), "
                "rounds (per-round medians), agreement (max relative difference of round medians, within_10pct), "
                "roofline_host (bounds at the measured host bandwidth/compute and the fraction reached).",
    "cycle": "the full memory cycle (extract -> update -> generate for one user message): total_ms summary, "
             "per-op ms, load_ms per op, switch (between ops held by separate programs: resident_ms = extra "
             "latency of the first forward after another op, cold_load_ms = loading the op's program with the "
             "shared data already loaded), rss_mb with every op resident.",
    "vision": "(bundles with a vision op) the vision op on 4 fixed drawn images: load_ms, visual_tokens, "
              "prompt_tokens, new_tokens (fixed), runs, summary of encode_ms (vision_encoder), prefill_ms (every "
              "prompt part incl. the visual tokens), ttft_ms, prefill_tok_s, decode_tok_s; rss_mb.",
    "breakdown.<op>": "ExecuTorch ETDump of one run: execute_ms (sum of Method::execute), outside_execute_ms "
                      "(Python loop, sampling, detokenizing), delegate_ms (XNNPACK), kernels_ms (time per kernel "
                      "/ XNNPACK operator kind).",
    "projections.<profile>": "label (always PROJECTION), device (profile figures with sources), ops.<op>.roofline "
                             "(upper bounds) and .at_host_efficiency (bounds x the fraction of the host roofline "
                             "this bundle reached), cycle_ms.",
    "agreement": "within_10pct over every op and metric checked, and the notes saying where not.",
    "notes": "free-text caveats (threads capped, stop tokens ignored, ...).",
}


# ------------------------------------------------------------------------------------------------- statistics
def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method), q in [0, 100]."""
    v = sorted(values)
    if not v:
        return float("nan")
    pos = (len(v) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def summarize(values: Sequence[float]) -> dict[str, float]:
    v = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    if not v:
        return {"n": 0}
    mean = sum(v) / len(v)
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return {"median": percentile(v, 50), "p10": percentile(v, 10), "p90": percentile(v, 90), "min": min(v),
            "max": max(v), "n": len(v), "cv": sd / mean if mean else 0.0}


def summarize_runs(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    return {m: summarize([r[m] for r in runs if m in r]) for m in METRICS}


def agreement(round_medians: Sequence[float]) -> dict[str, Any]:
    """Max relative difference between the rounds' medians (relative to the smallest)."""
    v = [x for x in round_medians if x and not math.isnan(x)]
    if len(v) < 2:
        return {"rounds": len(v), "max_rel_diff": None, "within_10pct": None}
    d = (max(v) - min(v)) / min(v)
    return {"rounds": len(v), "max_rel_diff": d, "within_10pct": d <= AGREEMENT}


def compare_with_baseline(current: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """Median e2e / decode / prefill of each op against an earlier report of the same bundle."""
    if baseline.get("schema") != SCHEMA:
        return {"error": "baseline is not a memlora.profile report"}
    out: dict[str, Any] = {"baseline_created_utc": baseline.get("created_utc"), "ops": {}, "within_10pct": True}
    for op, cur in current.get("ops", {}).items():
        old = baseline.get("ops", {}).get(op)
        if not old:
            continue
        row = {}
        for m in ("e2e_ms", "prefill_tok_s", "decode_tok_s"):
            a, b = cur["summary"][m].get("median"), old["summary"][m].get("median")
            if a and b:
                row[m] = (a - b) / b
                out["within_10pct"] &= abs(row[m]) <= AGREEMENT
        out["ops"][op] = row
    return out


# ------------------------------------------------------------------------------------------------- writing
def is_report(path: Path) -> bool:
    """An earlier memlora-profile report directory (what --force may replace)."""
    return json_file_has(path / "report.json", lambda r: r.get("schema") == SCHEMA)


def output(out_dir: str | Path, force: bool = False, inputs: Iterable[str | Path] = ()) -> OutputDir:
    """The report directory, checked now (before any profiling) and written atomically by `write`."""
    od = OutputDir(out_dir, force=force, owned=is_report, kind="memlora-profile report", inputs=inputs)
    od.check()
    return od


def write(report: dict[str, Any], out: OutputDir | str | Path, plots: bool = True) -> Path:
    """report.json + report.md (+ PNG plots) into the report directory, atomically (temp dir, then a no-replace
    rename; an existing directory is replaced only when it is an earlier report and `--force` was given)."""
    od = out if isinstance(out, OutputDir) else output(out)
    with od as tmp:
        images = render_plots(report, tmp) if plots else []
        (tmp / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=_json_default) + "\n")
        (tmp / "report.md").write_text(markdown(report, images))
        return od.commit()


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _f(x: Any, nd: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, (int, float)) and abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{nd}f}"


def _mb(b: float) -> str:
    return f"{b / 2**20:.1f} MiB"


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    h = list(header)
    lines = ["| " + " | ".join(h) + " |", "|" + "|".join("---" for _ in h) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def markdown(r: dict[str, Any], images: Sequence[str] = ()) -> str:
    b, t, s = r["bundle"], r["target"], r["settings"]
    md = [f"# memlora profile: {Path(b['path']).name}\n",
          f"- bundle: `{b['path']}` — model {b['model']}, strategy {b['strategy']}, quantization {b['quantization']}, "
          f"format {b['format']}, {_mb(b['total_bytes'])} on disk",
          f"- target: {t['kind']}" + (f" constrained like **{t['profile']}**" if t.get("profile") else "")
          + (f" (serial {t['serial']})" if t.get("serial") else ""),
          f"- created {r['created_utc']} by {r['tool']['name']} {r['tool']['version']}; schema {r['schema']} "
          f"v{r['schema_version']}"]
    h = r.get("host")
    if h:
        m0 = h["machine"]["start"]
        md.append(f"- host: {h['cpu']} ({h['cpu_count']} cores), **{h['threads']} threads**"
                  + (" (the profile asks for more: capped at this host's cores)" if h.get("threads_capped") else "")
                  + f"; measured memory bandwidth {_f(h['bandwidth_gbs'])} GB/s (numpy copy, {h['threads']} threads,"
                    f" read+write bytes; 1 thread: {_f(m0['copy_gbs_1t'])} GB/s), int8 GEMM "
                    f"{_f(m0.get('int8_gemm_gops'))} GOPS (torch._int_mm)")
    md.append(f"- workload: LoCoMo-shaped ({s['samples']} samples per op, window {s['window']} turns, k = {s['k']} "
              f"memories, seed {s['seed']}); {s['warmup']} warm-up run(s), {s['repeats']} repeat(s) per sample, "
              f"{s['rounds']} round(s) in separate processes; output length fixed per op "
              f"({', '.join(f'{k} {v}' for k, v in s['new_tokens'].items())} tokens), stop tokens {s['stop_tokens']}.\n")

    md.append("## Measured per operation\n")
    rows = []
    for op, o in r["ops"].items():
        sm = o["summary"]
        p = [w["prompt_tokens"] for w in o["workload"] if w.get("prompt_tokens")]
        rows.append([op, f"{min(p)}-{max(p)}" if p else "-", o["new_tokens"], _f(o["load_ms"].get("median")),
                     f"{_f(sm['ttft_ms'].get('median'))} / {_f(sm['ttft_ms'].get('p90'))}",
                     f"{_f(sm['prefill_tok_s'].get('median'))} / {_f(sm['prefill_tok_s'].get('p10'))}",
                     f"{_f(sm['decode_tok_s'].get('median'))} / {_f(sm['decode_tok_s'].get('p10'))}",
                     f"{_f(sm['e2e_ms'].get('median'))} / {_f(sm['e2e_ms'].get('p90'))}",
                     f"{_f(sm['e2e_ms'].get('min'))}-{_f(sm['e2e_ms'].get('max'))} (cv {_f(100 * sm['e2e_ms'].get('cv', 0))}%)",
                     _f(o["rss_mb"].get("peak")), _mb(o["bytes_on_disk"])])
    md.append(_table(["op", "prompt tok", "new tok", "load ms", "TTFT ms med/p90", "prefill tok/s med/p10",
                      "decode tok/s med/p10", "op latency ms med/p90", "spread min-max", "peak RSS MiB",
                      "on disk"], rows))
    md.append("Peak RSS is the op's own process (interpreter and libraries included: "
              + ", ".join(f"{op} {_f(o['rss_mb'].get('interpreter'))} MiB before loading" for op, o in r["ops"].items())
              + "). On disk counts the op's program, its data files and the tokenizer.\n")

    v = r.get("vision")
    if v:
        sm = v["summary"]
        md.append("## Vision op (image + question -> answer)\n")
        md.append(f"- image encode **{_f(sm['encode_ms']['median'])} ms** median, prefill of {v['prompt_tokens']} "
                  f"tokens ({v['visual_tokens']} visual) {_f(sm['prefill_ms']['median'])} ms "
                  f"({_f(sm['prefill_tok_s']['median'])} tok/s), TTFT {_f(sm['ttft_ms']['median'])} ms, decode "
                  f"{_f(sm['decode_tok_s']['median'])} tok/s over {v['new_tokens']} tokens; load "
                  f"{_f(v['load_ms'])} ms, peak RSS {_f(v['rss_mb']['peak'])} MiB.\n")

    c = r.get("cycle")
    if c:
        md.append("## Full memory cycle (extract -> update -> generate, one user message)\n")
        tot = c["total_ms"]
        md.append(f"- **{_f(tot.get('median'))} ms** median (p90 {_f(tot.get('p90'))}, {tot.get('n')} cycles), "
                  + ", ".join(f"{op} {_f(v.get('median'))} ms" for op, v in c["ops_ms"].items())
                  + f"; RSS with every op resident {_f(c['rss_mb'].get('all_resident'))} MiB.")
        if c["switch"]:
            md.append("- switching between ops (separate programs over one shared foundation): "
                      + "; ".join(f"{w['from']} -> {w['to']}: {_f(w['resident_ms'], 2)} ms when both are resident, "
                                  f"{_f(w['cold_load_ms'])} ms to load {w['to']} on demand" for w in c["switch"]))
        else:
            md.append("- switching between ops: none — every op runs the same program (strategy "
                      f"{b['strategy']}).")
        sw = {op: o["adapter_switch_ms"] for op, o in r["ops"].items() if o.get("adapter_switch_ms")}
        if sw:
            md.append("- adapter activation per op run (ONNX Runtime GenAI set_active_adapter on a fresh generator): "
                      + ", ".join(f"{op} {_f(v.get('median'), 2)} ms" for op, v in sw.items()))
        md.append("")

    bd = r.get("breakdown")
    if bd:
        md.append("## Where the time goes (ExecuTorch ETDump, one run per op)\n")
        rows = []
        for op, e in bd.items():
            if "error" in e:
                rows.append([op, "-", "-", "-", "-", "-", e["error"]])
                continue
            for phase in ("prefill", "decode"):
                ph = e[phase]
                wall = ph["wall_ms"] or float("nan")
                top = list(ph["kernels_ms"].items())[:4]
                rows.append([op, phase + (f" ({e['run']['new_tokens'] - 1} steps)" if phase == "decode" else
                                          f" ({e['run']['prompt_tokens']} tok)"), _f(ph["wall_ms"]),
                             f"{_f(ph['delegate_ms'])} ({_f(100 * ph['delegate_ms'] / wall)}%)",
                             f"{_f(ph['portable_ops_ms'])} ({_f(100 * ph['portable_ops_ms'] / wall)}%)",
                             f"{_f(ph['outside_execute_ms'])} ({_f(100 * ph['outside_execute_ms'] / wall)}%)",
                             ", ".join(f"{k} {_f(v)}" for k, v in top)])
        md.append(_table(["op", "phase", "ms", "XNNPACK delegate ms", "other kernels ms (custom/portable)",
                          "outside Method::execute ms", "top kernels (ms)"], rows))
        md.append("Other kernels = operators ExecuTorch runs outside the XNNPACK delegate (llama::custom_sdpa "
                  "attention, llama::update_cache, the int8 embedding gather, copies). Outside Method::execute = the "
                  "Python decode loop (sampling, detokenizing, tensor creation). Measured in a separate run with "
                  "the event tracer on, which adds a little overhead per operator.\n")

    pr = r.get("projections")
    if pr:
        md.append(f"## Phone projections — {PROJECTION_LABEL}\n")
        rows = []
        for name, p in pr.items():
            d = p["device"]
            for op, o in p["ops"].items():
                meas = r["ops"][op]["summary"]
                rows.append([f"{name} ({d['tier']}, {d['threads']} thr)", op,
                             f"{_f(meas['decode_tok_s'].get('median'))}",
                             f"{_f(o['roofline']['decode_tok_s'])} / {_f(o['at_host_efficiency']['decode_tok_s'])}",
                             f"{_f(meas['prefill_tok_s'].get('median'))}",
                             f"{_f(o['roofline']['prefill_tok_s'])} / {_f(o['at_host_efficiency']['prefill_tok_s'])}",
                             f"{_f(meas['e2e_ms'].get('median'))}",
                             f"{_f(o['roofline']['e2e_ms'])} / {_f(o['at_host_efficiency']['e2e_ms'])}"])
            rows.append([f"{name}", "**cycle**", "", "", "", "", _f(r.get("cycle", {}).get("total_ms", {}).get("median")),
                         f"{_f(p['cycle_ms']['roofline'])} / {_f(p['cycle_ms']['at_host_efficiency'])}"])
        md.append(_table(["device (projection)", "op", "host decode tok/s (measured)",
                          "decode tok/s bound / at host eff. (projection)", "host prefill tok/s (measured)",
                          "prefill tok/s bound / at host eff. (projection)", "host op ms (measured)",
                          "op ms bound / at host eff. (projection)"], rows))
        md.append("Memory: the largest op's peak RSS here is "
                  + ", ".join(f"{100 * p.get('peak_rss_fraction_of_ram', 0):.1f}% of {n}'s RAM" for n, p in pr.items())
                  + " (host process RSS, interpreter included).\n")
        md.append("Bound = roofline upper bound (decode: bytes per token / DRAM bandwidth; prefill: int8 ops per token "
                  "/ CPU int8 peak of the profile's cores). At host eff. = bound x the fraction of this host's own "
                  "measured roofline the bundle reached here. Device figures and their sources: "
                  "runtimes/profiler/devices.py.\n")
        rows = []
        for op, o in r["ops"].items():
            rh = o.get("roofline_host")
            if rh:
                rows.append([op, _f(rh["decode_bound_tok_s"]), f"{_f(100 * rh['decode_fraction'])}%",
                             _f(rh["prefill_bound_tok_s"]), f"{_f(100 * rh['prefill_fraction'])}%"])
        if rows:
            md.append("Host roofline reached (measured tok/s over the bound at this host's measured bandwidth / "
                      "int8 GEMM rate):\n")
            md.append(_table(["op", "decode bound tok/s", "decode reached", "prefill bound tok/s", "prefill reached"],
                             rows))

    ag = r.get("agreement", {})
    md.append("## Repeatability\n")
    if ag.get("within_10pct") is None:
        md.append("- one round only: run with `--rounds 2` (the default) to check that repeated profiles agree.")
    elif ag["within_10pct"]:
        md.append(f"- the rounds agree within {AGREEMENT:.0%} on every median checked.")
    else:
        md.append(f"- **the rounds do NOT agree within {AGREEMENT:.0%}**: " + "; ".join(ag.get("notes", [])))
    if r.get("baseline"):
        bl = r["baseline"]
        md.append(f"- against the baseline report ({bl.get('baseline_created_utc')}): "
                  + ("within 10% on every op." if bl.get("within_10pct") else "**differs by more than 10%**: ")
                  + "; ".join(f"{op} " + ", ".join(f"{m} {100 * v:+.1f}%" for m, v in row.items())
                              for op, row in bl.get("ops", {}).items()))
    if r.get("notes"):
        md.append("\n## Notes\n")
        md.extend(f"- {n}" for n in r["notes"])
    if images:
        md.append("\n## Plots\n")
        md.extend(f"![{Path(i).stem}]({i})\n" for i in images)
    return "\n".join(md) + "\n"


def render_plots(r: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    ops = list(r["ops"])
    # 1. per-op latency: TTFT + decode stacked, p10-p90 whiskers on the total; the memory cycle beside them
    fig, ax = plt.subplots(figsize=(7, 4))
    ttft = [r["ops"][o]["summary"]["ttft_ms"].get("median", 0) for o in ops]
    e2e = [r["ops"][o]["summary"]["e2e_ms"] for o in ops]
    med = [e.get("median", 0) for e in e2e]
    ax.bar(ops, ttft, label="time to first token (prefill)", color="#4c72b0")
    ax.bar(ops, [m - t for m, t in zip(med, ttft)], bottom=ttft, label="decode", color="#dd8452")
    ax.errorbar(ops, med, yerr=[[m - e.get("p10", m) for m, e in zip(med, e2e)],
                                [e.get("p90", m) - m for m, e in zip(med, e2e)]], fmt="none", color="k", capsize=4,
                label="p10-p90")
    if r.get("cycle"):
        ct = r["cycle"]["total_ms"]
        ax.bar(["full cycle"], [ct.get("median", 0)], color="#55a868", label="extract->update->generate")
    ax.set_ylabel("ms (median)")
    ax.set_title(f"Op latency — {r['target']['kind']}" + (f" as {r['target']['profile']}" if r['target'].get('profile') else ""))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)
    files.append("latency.png")
    # 2. tok/s vs prompt length, every run
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for o in ops:
        runs = r["ops"][o]["runs"]
        axes[0].scatter([x["prompt_tokens"] for x in runs], [x["prefill_tok_s"] for x in runs], label=o, s=18)
        axes[1].scatter([x["prompt_tokens"] for x in runs], [x["decode_tok_s"] for x in runs], label=o, s=18)
    axes[0].set(xlabel="prompt tokens", ylabel="prefill tok/s", title="prefill")
    axes[1].set(xlabel="prompt tokens", ylabel="decode tok/s", title="decode")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "toks_vs_prompt.png", dpi=110)
    plt.close(fig)
    files.append("toks_vs_prompt.png")
    # 3. size per strategy: this bundle and any --also bundles, split by file role
    sizes = r.get("sizes", [])
    if sizes:
        fig, ax = plt.subplots(figsize=(7, 0.6 + 0.5 * len(sizes)))
        labels = [s["label"] for s in sizes]
        left = [0.0] * len(sizes)
        for role, color in (("programs", "#4c72b0"), ("shared_data", "#dd8452"), ("tokenizer", "#8c8c8c")):
            vals = [s[role] / 2**20 for s in sizes]
            ax.barh(labels, vals, left=left, label=role.replace("_", " "), color=color)
            left = [a + b for a, b in zip(left, vals)]
        ax.set_xlabel("MiB on disk")
        ax.set_title("Bundle size per strategy")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "size.png", dpi=110)
        plt.close(fig)
        files.append("size.png")
    # 4. projection vs measured op latency
    pr = r.get("projections")
    if pr:
        fig, ax = plt.subplots(figsize=(8, 4))
        names = list(pr)
        width = 0.8 / (1 + 2 * len(names))
        xs = range(len(ops))
        ax.bar([x for x in xs], [r["ops"][o]["summary"]["e2e_ms"].get("median", 0) for o in ops], width,
               label="host (measured)", color="k")
        for i, n in enumerate(names):
            for j, kind in enumerate(("at_host_efficiency", "roofline")):
                ax.bar([x + width * (1 + 2 * i + j) for x in xs], [pr[n]["ops"][o][kind]["e2e_ms"] for o in ops],
                       width, label=f"{n} {'projection' if j == 0 else 'roofline bound'}", alpha=1.0 - 0.45 * j,
                       color=f"C{i}")
        ax.set_xticks([x + 0.4 - width / 2 for x in xs], ops)
        ax.set_yscale("log")
        ax.set_ylabel("op latency ms (log)")
        ax.set_title("PROJECTION for phones vs measured host")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "projection.png", dpi=110)
        plt.close(fig)
        files.append("projection.png")
    return files
