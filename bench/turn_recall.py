"""How often the turns shown to `generate` hold a question's evidence, by turn ranking (issue 18, item 3).

    python bench/turn_recall.py EVAL_DIR [--bundle B] [-k 5]

Reads the stores of a `memlora-eval` run (their kept turns and memories) and its questions with their evidence turn
ids, ranks the owner's turns for each question by cosine, BM25, their reciprocal rank fusion (the pipeline's
"hybrid"), and by the source windows of the top-3 memories, and prints for each the share of questions whose
evidence turns are all / partly among the k shown. No model runs: retrieval alone, in seconds.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtimes.memory import lexical  # noqa: E402
from runtimes.memory.embed import make_embedder  # noqa: E402
from runtimes.memory.eval import file_safe  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("eval_dir")
    ap.add_argument("--bundle", default=None, help="embed questions with this bundle's embedder (else PyTorch MiniLM)")
    ap.add_argument("-k", type=int, default=5)
    args = ap.parse_args()
    d = Path(args.eval_dir)
    rep = json.loads((d / "report.json").read_text())
    embedder = make_embedder("auto" if args.bundle else "torch", args.bundle)
    k, hits, n = args.k, Counter(), 0
    for det in rep["details"]:
        con = sqlite3.connect(f"file:{d / ('store-' + file_safe(det['sample_id']) + '.sqlite')}?mode=ro", uri=True)
        turns = con.execute("SELECT turn_id, text, embedding FROM turns WHERE owner = ? ORDER BY id",
                            (det["sample_id"],)).fetchall()
        mems = con.execute("SELECT source_turns, embedding FROM memories WHERE owner = ? ORDER BY id",
                           (det["sample_id"],)).fetchall()
        con.close()
        if not turns:
            raise SystemExit(f"{d}: the store of {det['sample_id']} keeps no turns (a run from before they were kept)")
        tids = [t[0] for t in turns]
        vecs = np.stack([np.frombuffer(t[2], np.float32) for t in turns])
        mvecs = np.stack([np.frombuffer(m[1], np.float32) for m in mems]) if mems else np.zeros((0, vecs.shape[1]))
        qs = [q for q in det["qa"] if q["evidence"]]
        for q, v in zip(qs, embedder.embed([q["question"] for q in qs]) if qs else []):
            n += 1
            cos = vecs @ v / np.maximum(np.linalg.norm(vecs, axis=1), 1e-12)
            bm = lexical.bm25(q["question"], [t[1] for t in turns])
            by_cos = list(np.argsort(-cos, kind="stable"))
            src = {t for i in np.argsort(-(mvecs @ v), kind="stable")[:3] for t in json.loads(mems[i][0])}
            ranked = {"cosine": by_cos[:k], "bm25": list(np.argsort(-bm, kind="stable")[:k]),
                      "hybrid (rank fusion)": [i for i, _ in lexical.fuse(cos, bm, k)],
                      "cosine within the top-3 memories' windows": [i for i in by_cos if tids[i] in src][:k]}
            ev = set(q["evidence"])
            for name, top in ranked.items():
                shown = {tids[i] for i in top}
                hits[name, "all"] += ev <= shown
                hits[name, "any"] += bool(ev & shown)
    print(f"{d}: {n} questions with evidence, {k} turns shown")
    print("| ranking | all evidence shown | some evidence shown |")
    print("|---|---|---|")
    for name in dict.fromkeys(x for x, _ in hits):
        print(f"| {name} | {100 * hits[name, 'all'] / n:.1f} % | {100 * hits[name, 'any'] / n:.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
