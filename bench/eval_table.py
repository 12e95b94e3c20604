"""One table (markdown) and one plot (PNG) from several `memlora-eval` reports of the same slice.

    PYTHONPATH=. python bench/eval_table.py NAME=DIR [NAME=DIR ...] --out docs/eval

Each DIR is a `memlora-eval --out` directory (report.json). Rows: the runs in the order given; columns: QA F1 and
BLEU-1 overall and per LoCoMo category, JSON validity of extract / update, extraction precision / recall, memories
added, wall time. Refuses reports whose slice (data, split, sessions, questions) differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SLICE_KEYS = ("data", "split", "max_sessions", "max_questions", "window", "update_batch", "top_k")


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def main() -> int:
    from runtimes.memory.locomo import CATEGORY_NAMES, QA_CATEGORIES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="NAME=DIR")
    p.add_argument("--out", required=True, help="writes OUT.md and OUT.png")
    a = p.parse_args()
    reports = []
    for item in a.runs:
        name, sep, d = item.partition("=")
        if not sep:
            p.error(f"{item!r}: expected NAME=DIR")
        f = Path(d) / "report.json"
        if not f.is_file():
            p.error(f"{f}: not found (run memlora-eval --out {d} first)")
        reports.append((name, json.loads(f.read_text())))
    first = reports[0][1]["config"]
    for name, r in reports[1:]:
        diff = [k for k in SLICE_KEYS if r["config"].get(k) != first.get(k)]
        if diff:
            p.error(f"{name}: evaluated another slice than {reports[0][0]} ({', '.join(diff)} differ)")
    cats = [str(c) for c in QA_CATEGORIES]
    head = ["run", "QA F1", "BLEU-1", *[f"F1 {c} {CATEGORY_NAMES[int(c)]}" for c in cats], "JSON extract",
            "JSON update", "facts P / R", "memories", "minutes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in reports:
        qa, v, e = r["qa"], r["json_validity"], r["extraction"]
        added = sum(c["memories"]["added"] for c in r["conversations"])
        row = [name, pct(qa["overall"]["f1"]), pct(qa["overall"]["bleu1"]), *[pct(qa[c]["f1"]) for c in cats],
               f"{pct(v['extract']['rate'])} ({v['extract']['valid']}/{v['extract']['calls']})",
               f"{pct(v['update']['rate'])} ({v['update']['valid']}/{v['update']['calls']})",
               f"{pct(e['precision'])} / {pct(e['recall'])}", str(added), f"{r['timing']['total_seconds'] / 60:.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    r0 = reports[0][1]
    n = {c: r0["qa"][c]["n"] for c in cats}
    note = (f"{len(r0['conversations'])} conversation(s), split {first['split']}, "
            f"first {first['max_sessions'] or 'all'} sessions, questions per category "
            + ", ".join(f"{c}: {n[c]}" for c in cats))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + f"\n\n{note}\n")
    print("\n".join(lines) + f"\n\n{note}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups = ["overall", *cats]
    labels = ["all 1-4", *[CATEGORY_NAMES[int(c)] for c in cats]]
    x = np.arange(len(groups))
    w = 0.8 / len(reports)
    fig, ax = plt.subplots(figsize=(11, 4))
    for i, (name, r) in enumerate(reports):
        ax.bar(x + i * w - 0.4 + w / 2, [100 * (r["qa"][g]["f1"] or 0) for g in groups], w, label=name)
    ax.set_xticks(x, [f"{lab}\n(n={r0['qa'][g]['n']})" for lab, g in zip(labels, groups)])
    ax.set_ylabel("QA F1")
    ax.set_title("memlora-eval on the LoCoMo validation slice")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
