"""What a profile run measures, shared by the host and adb modes: the bundle's description, the work items with
their token counts and fixed output lengths, and the roofline projections of measured figures."""

from __future__ import annotations

import datetime as dt
import hashlib
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtimes import factory
from runtimes.base import Runtime
from runtimes.manifest import MANIFEST, Manifest, load_manifest

from . import ProfileError, devices, roofline, workloads
from .report import SCHEMA, SCHEMA_VERSION, agreement, summarize, summarize_runs


def resolve_backend(manifest: Manifest, requested: str = "auto") -> str:
    """Which programs of the bundle to run, as every bundle reader picks them (runtimes.factory.resolve_backend),
    checked up front: every op must have programs for that backend."""
    fmt = manifest.raw["format"]
    backend = factory.resolve_backend(manifest, requested)
    has = {op: backend in (getattr(e, "backends", None) or {}) or fmt == backend for op, e in manifest.ops.items()}
    if not all(has.values()):
        raise ProfileError(f"bundle format is {fmt!r}: no {backend} programs for ops "
                           f"{sorted(op for op, ok in has.items() if not ok)}")
    return backend


def op_files(manifest: Manifest, op: str, backend: str) -> list[str]:
    """The files one op needs for a backend: program, data files, adapter file (tokenizer not included)."""
    e = manifest.ops[op]
    b = (getattr(e, "backends", None) or {}).get(backend)
    if not b:
        return [e.program, *e.data_files]
    return [b["program"], *b.get("data_files", []), *([b["adapter_file"]] if b.get("adapter_file") else [])]


class _Tokens(Runtime):
    """The shared Runtime's chat template + tokenizer, without loading any program (token counts only)."""

    backend = "tokens"

    def _load(self, op: str) -> None:  # pragma: no cover - never called
        raise NotImplementedError

    def _forward(self, op: str, tokens: list[int], start_pos: int) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


@dataclass
class Settings:
    warmup: int = 1
    repeats: int = 3
    samples: int = 3
    rounds: int = 2
    k: int = 5
    window: int = 6
    seed: int = 0
    data: str | None = None
    ops: list[str] | None = None
    new_tokens: dict[str, int] = field(default_factory=dict)  # overrides of the reference-derived lengths
    backend: str = "auto"  # executorch | onnx | auto (runtimes.factory.resolve_backend)
    threads: int | None = None  # default: the device profile's (host: capped at this host's cores)
    breakdown: bool = True
    cycle: bool = True


@dataclass
class Plan:
    manifest: Manifest
    settings: Settings
    ops: list[str]
    items: dict[str, list[dict[str, Any]]]  # op -> [{sample_id, messages, prompt_tokens, meta}]
    backend: str
    new_tokens: dict[str, int]
    data_path: str
    data_sha256: str


def make_plan(bundle: str | Path, s: Settings) -> Plan:
    manifest = load_manifest(bundle, verify=True)
    backend = resolve_backend(manifest, s.backend)
    order = {k: i for i, k in enumerate(workloads.OPS)}  # the memory cycle's order first, then any other op
    ops = s.ops or sorted(manifest.ops, key=lambda o: (order.get(o, len(order)), o))
    unknown = [o for o in ops if o not in manifest.ops]
    if unknown:
        raise ProfileError(f"ops {unknown} are not in this bundle; it has {sorted(manifest.ops)}")
    path = Path(s.data) if s.data else workloads.default_data_path()
    data = workloads.load_locomo(path)
    built = workloads.build(data, {op: manifest.ops[op].prompt_template for op in ops}, samples=s.samples, k=s.k,
                            window=s.window, seed=s.seed)
    tok = _Tokens(manifest)
    count = lambda text: len(tok.tokenizer.encode(text, add_special_tokens=False).ids)  # noqa: E731
    items, new_tokens = {}, {}
    for op in ops:
        want = int(s.new_tokens.get(op) or workloads.fixed_new_tokens(built[op], count))
        rows = []
        for it in built[op]:
            n = len(tok.encode(messages=it.messages))
            if n + want <= manifest.max_seq_len:
                rows.append({"sample_id": it.sample_id, "messages": it.messages, "prompt_tokens": n, "meta": it.meta})
        if not rows:
            raise ProfileError(f"no {op} work item fits the bundle's max_seq_len {manifest.max_seq_len} with "
                               f"{want} new tokens; export with a longer --max-seq-len or lower --new-tokens")
        items[op], new_tokens[op] = rows, want
    assert path is not None
    return Plan(manifest, s, ops, items, backend, new_tokens, str(path), hashlib.sha256(path.read_bytes()).hexdigest())


def bundle_info(m: Manifest, ops: list[str], backend: str) -> dict[str, Any]:
    files = m.raw["files"]
    tok = m.raw["tokenizer"]["file"]
    per_op = {}
    for op in ops:
        need = op_files(m, op, backend)
        per_op[op] = {"files": need, "bytes_on_disk": sum(int(files[f]["bytes"]) for f in [*need, tok] if f in files)}
    q = m.raw["quantization"]
    return {"path": str(m.root), "model": m.raw["model"].get("name"), "strategy": m.raw["strategy"],
            "quantization": q.get("scheme"), "format": m.raw["format"], "backend": backend,
            "manifest_sha256": hashlib.sha256((m.root / MANIFEST).read_bytes()).hexdigest(),
            "ops": per_op, "total_bytes": sum(int(f["bytes"]) for f in files.values())}


def size_row(m: Manifest, backend: str | None = None) -> dict[str, Any]:
    """Bytes on disk by role (programs, shared data + adapter files, tokenizer) for the size-per-strategy plot."""
    backend = backend or resolve_backend(m)
    files = m.raw["files"]
    need = {op: op_files(m, op, backend) for op in m.ops}
    programs = {fs[0] for fs in need.values()}
    data = {f for fs in need.values() for f in fs[1:]}
    tok = m.raw["tokenizer"]["file"]
    return {"label": f"{m.raw['model'].get('name')} {m.raw['strategy']} {m.raw['quantization'].get('scheme')} "
                     f"{backend}",
            "programs": sum(int(files[f]["bytes"]) for f in programs),
            "shared_data": sum(int(files[f]["bytes"]) for f in data),
            "tokenizer": int(files.get(tok, {}).get("bytes", 0))}


def base_report(plan: Plan, target: dict[str, Any]) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("memlora")
    except PackageNotFoundError:
        v = "unknown"
    s = plan.settings
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "tool": {"name": "memlora-profile", "version": v},
        "created_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "bundle": bundle_info(plan.manifest, plan.ops, plan.backend),
        "target": target,
        "settings": {"warmup": s.warmup, "repeats": s.repeats, "samples": s.samples, "rounds": s.rounds, "k": s.k,
                     "window": s.window, "seed": s.seed, "data": plan.data_path, "data_sha256": plan.data_sha256,
                     "new_tokens": plan.new_tokens, "stop_tokens": "ignored"},
        "ops": {}, "notes": [],
        "sizes": [size_row(plan.manifest, plan.backend)],
        "platform": {"python": platform.python_version(), "machine": platform.machine(), "system": platform.system()},
    }


def op_section(plan: Plan, op: str, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Summaries of an op's measured rounds (each: {runs, load_ms, rss_mb})."""
    runs = [dict(r, round=i) for i, rd in enumerate(rounds) for r in rd["runs"]]
    per_round = [summarize_runs(rd["runs"]) for rd in rounds]
    ag = {m: agreement([pr[m].get("median", float("nan")) for pr in per_round])
          for m in ("e2e_ms", "prefill_tok_s", "decode_tok_s")}
    return {
        "new_tokens": plan.new_tokens[op],
        "bytes_on_disk": bundle_info(plan.manifest, [op], plan.backend)["ops"][op]["bytes_on_disk"],
        "workload": [{"sample_id": i["sample_id"], "prompt_tokens": i["prompt_tokens"], "meta": i["meta"]}
                     for i in plan.items[op]],
        "load_ms": dict(summarize([rd.get("load_ms") for rd in rounds if rd.get("load_ms") is not None]),
                        rounds=[rd.get("load_ms") for rd in rounds]),
        "rss_mb": {k: max(rd["rss_mb"][k] for rd in rounds) for k in rounds[0].get("rss_mb", {})},
        "runs": runs,
        "summary": summarize_runs(runs),
        "rounds": [{m: pr[m].get("median") for m in ("e2e_ms", "ttft_ms", "prefill_tok_s", "decode_tok_s")}
                   for pr in per_round],
        "agreement": ag,
        **({"adapter_switch_ms": summarize([r["adapter_switch_ms"] for r in runs])}
           if any("adapter_switch_ms" in r for r in runs) else {}),
    }


def overall_agreement(report: dict[str, Any]) -> dict[str, Any]:
    notes, ok, checked = [], True, False
    for op, o in report["ops"].items():
        for m, a in o["agreement"].items():
            if a.get("within_10pct") is None:
                continue
            checked = True
            if not a["within_10pct"]:
                ok = False
                notes.append(f"{op} {m} round medians differ by {100 * a['max_rel_diff']:.1f}%")
    return {"within_10pct": ok if checked else None, "notes": notes}


def host_roofline(plan: Plan, op: str, section: dict[str, Any], bandwidth_gbs: float, gops: float | None
                  ) -> dict[str, Any]:
    cost = roofline.model_cost(plan.manifest, op, op_files(plan.manifest, op, plan.backend))
    p = int(np.median([i["prompt_tokens"] for i in plan.items[op]]))
    bound = roofline.project(cost, p, plan.new_tokens[op], bandwidth_gbs, gops or float("inf"))
    sm = section["summary"]
    dec, pre = sm["decode_tok_s"].get("median") or 0.0, sm["prefill_tok_s"].get("median") or 0.0
    return {"bandwidth_gbs": bandwidth_gbs, "int8_gops": gops, "cost": cost.to_dict(), "prompt_tokens": p,
            "decode_bound_tok_s": bound["decode_tok_s"], "decode_fraction": dec / bound["decode_tok_s"],
            "prefill_bound_tok_s": bound["prefill_tok_s"] if gops else None,
            "prefill_fraction": pre / bound["prefill_tok_s"] if gops else None,
            "decode_bytes_per_token": bound["decode_bytes_per_token"]}


def projections(plan: Plan, report: dict[str, Any], names: list[str]) -> dict[str, Any]:
    out = {}
    for name in names:
        d = devices.get(name)
        ops, cyc_b, cyc_e = {}, 0.0, 0.0
        for op in plan.ops:
            cost = roofline.model_cost(plan.manifest, op, op_files(plan.manifest, op, plan.backend))
            p = int(np.median([i["prompt_tokens"] for i in plan.items[op]]))
            n = plan.new_tokens[op]
            b = roofline.project(cost, p, n, d.mem_bandwidth_gbs.value, d.peak_int8_gops.value)
            rh = report["ops"][op].get("roofline_host") or {}
            fd = min(rh.get("decode_fraction") or 1.0, 1.0)
            fp = min(rh.get("prefill_fraction") or 1.0, 1.0)
            eff = {"decode_tok_s": b["decode_tok_s"] * fd, "prefill_tok_s": b["prefill_tok_s"] * fp}
            eff["ttft_ms"] = p / eff["prefill_tok_s"] * 1e3
            eff["e2e_ms"] = eff["ttft_ms"] + max(n - 1, 0) / eff["decode_tok_s"] * 1e3
            ops[op] = {"prompt_tokens": p, "new_tokens": n, "roofline": b, "at_host_efficiency": eff,
                       "fractions_used": {"decode": fd, "prefill": fp}}
            cyc_b += b["e2e_ms"]
            cyc_e += eff["e2e_ms"]
        out[d.name] = {"label": "PROJECTION", "device": d.to_dict(), "ops": ops,
                       "cycle_ms": {"roofline": cyc_b, "at_host_efficiency": cyc_e}}
    return out
