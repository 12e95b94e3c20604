"""Host measurements. Each op is measured in a fresh subprocess (`python -m runtimes.profiler.host`, a JSON job on
stdin, a JSON result on stdout) so one op's peak RSS, load time and caches do not leak into another's.

Jobs:
- "machine": this host's memory bandwidth (numpy copy of 256 MiB buffers: bytes read + bytes written over the best
  time, 1 thread and N threads each copying a slice) and int8 GEMM throughput (torch._int_mm, N threads).
- "op": load the op's program, warm up, then run every work item `repeats` times with stop tokens ignored and a
  fixed output length; per-run stats from runtimes.base.Stats plus wall time; peak RSS.
- "cycle": load every op, then run extract -> update -> generate for one user message `repeats` times (the full
  memory cycle); switch cost between ops held by separate programs; RSS with all ops resident.
- "breakdown": one run per op with ExecuTorch's ETDump event tracer on: where the time goes, by operator /
  delegate call, and how much is spent outside `Method::execute` (the Python decode loop).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from . import ProfileError

ROOT = Path(__file__).resolve().parents[2]
TICK = "@@memlora-profile-tick"


# ----------------------------------------------------------------------------------------------- child side
def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _tick() -> None:
    print(TICK, file=sys.stderr, flush=True)


def set_threads(n: int) -> dict[str, Any]:
    """Pin every thread pool the runtimes use to `n` threads; returns what each pool reports back."""
    import torch

    torch.set_num_threads(n)
    got: dict[str, Any] = {"torch": torch.get_num_threads()}
    try:  # ExecuTorch's CPU threadpool (XNNPACK and the optimized kernels run on it)
        from executorch.extension.pybindings import portable_lib

        portable_lib._unsafe_reset_threadpool(n)
        got["executorch"] = portable_lib._threadpool_get_thread_count()
    except ImportError:
        pass
    return got


def open_runtime(bundle: str, threads: int, backend: str = "executorch", etdump: bool = False) -> Any:
    from runtimes.factory import runtime_for
    from runtimes.manifest import load_manifest

    manifest = load_manifest(bundle, verify=False)  # the parent verified the checksums once
    if etdump and backend != "executorch":
        raise ProfileError(f"the ETDump breakdown needs the executorch backend, not {backend!r}")
    rt = runtime_for(manifest, backend, threads=threads, etdump=etdump)
    for entry in rt.manifest.ops.values():
        entry.stop_token_ids = []  # fixed output length: profiling ignores stop tokens
    return rt


def _run(rt: Any, op: str, item: dict[str, Any], new_tokens: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    g = rt.generate(op, messages=item["messages"], max_new_tokens=new_tokens, temperature=0.0)
    wall = (time.perf_counter() - t0) * 1e3
    s = g.stats
    run = {"sample_id": item["sample_id"], "prompt_tokens": s.prompt_tokens, "new_tokens": len(g.tokens),
           "ttft_ms": s.ttft_ms, "prefill_ms": s.prefill_ms, "decode_ms": s.decode_ms,
           "prefill_tok_s": s.prefill_tok_s, "decode_tok_s": s.decode_tok_s, "e2e_ms": wall}
    if getattr(s, "adapter_switch_ms", 0.0):  # ONNX separate adapters: set_active_adapter on a fresh generator
        run["adapter_switch_ms"] = s.adapter_switch_ms
    return run


def job_machine(job: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    from concurrent.futures import ThreadPoolExecutor

    threads = int(job["threads"])
    n = int(job.get("bytes", 256 * 2**20))
    src = np.ones(n, dtype=np.uint8)
    dst = np.zeros_like(src)

    def bw(workers: int) -> float:
        bounds = [(i * n // workers, (i + 1) * n // workers) for i in range(workers)]
        best = float("inf")
        with ThreadPoolExecutor(workers) as ex:
            for _ in range(5):
                t0 = time.perf_counter()
                list(ex.map(lambda b: np.copyto(dst[b[0]:b[1]], src[b[0]:b[1]]), bounds))
                best = min(best, time.perf_counter() - t0)
        return 2 * n / best / 1e9  # read + write

    out: dict[str, Any] = {"copy_gbs_1t": bw(1), "copy_gbs_nt": bw(threads), "threads": threads, "bytes": n}
    del src, dst
    import torch

    torch.set_num_threads(threads)
    m = int(job.get("gemm", 512))
    a = torch.randint(-128, 127, (m, 2048), dtype=torch.int8)
    b = torch.randint(-128, 127, (2048, 2048), dtype=torch.int8)
    try:
        for _ in range(3):  # warm-up: oneDNN builds its kernel on the first calls, the thread pool spins up
            torch._int_mm(a, b)
        best = float("inf")
        for _ in range(8):
            t0 = time.perf_counter()
            torch._int_mm(a, b)
            best = min(best, time.perf_counter() - t0)
        out["int8_gemm_gops"] = 2 * m * 2048 * 2048 / best / 1e9
    except RuntimeError as e:  # no int8 GEMM kernel for this CPU build
        out["int8_gemm_gops"] = None
        out["int8_gemm_error"] = str(e)[:200]
    return out


def job_op(job: dict[str, Any]) -> dict[str, Any]:
    threads = int(job["threads"])
    got = set_threads(threads)
    base_rss, base_peak = _rss_mb(), _peak_rss_mb()
    rt = open_runtime(job["bundle"], threads, job.get("backend", "executorch"))
    op, items, new = job["op"], job["items"], int(job["new_tokens"])
    load_ms = rt.ensure_loaded(op)
    after_load = _rss_mb()
    for _ in range(int(job["warmup"])):
        _run(rt, op, items[0], new)
        _tick()
    runs = []
    for rep in range(int(job["repeats"])):
        for item in items:
            r = _run(rt, op, item, new)
            r["repeat"] = rep
            runs.append(r)
            _tick()
    return {"op": op, "threads": got, "load_ms": load_ms, "runs": runs,
            "rss_mb": {"interpreter": base_rss, "interpreter_peak": base_peak, "after_load": after_load,
                       "peak": _peak_rss_mb()}}


def job_cycle(job: dict[str, Any]) -> dict[str, Any]:
    threads = int(job["threads"])
    got = set_threads(threads)
    base_rss = _rss_mb()
    backend = job.get("backend", "executorch")
    rt = open_runtime(job["bundle"], threads, backend)
    ops: list[str] = job["ops"]
    loads = {}
    for op in ops:  # in cycle order: a later op's load is its cold switch cost (shared data already mapped)
        loads[op] = rt.ensure_loaded(op)
    all_resident = _rss_mb()
    cycles = []
    for rep in range(int(job["warmup"]) + int(job["repeats"])):
        per_op = {}
        t0 = time.perf_counter()
        for op in ops:
            items = job["items"][op]
            per_op[op] = _run(rt, op, items[rep % len(items)], int(job["new_tokens"][op]))["e2e_ms"]
        total = (time.perf_counter() - t0) * 1e3
        _tick()
        if rep >= int(job["warmup"]):
            cycles.append({"total_ms": total, "ops_ms": per_op})
    from .plan import op_files

    programs = {op: "+".join(op_files(rt.manifest, op, backend)) for op in ops}
    switch = []
    tok = rt.encode(prompt="hello")[:1]
    for a, b in zip(ops, ops[1:] + ops[:1]):
        if programs[a] == programs[b]:
            continue
        after_other, after_same = [], []
        for _ in range(7):
            rt.forward(a, tok, 0)
            t0 = time.perf_counter()
            rt.forward(b, tok, 0)
            after_other.append((time.perf_counter() - t0) * 1e3)
            rt.forward(b, tok, 0)
            t0 = time.perf_counter()
            rt.forward(b, tok, 0)
            after_same.append((time.perf_counter() - t0) * 1e3)
        switch.append({"from": a, "to": b, "resident_ms": statistics.median(after_other) - statistics.median(after_same),
                       "cold_load_ms": loads[b]})
    return {"threads": got, "load_ms": loads, "cycles": cycles, "switch": switch, "programs": programs,
            "rss_mb": {"interpreter": base_rss, "all_resident": all_resident, "peak": _peak_rss_mb()}}


# ---- ETDump: ExecuTorch's own event tracer (ExecuTorchRuntime(etdump=True)), read by executorch.devtools.Inspector
def _etdump_events(path: Path, executes: int) -> dict[str, Any]:
    """Per event name, ms in the prefill forward and summed over the decode forwards of the last run, from an
    ETDump file (no ETRecord: names are the kernels' and XNNPACK operators'). Each event's perf_data holds one
    sample per Method::execute; the last `executes` are the run's (1 prefill + new_tokens - 1 decode steps)."""
    from executorch.devtools import Inspector

    insp = Inspector(etdump_path=str(path))
    prefill: dict[str, float] = {}
    decode: dict[str, float] = {}
    seen = 0
    for block in insp.event_blocks:
        for ev in block.events:
            if ev.perf_data is None or not ev.perf_data.raw:
                continue
            raw = [float(x) for x in ev.perf_data.raw]
            if ev.name == "Method::execute":
                seen = max(seen, len(raw))
            if len(raw) < executes:  # an instruction that did not run in every forward: attribute by position
                raw = [0.0] * (executes - len(raw)) + raw
            raw = raw[-executes:]
            prefill[ev.name] = prefill.get(ev.name, 0.0) + raw[0]
            decode[ev.name] = decode.get(ev.name, 0.0) + sum(raw[1:])
    return {"prefill": prefill, "decode": decode, "executes": seen}


def job_breakdown(job: dict[str, Any]) -> dict[str, Any]:
    threads = int(job["threads"])
    set_threads(threads)
    rt = open_runtime(job["bundle"], threads, "executorch", etdump=True)
    out = {}
    for op in job["ops"]:
        rt.ensure_loaded(op)
        item = job["items"][op][0]
        _run(rt, op, item, 2)  # warm
        program = rt.programs[op]
        with tempfile.TemporaryDirectory() as tmp:
            program.write_etdump_result_to_file(str(Path(tmp) / "warm.etdp"), str(Path(tmp) / "warm.bin"))
        r = _run(rt, op, item, int(job["new_tokens"][op]))
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / "run.etdp"
            program.write_etdump_result_to_file(str(p), str(Path(tmp) / "run.bin"))
            try:
                events = _etdump_events(p, executes=r["new_tokens"])
            except Exception as e:  # Inspector raises many types on an empty / partial dump
                out[op] = {"error": f"{type(e).__name__}: {e}"[:300], "run": r}
                continue
        out[op] = {"run": r, "events_ms": events}
        _tick()
    return out


def vision_images() -> list[tuple[Any, str]]:
    """Fixed profiling inputs for the vision op: 64 x 64 images of one filled shape (drawn here, as easy-VQA's are),
    each with a question. Timing does not depend on the answer: every run decodes the same number of tokens."""
    from PIL import Image, ImageDraw

    out = []
    for k, (colour, shape) in enumerate([((220, 40, 40), "circle"), ((40, 90, 220), "rectangle"),
                                         ((40, 170, 60), "triangle"), ((230, 200, 40), "circle")]):
        im = Image.new("RGB", (64, 64), (255, 255, 255))
        d = ImageDraw.Draw(im)
        box = (12 + k, 14, 50, 52 - k)
        if shape == "circle":
            d.ellipse(box, fill=colour)
        elif shape == "rectangle":
            d.rectangle(box, fill=colour)
        else:
            d.polygon([(32, 12), (52, 52), (12, 52)], fill=colour)
        out.append((im, "what color is the shape?" if k % 2 == 0 else f"is there a {shape}?"))
    return out


def job_vision(job: dict[str, Any]) -> dict[str, Any]:
    """The bundle's vision op (runtimes.vision): image encode, prefill with the visual tokens, decode."""
    from ..vision import VisionRunner

    got = set_threads(int(job["threads"]))
    base_rss = _rss_mb()
    t0 = time.perf_counter()
    runner = VisionRunner(job["bundle"], backend=job.get("backend", "executorch"), threads=int(job["threads"]))
    load_ms = 1e3 * (time.perf_counter() - t0)
    after_load = _rss_mb()
    inputs, new = vision_images(), int(job["new_tokens"])
    for _ in range(int(job["warmup"])):
        runner.answer_ids(*inputs[0], max_new_tokens=new, ignore_stop=True)
        _tick()
    runs = []
    for rep in range(int(job["repeats"])):
        for im, q in inputs:
            runner.answer_ids(im, q, max_new_tokens=new, ignore_stop=True)
            st = dict(runner.last_stats, repeat=rep)
            st["ttft_ms"] = st["encode_ms"] + st["prefill_ms"]
            st["prefill_tok_s"] = 1e3 * st["prompt_tokens"] / st["prefill_ms"]
            st["decode_tok_s"] = 1e3 * max(st["new_tokens"] - 1, 1) / max(st["decode_ms"], 1e-6)
            runs.append(st)
            _tick()
    return {"threads": got, "load_ms": load_ms, "runs": runs, "visual_tokens": runner.entry["visual_tokens"],
            "rss_mb": {"interpreter": base_rss, "after_load": after_load, "peak": _peak_rss_mb()}}


JOBS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "machine": job_machine, "op": job_op, "cycle": job_cycle, "breakdown": job_breakdown, "vision": job_vision}


def _child() -> int:
    job = json.loads(sys.stdin.read())
    result = JOBS[job["kind"]](job)
    sys.stdout.write(json.dumps(result))
    return 0


# ----------------------------------------------------------------------------------------------- parent side
def run_job(job: dict[str, Any], on_tick: Callable[[], None] | None = None, timeout: float | None = None
            ) -> dict[str, Any]:
    """Run one job in a fresh interpreter with `threads` threads everywhere; returns its JSON result."""
    n = str(job.get("threads", 1))
    env = dict(os.environ, OMP_NUM_THREADS=n, MKL_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n,
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([sys.executable, "-m", "runtimes.profiler.host"], stdin=subprocess.PIPE,
                                stdout=out, stderr=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))
        assert proc.stdin is not None and proc.stderr is not None
        proc.stdin.write(json.dumps(job))
        proc.stdin.close()
        err: list[str] = []
        t0 = time.monotonic()
        try:
            for line in proc.stderr:
                if line.startswith(TICK):
                    if on_tick:
                        on_tick()
                else:
                    err.append(line)
                if timeout and time.monotonic() - t0 > timeout:
                    raise ProfileError(f"{job['kind']} job exceeded {timeout:.0f} s")
            rc = proc.wait()
        except BaseException:  # a timeout, Ctrl-C, SIGTERM/SIGHUP in this process: the job's process goes too
            proc.kill()
            proc.wait()
            raise
        if rc != 0:
            tail = "".join(err).strip().splitlines()[-1:] or ["(no output)"]
            raise ProfileError(f"{job['kind']} job for {job.get('op', job.get('ops', ''))} failed (exit {rc}): {tail[0]}")
        out.seek(0)
        return json.loads(out.read())



def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def profile_host(bundle: str, settings: Any, profile: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Measure every op of `bundle` on this host (constrained to `profile`'s thread count when given) and project
    the figures onto the three phone profiles. Returns the report dict (schema memlora.profile v1)."""
    from tqdm import tqdm

    from . import devices
    from .plan import base_report, host_roofline, make_plan, op_section, overall_agreement, projections
    from .report import summarize

    s = settings
    # Once, absolute, links resolved: the per-op processes run with cwd=ROOT (a relative path, e.g. `latest` ->
    # bundle-v3 in the caller's directory, would not be found there), and a link re-pointed mid-run must not mix two
    # bundles in one report.
    bundle = str(Path(bundle).resolve())
    plan = make_plan(bundle, s)
    dev = devices.get(profile) if profile else None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    want = s.threads or (dev.threads if dev else cores)
    n = min(want, cores)
    report = base_report(plan, {"kind": "host", "profile": dev.name if dev else None, "serial": None,
                                "device": dev.to_dict() if dev else None})
    if n < want:
        report["notes"].append(f"{dev.name if dev else 'requested'} runs {want} threads; this host has {cores} cores, "
                               f"so the host measurement uses {n} (the projection still uses {want}).")
    report["notes"].append("Stop tokens are ignored while profiling: every run of an op decodes exactly its fixed "
                           "number of new tokens (the median length of the reference outputs of its LoCoMo work "
                           "items), so figures do not depend on what the model happens to say.")
    jobs_runs = {op: s.warmup + s.repeats * len(plan.items[op]) for op in plan.ops}
    vision = json.loads((Path(bundle) / "manifest.json").read_text()).get("vision")
    if isinstance(vision, dict) and not vision.get("onnx" if plan.backend == "onnx" else "program"):
        vision = None  # the vision op has no program of this backend in the bundle
    vision_new = int((vision.get("generation") or {}).get("max_new_tokens", 8)) if isinstance(vision, dict) else 0
    total = s.rounds * sum(jobs_runs.values()) + (s.repeats + s.warmup if s.cycle else 0) + \
        (len(plan.ops) if s.breakdown and plan.backend == "executorch" else 0) + 2 + \
        (s.warmup + s.repeats * 4 if vision_new else 0)
    bar = tqdm(total=total, desc="memlora-profile", unit="run", disable=not progress, file=sys.stderr)
    tick = lambda: bar.update(1)  # noqa: E731
    items = {op: [{"sample_id": i["sample_id"], "messages": i["messages"]} for i in plan.items[op]] for op in plan.ops}
    try:
        bar.set_postfix_str("host bandwidth")
        m_start = job_machine({"kind": "machine", "threads": n})  # in this process: it measures the machine
        tick()
        rounds: dict[str, list[dict[str, Any]]] = {op: [] for op in plan.ops}
        for r in range(s.rounds):
            for op in plan.ops:  # interleaved, so a slow spell of the machine hits every op alike
                bar.set_postfix_str(f"round {r + 1}/{s.rounds}: {op}")
                rounds[op].append(run_job({"kind": "op", "bundle": bundle, "backend": plan.backend, "op": op,
                                           "items": items[op],
                                           "new_tokens": plan.new_tokens[op], "warmup": s.warmup,
                                           "repeats": s.repeats, "threads": n}, on_tick=tick))
        for op in plan.ops:
            report["ops"][op] = op_section(plan, op, rounds[op])
        if s.cycle:
            bar.set_postfix_str("memory cycle")
            cyc = run_job({"kind": "cycle", "bundle": bundle, "backend": plan.backend, "ops": plan.ops, "items": items,
                           "new_tokens": plan.new_tokens, "warmup": s.warmup, "repeats": s.repeats, "threads": n},
                          on_tick=tick)
            report["cycle"] = {"total_ms": summarize([c["total_ms"] for c in cyc["cycles"]]),
                               "ops_ms": {op: summarize([c["ops_ms"][op] for c in cyc["cycles"]]) for op in plan.ops},
                               "cycles": cyc["cycles"], "load_ms": cyc["load_ms"], "switch": cyc["switch"],
                               "programs": cyc["programs"], "rss_mb": cyc["rss_mb"]}
        if vision_new:
            bar.set_postfix_str("vision op")
            vis = run_job({"kind": "vision", "bundle": bundle, "backend": plan.backend, "new_tokens": vision_new,
                           "warmup": s.warmup, "repeats": s.repeats, "threads": n}, on_tick=tick)
            runs = vis.pop("runs")
            report["vision"] = {**vis, "new_tokens": vision_new, "runs": runs,
                                "summary": {k: summarize([r[k] for r in runs]) for k in
                                            ("encode_ms", "prefill_ms", "ttft_ms", "prefill_tok_s", "decode_tok_s")},
                                "prompt_tokens": runs[0]["prompt_tokens"] if runs else None}
        if s.breakdown and plan.backend == "executorch":
            bar.set_postfix_str("ETDump breakdown")
            bd = run_job({"kind": "breakdown", "bundle": bundle, "ops": plan.ops, "items": items,
                          "new_tokens": plan.new_tokens, "threads": n}, on_tick=tick)
            report["breakdown"] = {op: breakdown_section(v) for op, v in bd.items()}
        bar.set_postfix_str("host bandwidth (end)")
        m_end = job_machine({"kind": "machine", "threads": n})
        tick()
    finally:
        bar.close()
    bw = max(m_start["copy_gbs_nt"], m_end["copy_gbs_nt"])  # the roofline uses the best this machine reached
    report["host"] = {"cpu": _cpu_name(), "cpu_count": cores, "threads": n, "threads_capped": n < want,
                      "machine": {"start": m_start, "end": m_end}, "bandwidth_gbs": bw}
    drift = abs(m_end["copy_gbs_nt"] - m_start["copy_gbs_nt"]) / bw
    if drift > 0.10:
        report["notes"].append(f"host memory bandwidth moved {100 * drift:.0f}% between the start and the end of the "
                               "run (other load on this machine?): treat the figures with care.")
    for op in plan.ops:
        report["ops"][op]["roofline_host"] = host_roofline(plan, op, report["ops"][op], bw,
                                                         max(m_start.get("int8_gemm_gops") or 0,
                                                             m_end.get("int8_gemm_gops") or 0) or None)
    names = [dev.name] if dev else []
    names += [p for p in devices.PROFILES if p not in names]
    report["projections"] = projections(plan, report, names)
    for name, p in report["projections"].items():
        ram = p["device"]["ram_gb"]["value"] * 1024
        peak = max(o["rss_mb"].get("peak", 0) for o in report["ops"].values())
        p["peak_rss_fraction_of_ram"] = peak / ram
    report["agreement"] = overall_agreement(report)
    return report


def breakdown_section(v: dict[str, Any]) -> dict[str, Any]:
    """ETDump event totals per phase: Method::execute, XNNPACK delegate, portable/custom kernels, time per kernel /
    XNNPACK operator kind, and the time outside Method::execute (the Python decode loop)."""
    import re

    if "error" in v:
        return {"error": v["error"], "wall_ms": v["run"]["e2e_ms"]}
    run = v["run"]
    steps = max(run["new_tokens"] - 1, 0)
    out: dict[str, Any] = {"wall_ms": run["e2e_ms"], "run": run, "executes_in_dump": v["events_ms"].get("executes")}
    for phase, wall in (("prefill", run["prefill_ms"]), ("decode", run["decode_ms"])):
        ev = v["events_ms"][phase]
        kernels: dict[str, float] = {}
        for name, ms in ev.items():
            if name in ("Method::execute", "DELEGATE_CALL", "OPERATOR_CALL"):
                continue
            key = re.sub(r"\s+#\d+$", "", name).replace("native_call_", "")
            kernels[key] = kernels.get(key, 0.0) + ms
        execute = ev.get("Method::execute", 0.0)
        out[phase] = {"wall_ms": wall, "execute_ms": execute, "outside_execute_ms": max(wall - execute, 0.0),
                      "delegate_ms": ev.get("DELEGATE_CALL", 0.0), "portable_ops_ms": ev.get("OPERATOR_CALL", 0.0),
                      "kernels_ms": dict(sorted(kernels.items(), key=lambda kv: -kv[1]))}
        if phase == "decode" and steps:
            out[phase]["per_token_ms"] = {k: (x / steps if isinstance(x, float) else x)
                                          for k, x in out[phase].items() if k.endswith("_ms") and k != "kernels_ms"}
    for k in ("execute_ms", "outside_execute_ms", "delegate_ms"):
        out[k] = out["prefill"][k] + out["decode"][k]
    out["kernels_ms"] = {}
    for phase in ("prefill", "decode"):
        for name, ms in out[phase]["kernels_ms"].items():
            out["kernels_ms"][name] = out["kernels_ms"].get(name, 0.0) + ms
    out["kernels_ms"] = dict(sorted(out["kernels_ms"].items(), key=lambda kv: -kv[1]))
    return out


if __name__ == "__main__":
    sys.exit(_child())
