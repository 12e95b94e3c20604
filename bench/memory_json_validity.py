"""JSON validity of extract / update outputs with and without the JSON-schema constraint, on real LoCoMo windows.

    PYTHONPATH=. python bench/memory_json_validity.py --windows 8 [--bundle DIR | --adapters DIR] [--out FILE]

Extract prompts: the first `--windows` windows (runtimes.memory.locomo.WINDOW turns) of the validation
conversations, spread over their sessions. Update prompts: each window's gold observation facts (up to 4) with the
5 most similar earlier gold facts as the stored memories (all-MiniLM-L6-v2), i.e. the prompts the pipeline builds.
Each prompt is decoded greedily twice (free, constrained); validity = runtimes.memory.parse accepts the output.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    from tqdm import tqdm

    from runtimes.memory import locomo
    from runtimes.memory.constrain import JsonConstraint
    from runtimes.memory.embed import TorchEmbedder
    from runtimes.memory.parse import ParseError, parse_extract, parse_update
    from runtimes.memory.prompts import extract_messages, update_messages

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT / locomo.DEFAULT_DATA))
    p.add_argument("--windows", type=int, default=8)
    p.add_argument("--base", default="smollm2-135m")
    p.add_argument("--adapters", nargs="*", default=None)
    p.add_argument("--bundle", default=None)
    p.add_argument("--ops", default="extract,update")
    p.add_argument("--modes", default="free,constrained")
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 is fastest on a busy machine)")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)

    if a.bundle:
        from runtimes.factory import open_bundle

        llm = open_bundle(a.bundle)
        stops = lambda op: llm.manifest.ops[op].stop_token_ids  # noqa: E731
        name = f"bundle {a.bundle}"
    else:
        from exporter.reference import ReferenceLLM, parse_adapters

        llm = ReferenceLLM(a.base, parse_adapters(a.adapters or []))
        stops = llm.stop_token_ids
        name = f"reference {llm.name}"
    emb = TorchEmbedder()
    convs = locomo.split(locomo.load(a.data), "val")
    windows = [w for c in convs for w in c.windows()]
    step = max(1, len(windows) // a.windows)
    picked = windows[::step][: a.windows]
    prompts = {"extract": [], "update": []}
    for w in picked:
        prompts["extract"].append((extract_messages(w.turns, w.date), None))
        if w.gold_facts:
            earlier = [g for v in windows[: windows.index(w)] for g in v.gold_facts][-200:]
            mems = []
            if earlier:
                ev, fv = emb.embed(earlier), emb.embed(w.gold_facts[:4])
                best = sorted({int(j) for row in fv @ ev.T for j in row.argsort()[::-1][:5]},
                              key=lambda j: -max(fv @ ev[j]))[:10]
                mems = [{"id": j, "text": earlier[j]} for j in best]
            prompts["update"].append((update_messages(w.gold_facts[:4], mems)[0], len(mems) + len(w.gold_facts[:4])))
    parsers = {"extract": parse_extract, "update": parse_update}
    results: dict[str, dict] = {}
    for op in a.ops.split(","):
        for mode in a.modes.split(","):
            rows = []
            for msgs, n_ids in tqdm(prompts[op], desc=f"{op} {mode}", disable=None):
                # As the pipeline does: update ids limited to those in play (shown memories + new facts).
                con = JsonConstraint.for_op(op, llm.tokenizer, stops(op), n_ids=n_ids) if mode == "constrained" else None
                t0 = time.perf_counter()
                g = llm.generate(op, messages=msgs, constraint=con)
                ms = (time.perf_counter() - t0) * 1e3
                try:
                    parsers[op](g.text)
                    ok, err = True, None
                except ParseError as e:
                    ok, err = False, str(e)
                rows.append({"ok": ok, "error": err, "ms": ms, "new_tokens": len(g.tokens), "stop": g.stop_reason,
                             "text": g.text[:400]})
            n = len(rows)
            results[f"{op}/{mode}"] = {
                "valid": sum(r["ok"] for r in rows), "n": n, "rate": sum(r["ok"] for r in rows) / n if n else None,
                "truncated": sum(r["stop"] == "max_new_tokens" for r in rows),
                "mean_ms": sum(r["ms"] for r in rows) / n if n else None,
                "mean_new_tokens": sum(r["new_tokens"] for r in rows) / n if n else None,
                "errors": sorted({r["error"] for r in rows if r["error"]}), "samples": rows[:3]}
    print(f"JSON validity, {name}, {len(picked)} LoCoMo validation windows")
    print(f"{'op/mode':24} {'valid':>8} {'rate':>7} {'truncated':>9} {'mean ms':>9} {'new tok':>8}")
    for k, r in results.items():
        print(f"{k:24} {r['valid']:>4}/{r['n']:<3} {100 * (r['rate'] or 0):6.1f}% {r['truncated']:>9} "
              f"{r['mean_ms'] or 0:9.0f} {r['mean_new_tokens'] or 0:8.1f}")
    if a.out:
        Path(a.out).write_text(json.dumps({"model": name, "windows": len(picked), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
