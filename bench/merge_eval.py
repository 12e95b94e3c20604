"""One report from `memlora-eval` runs that each covered part of the conversations (issue 18).

    python bench/merge_eval.py EVAL_DIR EVAL_DIR... [--out FILE.json]

A slow backend (the PyTorch reference) can evaluate the validation conversations one per process, side by side;
this pools their per-conversation details through memlora-eval's own `summarise` (micro-averaged, as one run over
all of them would be) and prints the same markdown. The runs must share their settings (backend, model, adapters,
split, window, answer settings) and not overlap in conversations.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtimes.memory.eval import markdown, summarise  # noqa: E402

SAME = ("backend", "model", "adapters", "bundle", "few_shot", "window", "update_batch", "top_k", "answer_turns",
        "turn_ranking", "constrained", "add_to_empty_store", "max_new_tokens", "match_threshold", "max_sessions",
        "max_questions")


def merge(reports: list[dict]) -> dict:
    first = reports[0]["config"]
    for r in reports[1:]:
        diff = [k for k in SAME if r["config"].get(k) != first.get(k)]
        if diff:
            raise SystemExit(f"merge_eval: the runs differ in {diff}")
    details = [d for r in reports for d in r["details"]]
    ids = [d["sample_id"] for d in details]
    if len(set(ids)) != len(ids):
        raise SystemExit(f"merge_eval: a conversation is in more than one run: {ids}")
    args = argparse.Namespace(**{k: first.get(k) for k in (*SAME, "data", "split")})
    desc = {k: v for k, v in first.items() if k not in vars(args)}
    desc.update({k: first[k] for k in ("backend", "model", "adapters", "bundle", "few_shot") if k in first})
    return {"tool": "memlora-eval", **summarise(details, args, desc), "details": details}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    rep = merge([json.loads((d / "report.json").read_text()) for d in a.runs])
    if a.out:
        a.out.write_text(json.dumps(rep, indent=1))
    print(markdown(rep))


if __name__ == "__main__":
    main()
