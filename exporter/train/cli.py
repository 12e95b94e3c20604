"""`memlora-train --op extract|update|generate`: distil one memory op into a LoRA adapter for the base model.
`memlora-train --op vqa`: MemLoRA-V's vision op (projector + LoRA on easy-VQA, exporter.vision.train).

Results (the adapter directory and its scores) on stdout, progress and logs on stderr. A run interrupted at any
point resumes from its newest checkpoint when started again with the same arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from runtimes.clikit import Parser, quiet_startup, run_main
from runtimes.outdir import OutputError as OutputDirError, check_output, never_replaced

from ..errors import MemloraError, SpecError

PROG = "memlora-train"


def _targets(value: str) -> list[str]:
    from .trainer import ALL_LINEAR, ATTENTION

    named = {"all": ALL_LINEAR, "attention": ATTENTION}
    return list(named.get(value, [t.strip() for t in value.split(",") if t.strip()]))


def _pick(value, default):
    return default if value is None else value


def build_parser() -> argparse.ArgumentParser:
    from .trainer import TrainConfig

    from ..vision.train import VQATrainConfig

    d = TrainConfig(op="extract", out="")
    v = VQATrainConfig(out="")
    p = Parser(prog=PROG, description="Train a MemLoRA adapter (PEFT LoRA) for one memory operation "
                                "on distillation data built from LoCoMo-format conversations.")
    p.add_argument("--op", required=True, choices=["extract", "update", "generate", "vqa", "all"],
                   help="the memory op to train an adapter for; all: one adapter on the data of extract, update and "
                        "generate together (the single-adapter baseline)")
    p.add_argument("--out", help="adapter directory to create (default: memlora_adapters/<base>/<op>)")
    p.add_argument("--base", default=d.base, help="embedded model name, Hugging Face directory or .gguf file")
    p.add_argument("--data", default=d.data, help="LoCoMo-format JSON (default: ../shared/data/locomo_dev.json)")
    p.add_argument("--rank", type=int, default=d.rank)
    p.add_argument("--alpha", type=float, default=None, help="LoRA alpha (default: 2 x rank)")
    p.add_argument("--dropout", type=float, default=d.dropout)
    p.add_argument("--targets", default="all", help="all | attention | comma-separated module names")
    p.add_argument("--max-len", type=int, default=d.max_len, help="longest example in tokens (longer ones are left out)")
    p.add_argument("--steps", type=int, default=None, help=f"optimizer steps (default: {d.steps}; vqa: {v.steps})")
    p.add_argument("--batch", type=int, default=None,
                   help=f"examples per optimizer step (default: {d.batch}; vqa: {v.batch})")
    p.add_argument("--lr", type=float, default=None, help=f"peak learning rate (default: {d.lr})")
    p.add_argument("--warmup", type=int, default=None, help=f"warm-up steps (default: {d.warmup}; vqa: {v.warmup})")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads")
    p.add_argument("--no-bf16", action="store_true", help="float32 forward/backward instead of bfloat16 autocast")
    p.add_argument("--val-examples", type=int, default=d.val_examples, help="validation examples for the loss")
    p.add_argument("--val-decode", type=int, default=d.val_decode, help="validation examples decoded greedily (0: none)")
    p.add_argument("--no-eval-base", action="store_true", help="do not score the bare base for comparison")
    p.add_argument("--grid", type=int, default=v.grid, choices=[1, 3, 7],
                   help="vqa: visual tokens per side (grid x grid tokens from the encoder's 7 x 7 map)")
    p.add_argument("--align-steps", type=int, default=v.align_steps,
                   help="vqa: steps of the alignment stage (projector only, LM frozen) before --steps joint ones")
    p.add_argument("--balance", action="store_true",
                   help="vqa: draw joint-stage questions so that every (question template, answer) pair is equally "
                        "likely, instead of as they come")
    p.add_argument("--no-attribute-answers", action="store_true",
                   help="vqa: train yes/no questions to answer yes / no directly instead of \"<colour or shape>, so "
                        "<yes|no>\" (the default: the op names what it sees, then answers)")
    p.add_argument("--projector-lr", type=float, default=v.projector_lr, help="vqa: the projector's peak learning rate")
    p.add_argument("--val-items", type=int, default=v.val_items, help="vqa: validation questions scored after training")
    p.add_argument("--test-items", type=int, default=None, help="vqa: easy-VQA test questions scored (default: all)")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--keep-checkpoints", action="store_true")
    p.add_argument("--val-every", type=int, default=0,
                   help="validation loss every N steps, recorded with the loss curve (default: only at the end)")
    p.add_argument("--restart", action="store_true", help="ignore existing checkpoints and start over")
    p.add_argument("--cache-dir", default=None, help="where built examples are cached (default: $MEMLORA_CACHE/train-data)")
    p.add_argument("--debug", "--verbose", "-v", dest="debug", action="store_true",
                   help="show library logs and warnings, and tracebacks")
    return p


def main(argv: list[str] | None = None) -> int:
    # Idle OpenMP threads sleep instead of spinning: on a CPU shared with other jobs, spinning threads stall training.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    quiet_startup(args.debug, PROG)
    logging.getLogger("memlora").setLevel(logging.DEBUG if args.debug else logging.INFO)
    state: dict = {}

    def vqa_body() -> int:
        from ..load import cache_root
        from ..vision.train import KIND, VQATrainConfig, train_vqa

        v = VQATrainConfig(out="")
        cfg = VQATrainConfig(
            out=args.out or str(Path("memlora_adapters") / args.base.replace("/", "_") / "vision"), base=args.base,
            grid=args.grid, align_steps=args.align_steps, balance=args.balance,
            attribute_answers=not args.no_attribute_answers, rank=args.rank,
            alpha=args.alpha if args.alpha is not None else 2.0 * args.rank,
            targets=_targets(args.targets), steps=_pick(args.steps, v.steps), batch=_pick(args.batch, v.batch),
            lr=_pick(args.lr, v.lr), projector_lr=args.projector_lr, warmup=_pick(args.warmup, v.warmup),
            seed=args.seed, threads=args.threads,
            bf16=not args.no_bf16, val_items=args.val_items, test_items=args.test_items,
            checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints)
        check_output(cfg.out, force=False, owned=never_replaced, kind=KIND, inputs=cfg.inputs)
        cache = Path(args.cache_dir) if args.cache_dir else cache_root() / "vqa-features"
        state["summary"] = train_vqa(cfg, restart=args.restart, cache_dir=cache)
        state["cfg"] = cfg
        return 0

    def body() -> int:
        from . import data as D
        from ..load import cache_root
        from .trainer import TrainConfig, ops_of, train

        cfg = TrainConfig(
            op=args.op, out=args.out or str(Path("memlora_adapters") / args.base.replace("/", "_") / args.op),
            base=args.base, data=args.data, rank=args.rank, alpha=args.alpha if args.alpha is not None else 2.0 * args.rank,
            dropout=args.dropout, targets=_targets(args.targets), max_len=args.max_len,
            steps=_pick(args.steps, TrainConfig.steps), batch=_pick(args.batch, TrainConfig.batch),
            lr=_pick(args.lr, TrainConfig.lr), warmup=_pick(args.warmup, TrainConfig.warmup), seed=args.seed,
            threads=args.threads,
            bf16=not args.no_bf16, val_examples=args.val_examples, val_decode=args.val_decode,
            eval_base=not args.no_eval_base, checkpoint_every=args.checkpoint_every,
            keep_checkpoints=args.keep_checkpoints, val_every=args.val_every)
        if not Path(cfg.data).is_file():
            raise SpecError(f"data file not found: {cfg.data} (pass --data PATH to a LoCoMo-format JSON)")
        check_output(cfg.out, force=False, owned=never_replaced, kind="adapter directory", inputs=cfg.inputs)
        cache = Path(args.cache_dir) if args.cache_dir else cache_root() / "train-data"
        embedder = D.default_embedder() if (args.op != "extract" or args.val_decode) else None
        log = logging.getLogger("memlora.train")
        log.info("building %s data from %s", args.op, cfg.data)
        ops = ops_of(args.op)
        tr = [e for op in ops for e in D.build(op, "train", cfg.data, seed=cfg.seed, embedder=embedder, cache_dir=cache)]
        va = [e for op in ops for e in D.build(op, "val", cfg.data, seed=cfg.seed, embedder=embedder, cache_dir=cache)]
        info = {"file": str(cfg.data), "sha256": D.data_sha256(Path(cfg.data)), "data_version": D.DATA_VERSION,
                "train": D.summary(tr), "val": D.summary(va)}
        log.info("train: %s", info["train"])
        log.info("val: %s", info["val"])
        state["summary"] = train(cfg, train_examples=tr, val_examples=va, restart=args.restart, data_info=info,
                                 embed=embedder.embed if embedder is not None else None)
        state["cfg"] = cfg
        return 0

    code = run_main(PROG, vqa_body if args.op == "vqa" else body, debug=args.debug, user_errors=(MemloraError, OutputDirError),
                    interrupted="rerun the same command to resume from the last checkpoint")
    if code:
        return code
    summary, cfg = state["summary"], state["cfg"]
    v = summary["validation"]
    if args.op == "vqa":
        print(json.dumps({"output": cfg.out, "train_seconds": summary["seconds"]["train"],
                          "val_accuracy": v["val"]["accuracy"], "test_accuracy": v["test"]["accuracy"],
                          "test_by_kind": v["test"]["by_kind"]}, indent=1))
        return 0
    def scores(d: dict) -> dict:
        return {label: {k: x for k, x in d.get(label, {}).items() if k != "samples"} for label in ("adapter", "base")}

    decode = v.get("decode", {})
    print(json.dumps({"adapter": cfg.out, "train_seconds": summary["seconds"]["train"],
                      "val_loss": v.get("val_loss"), "base_val_loss": v.get("base_val_loss"),
                      **({f"{op}_scores": scores(d) for op, d in decode.items()} if args.op == "all" else
                         {f"{label}_scores": s for label, s in scores(decode).items()})},
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
