"""Training report of the embedded adapters: loss curves (PNG) and a Markdown table of their validation scores,
read from each adapter's training_config.json and validation.json.

    python -m exporter.train.report --out docs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _smooth(xs: list[float], k: int = 10) -> list[float]:
    out, acc = [], 0.0
    for i, x in enumerate(xs):
        acc += x
        if i >= k:
            acc -= xs[i - k]
        out.append(acc / min(i + 1, k))
    return out


def load(adapters: dict[str, str]) -> dict[str, dict[str, Any]]:
    out = {}
    for op, d in adapters.items():
        p = Path(d)
        out[op] = {"training": json.loads((p / "training_config.json").read_text()),
                   "validation": json.loads((p / "validation.json").read_text()),
                   "bytes": (p / "adapter_model.safetensors").stat().st_size}
    return out


def plot(runs: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.4), squeeze=False)
    for ax, (op, r) in zip(axes[0], runs.items()):
        h = r["training"]["history"]
        steps, losses = [x["step"] for x in h], [x["loss"] for x in h]
        ax.plot(steps, losses, color="0.8", lw=0.8, label="train (per step)")
        ax.plot(steps, _smooth(losses), color="C0", lw=1.6, label="train (mean of 10)")
        v = r["validation"]
        curve = [(x["step"], x["val_loss"]) for x in h if "val_loss" in x] + [(steps[-1], v["val_loss"])]
        if len(curve) > 1:  # trained with --val-every: the validation curve
            ax.plot(*zip(*curve), "o-", color="C2", ms=3, lw=1.2, label="validation")
        ax.axhline(v["val_loss"], color="C2", ls="--", label=f"validation {v['val_loss']:.2f}")
        if "base_val_loss" in v:
            ax.axhline(v["base_val_loss"], color="C3", ls=":", label=f"base, no adapter {v['base_val_loss']:.2f}")
        ax.set_title(f"{op} adapter")
        ax.set_xlabel("step")
        ax.set_ylabel("loss (answer tokens)")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(runs: dict[str, dict[str, Any]]) -> str:
    rows = ["| op | steps | train time | val loss (base → adapter) | greedy on validation items: base → adapter | size |",
            "|---|---|---|---|---|---|"]
    for op, r in runs.items():
        t, v = r["training"], r["validation"]
        d = v.get("decode", {})
        a, b = d.get("adapter", {}), d.get("base", {})
        keys = ["json_valid", "fact_recall", "fact_precision"] if op == "extract" else \
            ["json_valid", "event_accuracy", "exact"] if op == "update" else ["f1", "bleu1", "exact"]
        scores = ", ".join(f"{k} {b.get(k, float('nan')):.2f} → {a.get(k, float('nan')):.2f}" for k in keys)
        rows.append(f"| {op} | {t['config']['steps']} | {t['seconds']['train'] / 60:.1f} min | "
                    f"{v.get('base_val_loss', float('nan')):.2f} → {v['val_loss']:.2f} | {scores} ({a.get('items', 0)} items) "
                    f"| {r['bytes'] / 2**20:.1f} MiB |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m exporter.train.report")
    p.add_argument("--base", default="smollm2-135m")
    p.add_argument("--out", default="docs")
    a = p.parse_args(argv)
    from ..load import embedded_adapters

    runs = load(embedded_adapters(a.base))
    if not runs:
        print(f"no embedded adapters for {a.base}", file=sys.stderr)
        return 1
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    plot(runs, out / "training_loss.png")
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
