"""Answer a `memlora-eval` run's questions again from its stores, with other answer settings (issue 18, item 3).

    python bench/reanswer.py EVAL_DIR --bundle BUNDLE [--top-k 10] [--turns K [--data FILE]] [--threads 2]

Memorising a whole conversation takes minutes; the answer step alone takes seconds per question. This copies the
stores an eval wrote (so they stay as they are), answers every question of the report again with the given
answer settings through the same `MemoryPipeline.answer`, and prints F1 / BLEU-1 per category beside the
report's own. Only a change to the answer step (retrieval, the generate prompt or adapter) is measured this way.

`--turns K` also shows the K conversation turns most similar to the question (MiniLM cosine, "Speaker: text" with
their session date, mixed with the memories oldest first): how much the raw dialogue would add to the memories.
`--turns-only` shows the turns without the memories.
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


def conversation_turns(args: argparse.Namespace, sample_id: str, embedder: object) -> tuple[list[dict], object]:
    from runtimes.memory import locomo
    from runtimes.memory.prompts import format_turns, to_iso

    conv = next(c for c in locomo.load(args.data) if c.sample_id == sample_id)
    turns = [{"id": -1, "text": format_turns([t]), "updated_at": to_iso(s.date)} for s in conv.sessions
             for t in s.turns]
    return turns, embedder.embed([t["text"] for t in turns])


def answer_with_turns(pipe: MemoryPipeline, question: str, turns: list[dict], tvecs: object,
                      args: argparse.Namespace) -> object:
    import numpy as np

    from runtimes.memory.pipeline import Answer, clean_answer
    from runtimes.memory.prompts import generate_messages, parse_date

    hits = [] if args.turns_only else pipe.retrieve(question, None)
    q = pipe.embedder.embed([question])[0]
    best = np.argsort(-(tvecs @ q))[: args.turns]
    shown = [{"id": m.id, "text": m.text, "updated_at": m.updated_at} for m, _ in hits] + [turns[i] for i in best]
    shown.sort(key=lambda m: parse_date(m["updated_at"]) or 0)
    _, call = pipe._call("generate", generate_messages(question, shown, pipe.template("generate")), None)
    return Answer(text=clean_answer(call.text), memories=hits, call=call)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("eval_dir")
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--turns", type=int, default=0, help="also show the K most similar raw turns")
    ap.add_argument("--turns-only", action="store_true", help="show the turns instead of the memories")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/locomo_dev.json"))
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
            turns, tvecs = conversation_turns(args, det["sample_id"], embedder) if args.turns else ([], None)
            for q in det["qa"]:
                a = pipe.answer(q["question"]) if not args.turns else answer_with_turns(pipe, q["question"], turns,
                                                                                        tvecs, args)
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
