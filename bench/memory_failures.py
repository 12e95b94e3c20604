"""Where the wrong answers of a `memlora-eval` run come from (issue 18, item 3).

    python bench/memory_failures.py EVAL_DIR [--data ../shared/data/locomo_dev.json] [--samples 4] [--below 0.5]

EVAL_DIR is a `memlora-eval --out` directory (report.json with the per-window facts and per-answer retrieved ids, and
the conversations' SQLite stores). Each answer with F1 below `--below` is given the first source that explains it,
following a fact from the conversation to the answer:

0. `turn shown`: an evidence turn itself was among the kept turns shown to generate (`answer_turns`), so the answer
   was in front of the model (run with 0 turns, this source never appears);
1. `no gold fact`: the question's evidence turns have no LoCoMo `observation` fact to follow;
2. `not extracted`: no fact extracted from the evidence turns' windows matches an evidence observation;
3. `lost in update`: one was extracted, but no stored memory matches an evidence observation at the end;
4. `not retrieved`: a stored memory matches, but it is not among the memories retrieved for the question;
5. `answered wrongly`: a matching memory was shown to the generate op.

"Matches": all-MiniLM-L6-v2 cosine >= the report's match threshold (as for extraction precision / recall).
Prints a table per category and sampled failures per source.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtimes.memory import locomo  # noqa: E402
from runtimes.memory.embed import TorchEmbedder  # noqa: E402
from runtimes.memory.eval import file_safe  # noqa: E402

SOURCES = ("turn shown", "no gold fact", "not extracted", "lost in update", "not retrieved", "answered wrongly")


def attribute(conv: locomo.Conversation, det: dict, store: Path, embed, threshold: float, below: float) -> list[dict]:
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    rows = con.execute("SELECT id, text FROM memories WHERE owner IS ?", (conv.sample_id,)).fetchall()
    con.close()
    mem_ids = [r[0] for r in rows]
    mem_vec = embed([r[1] for r in rows]) if rows else None
    mem_text = dict(rows)
    windows = det["windows_extracted"]
    out = []
    for q in det["qa"]:
        if q["f1"] >= below:
            continue
        ev = set(q["evidence"])
        obs = [f for e in sorted(ev) for f in conv.observations.get(e, [])]
        item = {"category": q["category"], "question": q["question"], "gold": q["gold"], "prediction": q["prediction"],
                "f1": q["f1"], "evidence": sorted(ev), "evidence_facts": obs}
        shown = ev.intersection(t[0] for t in q.get("turns", []))
        if shown:
            out.append({**item, "source": "turn shown", "evidence_shown": sorted(shown)})
            continue
        if not obs:
            out.append({**item, "source": "no gold fact"})
            continue
        ov = embed(obs)
        facts = [f for w in windows if ev & set(w["dia_ids"]) for f in w["facts"]]
        if not facts or (embed(facts) @ ov.T).max() < threshold:
            out.append({**item, "source": "not extracted", "extracted": facts[:6]})
            continue
        sims = (mem_vec @ ov.T).max(axis=1) if rows else np.zeros(0)
        good = np.flatnonzero(sims >= threshold)  # indices of the stored memories that match an evidence fact
        if not len(good):
            out.append({**item, "source": "lost in update", "extracted": facts[:6]})
            continue
        retrieved = [r[0] for r in q["retrieved"]]
        hit = [mem_ids[i] for i in good if mem_ids[i] in retrieved]
        best = hit[0] if hit else mem_ids[good[int(np.argmax(sims[good]))]]
        out.append({**item, "source": "answered wrongly" if hit else "not retrieved", "memory": mem_text[best],
                    "rank": retrieved.index(best) + 1 if hit else None,
                    "retrieved_top3": [mem_text.get(i, "?") for i in retrieved[:3]]})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("eval_dir")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/locomo_dev.json"))
    ap.add_argument("--below", type=float, default=0.5, help="an answer with F1 below this is a failure")
    ap.add_argument("--samples", type=int, default=4, help="failures shown per source")
    ap.add_argument("--json", default=None, help="write every attributed failure here")
    args = ap.parse_args()
    d = Path(args.eval_dir)
    rep = json.loads((d / "report.json").read_text())
    threshold = rep["extraction"]["threshold"]
    convs = {c.sample_id: c for c in locomo.load(args.data)}
    emb = TorchEmbedder()

    def embed(texts):
        return np.asarray(emb.embed(list(texts)), dtype=np.float32)

    fails, total = [], Counter()
    for det in rep["details"]:
        conv = convs[det["sample_id"]]
        total.update(q["category"] for q in det["qa"])
        fails += attribute(conv, det, d / f"store-{file_safe(conv.sample_id)}.sqlite", embed, threshold, args.below)
    cats = sorted(total)
    print(f"{d}: {len(fails)} of {sum(total.values())} answers with F1 < {args.below}\n")
    print("| source | " + " | ".join(f"{c} {locomo.CATEGORY_NAMES[c]}" for c in cats) + " | all |")
    print("|---|" + "---|" * (len(cats) + 1))
    for s in SOURCES:
        n = Counter(f["category"] for f in fails if f["source"] == s)
        print(f"| {s} | " + " | ".join(str(n[c]) for c in cats) + f" | {sum(n.values())} |")
    print("| failures / questions | " + " | ".join(
        f"{sum(1 for f in fails if f['category'] == c)} / {total[c]}" for c in cats) + f" | {len(fails)} / {sum(total.values())} |")
    rng = random.Random(0)
    for s in SOURCES:
        group = [f for f in fails if f["source"] == s]
        if not group:
            continue
        print(f"\n### {s} ({len(group)})")
        for f in rng.sample(group, min(args.samples, len(group))):
            print(f"- [{f['category']}] {f['question']!r} gold {f['gold']!r} -> {f['prediction']!r}")
            print(f"  evidence: {f['evidence_facts'][:2]}")
            if "evidence_shown" in f:
                print(f"  evidence turns shown: {f['evidence_shown']} of {f['evidence']}")
            if "memory" in f:
                print(f"  memory (rank {f['rank']}): {f['memory']!r}; top 3: {f['retrieved_top3']}")
            elif "extracted" in f:
                print(f"  extracted there: {f['extracted'][:4]}")
    if args.json:
        Path(args.json).write_text(json.dumps(fails, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
