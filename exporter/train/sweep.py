"""The small validation sweep behind `memlora-train`'s defaults: a few (rank, target modules, learning rate)
settings trained for the same short budget on one op, compared by validation loss (answer tokens only) and
seconds per step on this machine. A script, not a test (minutes per setting on 2 cores):

    nice -n 10 python -m exporter.train.sweep --op extract --steps 50 --out docs/train_sweep.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = [
    {"name": "r8-attention-lr5e-4", "rank": 8, "targets": "attention", "lr": 5e-4},
    {"name": "r8-all-lr5e-4", "rank": 8, "targets": "all", "lr": 5e-4},
    {"name": "r8-all-lr1e-3", "rank": 8, "targets": "all", "lr": 1e-3},
    {"name": "r16-all-lr5e-4", "rank": 16, "targets": "all", "lr": 5e-4},
]


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    p = argparse.ArgumentParser(prog="python -m exporter.train.sweep")
    p.add_argument("--op", default="extract", choices=["extract", "update", "generate"])
    p.add_argument("--base", default="smollm2-135m")
    p.add_argument("--data", default=str(Path("..") / "shared" / "data" / "locomo_dev.json"))
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--val-examples", type=int, default=24)
    p.add_argument("--only", default=None, help="comma-separated setting names")
    p.add_argument("--out", default="train_sweep.json", help="JSON results (appended per setting)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    import warnings

    warnings.filterwarnings("ignore")
    from ..load import cache_root
    from . import data as D
    from .cli import _targets
    from .trainer import TrainConfig, train

    emb = D.default_embedder() if a.op != "extract" else None
    cache = cache_root() / "train-data"
    tr = D.build(a.op, "train", a.data, embedder=emb, cache_dir=cache)
    va = D.build(a.op, "val", a.data, embedder=emb, cache_dir=cache)
    out = Path(a.out)
    results = json.loads(out.read_text()) if out.exists() else []
    only = set(a.only.split(",")) if a.only else None
    for s in SETTINGS:
        if only and s["name"] not in only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrainConfig(op=a.op, out=str(Path(tmp) / "adapter"), base=a.base, data=a.data, rank=s["rank"],
                              alpha=2.0 * s["rank"], targets=_targets(s["targets"]), lr=s["lr"], steps=a.steps,
                              warmup=max(1, a.steps // 10), val_examples=a.val_examples, val_decode=0, eval_base=False,
                              checkpoint_every=a.steps)
            t0 = time.perf_counter()
            summary = train(cfg, train_examples=tr, val_examples=va)
            losses = [h["loss"] for h in summary["history"]]
            size = (Path(cfg.out) / "adapter_model.safetensors").stat().st_size
        row = {"op": a.op, **s, "steps": a.steps, "val_loss": summary["validation"]["val_loss"],
               "train_loss_last10": sum(losses[-10:]) / len(losses[-10:]), "train_loss_first5": sum(losses[:5]) / 5,
               "s_per_step": summary["seconds"]["train"] / a.steps, "wall_s": round(time.perf_counter() - t0, 1),
               "trainable_params": summary["trainable_params"], "adapter_mib_fp16": round(size / 2**20, 2),
               "val_items": summary["validation"]["val_items"]}
        print(json.dumps(row), flush=True)
        results = [r for r in results if not (r["op"] == a.op and r["name"] == s["name"] and r["steps"] == a.steps)]
        results.append(row)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
