"""Answer a `memlora-eval` run's questions again from its stores, with other answer settings (issue 18, item 3).

    python bench/reanswer.py EVAL_DIR --bundle BUNDLE [--top-k 10] [--threads 2]

Memorising a whole conversation takes minutes; the answer step alone takes seconds per question. This copies the
stores an eval wrote (so they stay as they are), answers every question of the report again with the given
answer settings through the same `MemoryPipeline.answer`, and prints F1 / BLEU-1 per category beside the
report's own. Only a change to the answer step (retrieval, the generate prompt or adapter) is measured this way.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtimes.factory import open_bundle  # noqa: E402
from runtimes.memory import metrics  # noqa: E402
from runtimes.memory.embed import make_embedder  # noqa: E402
from runtimes.memory.eval import file_safe, qa_summary  # noqa: E402
from runtimes.memory.pipeline import MemoryPipeline, PipelineConfig  # noqa: E402
from runtimes.memory.store import MemoryStore  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("eval_dir")
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="write the new answers here")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    d = Path(args.eval_dir)
    rep = json.loads((d / "report.json").read_text())
    llm = open_bundle(args.bundle)
    embedder = make_embedder("auto", args.bundle)
    config = PipelineConfig(answer_top_k=args.top_k)
    old = [q for det in rep["details"] for q in det["qa"]]
    new = []
    with tempfile.TemporaryDirectory() as tmp:
        for det in rep["details"]:
            src = d / f"store-{file_safe(det['sample_id'])}.sqlite"
            dst = Path(tmp) / src.name
            shutil.copy(src, dst)
            pipe = MemoryPipeline(llm, embedder, MemoryStore(dst), owner=det["sample_id"], config=config)
            for q in det["qa"]:
                a = pipe.answer(q["question"])
                new.append({**q, "prediction": a.text, "f1": metrics.f1(a.text, q["gold"]),
                            "bleu1": metrics.bleu1(a.text, q["gold"]),
                            "retrieved": [[m.id, round(s, 4)] for m, s in a.memories]})
            pipe.store.close()
    before, after = qa_summary(old), qa_summary(new)
    print(f"{d}: {len(new)} questions, top-k {args.top_k}")
    print("| run | " + " | ".join(f"F1 {c}" for c in before) + " | BLEU-1 overall |")
    print("|---|" + "---|" * (len(before) + 1))
    for name, t in (("report", before), ("again", after)):
        print(f"| {name} | " + " | ".join(f"{100 * r['f1']:.1f}" for r in t.values())
              + f" | {100 * t['overall']['bleu1']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(new, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
