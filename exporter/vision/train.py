"""`memlora-train --op vqa`: the vision op of MemLoRA-V — the projector and a LoRA `vqa` adapter on the text LM,
trained on easy-VQA with the image encoder frozen (its features computed once and cached), in two stages as LLaVA:

1. alignment (`align_steps`): the projector alone, on the frozen LM with its adapter off, on the questions whose
   answer names what the image shows (colour, shape: not yes/no). This is what makes the LM read the image: trained
   jointly from the start, the LoRA learns the answer priors first and the image never reaches the answer
   (docs/vision.md).
2. joint (`steps`): projector + LoRA on every question; with `attribute_answers` (the default) a yes/no question's
   target names what the image shows first: "blue, so yes" (data.with_attribute_answers; the op's answer is the
   text after the last ", so ", recorded in projector.json as `answer_after`).

- Each example: the LM's chat prompt with the visual tokens at the image placeholder (exporter.vision.model), then
  the answer and the end-of-turn token; the loss is on the answer tokens only, the LM head runs only there.
- Batches of `batch` examples, right-padded (attention mask), AdamW on projector + LoRA, linear warm-up then cosine
  (exporter.train.trainer.lr_at), a seeded data order; bfloat16 autocast.
- Checkpoints every `checkpoint_every` steps (safetensors + JSON: LoRA, projector, AdamW moments, RNG, history) in
  `<out>.checkpoints/`; the same command resumes from the newest.
- Output directory (written to a temporary directory, then renamed): `projector.safetensors` + `projector.json`,
  `vqa/` (the PEFT adapter, fp16), `training_config.json`, `validation.json` (accuracy on the held-out validation
  images, and on easy-VQA test).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from runtimes.outdir import OutputDir, never_replaced

from ..errors import InputError, SpecError
from .data import VQAItem

log = logging.getLogger("memlora.train")

PROJECTOR_FILE = "projector.safetensors"
PROJECTOR_CONFIG = "projector.json"
ADAPTER_DIR = "vqa"
KIND = "vqa output directory"


@dataclass
class VQATrainConfig:
    out: str
    base: str = "smollm2-135m"
    grid: int = 3  # visual tokens per side (3 x 3 = 9); chosen on validation, docs/vision.md
    rank: int = 8
    alpha: float = 16.0
    targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                        "up_proj", "down_proj"])
    align_steps: int = 400  # stage 1: projector only, LM frozen, open questions (docs/vision.md)
    steps: int = 600  # stage 2: projector + LoRA, every question
    batch: int = 16
    lr: float = 1e-3
    projector_lr: float = 1e-3  # both stages; at 1e-2 the projector's updates are noise (docs/vision.md)
    balance: bool = False  # joint stage: every (question template, answer) group equally likely (data.balanced_order;
    # measured worse on the natural test distribution so far: docs/vision.md)
    attribute_answers: bool = True  # joint stage: yes/no targets "<colour or shape>, so <yes|no>" (data.ANSWER_AFTER;
    # answered "yes" / "no" directly, yes/no stayed at the wording's prior: docs/vision.md)
    warmup: int = 20
    weight_decay: float = 0.0
    seed: int = 0
    threads: int = 2
    bf16: bool = True
    val_items: int = 500
    test_items: int | None = None  # None: the whole easy-VQA test split
    checkpoint_every: int = 50
    keep_checkpoints: bool = False
    op: str = "vqa"

    def __post_init__(self) -> None:
        for name in ("rank", "steps", "batch", "threads", "checkpoint_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise SpecError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if not isinstance(self.align_steps, int) or self.align_steps < 0:
            raise SpecError(f"align_steps must be an int >= 0, got {self.align_steps!r}")
        from ..train.trainer import ALL_LINEAR

        bad = sorted(set(self.targets) - set(ALL_LINEAR))
        if bad or not self.targets:
            raise SpecError(f"target modules {bad or self.targets} are not LoRA targets; choose from {ALL_LINEAR}")
        if not isinstance(self.val_items, int) or self.val_items < 1:
            raise SpecError(f"val_items must be a positive int, got {self.val_items!r}")
        if self.test_items is not None and (not isinstance(self.test_items, int) or self.test_items < 1):
            raise SpecError(f"test_items must be a positive int, got {self.test_items!r}")
        if self.grid not in (1, 3, 7):
            raise SpecError(f"--grid must be 1, 3 or 7 (visual tokens per side), got {self.grid!r}")
        for name in ("lr", "projector_lr"):
            if not 0 < getattr(self, name) < 1:
                raise SpecError(f"{name} must be in (0, 1), got {getattr(self, name)!r}")

    def training_key(self) -> str:
        keep = {k: v for k, v in asdict(self).items()
                if k not in ("out", "threads", "val_items", "test_items", "checkpoint_every", "keep_checkpoints")}
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def total_steps(self) -> int:
        return self.align_steps + self.steps

    @property
    def inputs(self) -> list[str]:
        return [self.base] if Path(self.base).exists() else []

    @property
    def checkpoint_dir(self) -> Path:
        return Path(str(Path(self.out)) + ".checkpoints")


class VQAModel:
    """The trainable pieces around the PEFT-wrapped LM: projector, prompt layout, batched loss and greedy answers."""

    def __init__(self, lm: Any, tokenizer: Any, projector: Any, eot: Sequence[int]):
        from .model import prompt_parts, vqa_messages

        self.lm, self.tok, self.projector, self.eot = lm, tokenizer, projector, list(eot)
        self._parts = lambda q: prompt_parts(tokenizer, vqa_messages(q))  # noqa: E731
        self._cache: dict[str, Any] = {}

    def parts(self, question: str):
        if question not in self._cache:
            self._cache[question] = self._parts(question)
        return self._cache[question]

    def _inner(self):
        m = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm  # under PEFT, or plain
        return m.model, m.lm_head

    def batch_embeds(self, items: Sequence[VQAItem], features: Any, with_answer: bool, left_pad: bool = False):
        """(inputs_embeds [B, T, D], attention_mask [B, T], answer positions per row, answer ids per row)."""
        import torch

        from .model import prompt_embeds

        emb = self.lm.get_input_embeddings()
        visual = self.projector(features[[i.image for i in items]].float())
        rows, answers = [], []
        for k, it in enumerate(items):
            ans = self.tok(it.answer, add_special_tokens=False)["input_ids"] + self.eot if with_answer else []
            rows.append(prompt_embeds(emb, self.parts(it.question), visual[k], ans))
            answers.append(ans)
        width = max(r.shape[0] for r in rows)
        x = rows[0].new_zeros(len(rows), width, rows[0].shape[1])
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for k, r in enumerate(rows):
            sl = slice(width - r.shape[0], width) if left_pad else slice(0, r.shape[0])
            x[k, sl], mask[k, sl] = r, 1
        return x, mask, rows, answers

    def loss(self, items: Sequence[VQAItem], features: Any) -> tuple[Any, int]:
        """(sum of the answer tokens' cross-entropy over the batch, number of answer tokens)."""
        import torch
        import torch.nn.functional as F

        x, mask, rows, answers = self.batch_embeds(items, features, with_answer=True)
        body, head = self._inner()
        h = body(inputs_embeds=x, attention_mask=mask).last_hidden_state
        pos, tgt = [], []
        for k, (r, a) in enumerate(zip(rows, answers)):
            n = r.shape[0]
            pos += [(k, p) for p in range(n - len(a) - 1, n - 1)]  # the position before each answer token
            tgt += a
        idx = torch.tensor(pos)
        logits = head(h[idx[:, 0], idx[:, 1]]).float()
        return F.cross_entropy(logits, torch.tensor(tgt), reduction="sum"), len(tgt)

    def answer(self, items: Sequence[VQAItem], features: Any, max_new_tokens: int = 8) -> list[str]:
        import torch

        x, mask, _, _ = self.batch_embeds(items, features, with_answer=False, left_pad=True)
        with torch.no_grad():
            out = self.lm.generate(inputs_embeds=x, attention_mask=mask, max_new_tokens=max_new_tokens,
                                   do_sample=False, eos_token_id=self.eot[-1], pad_token_id=self.eot[-1])
        return [self.tok.decode(o, skip_special_tokens=True).strip() for o in out]


def evaluate(model: VQAModel, items: Sequence[VQAItem], features: Any, batch: int = 64,
             progress: bool = False, desc: str = "evaluate") -> dict[str, Any]:
    import torch
    from tqdm import tqdm

    from .data import accuracy, kind

    preds: list[str] = []
    model.lm.eval()
    model.projector.eval()
    with torch.no_grad():
        for i in tqdm(range(0, len(items), batch), desc=desc, unit="batch", disable=not progress, dynamic_ncols=True):
            preds += model.answer(items[i:i + batch], features)
    by_kind: dict[str, list[int]] = {}
    for p, it in zip(preds, items):
        by_kind.setdefault(kind(it), []).append(int(accuracy([p], [it]) == 1.0))
    return {"items": len(items), "accuracy": accuracy(preds, items),
            "by_kind": {k: sum(v) / len(v) for k, v in sorted(by_kind.items())},
            "samples": [{"question": it.question, "answer": it.answer, "output": p}
                        for p, it in list(zip(preds, items))[:5]]}


def _subset(items: Sequence[VQAItem], n: int | None, seed: int) -> list[VQAItem]:
    import random

    if n is None or n >= len(items):
        return list(items)
    idx = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in idx]


def train_vqa(cfg: VQATrainConfig, *, restart: bool = False, progress: bool = True, cache_dir: Path,
              limit_images: int | None = None, stop_after: int | None = None) -> dict[str, Any]:
    """Train, validate, test and write `cfg.out`. `limit_images` caps every split's images (tests);
    `stop_after` ends after that many steps with a checkpoint and no output (tests resuming)."""
    from ..train.trainer import run_training

    return run_training(cfg, KIND, restart=restart, stop_after=stop_after,
                        body=lambda: _train(cfg, progress, cache_dir, limit_images, stop_after))


def _train(cfg: VQATrainConfig, progress: bool, cache_dir: Path, limit_images: int | None,
           stop_after: int | None) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file
    from tqdm import tqdm

    from ..load import load_base
    from ..pipeline import stop_token_ids
    from ..train.trainer import (commit_output, data_order, end_of_turn, latest_checkpoint, load_checkpoint, lr_at,
                                 save_adapter, save_checkpoint)
    from .data import ANSWER_AFTER, answers, balanced_order, features_for, kind, load_split, with_attribute_answers
    from .encoder import NAME as ENCODER_NAME, ImageSpec, load_encoder, preprocess
    from .model import IMAGE_PLACEHOLDER, Projector, ProjectorConfig

    t_start = time.perf_counter()
    splits = {s: load_split(s, seed=cfg.seed, limit_images=limit_images) for s in ("train", "val", "test")}
    encoder = load_encoder()
    feats = {s: features_for(sp, encoder, preprocess, cache_dir=cache_dir, progress=progress)
             for s, sp in splits.items()}
    del encoder
    base = load_base(cfg.base)
    tok = base.tokenizer
    eot = end_of_turn(tok, stop_token_ids(tok, base.config))

    torch.manual_seed(cfg.seed)
    pcfg = ProjectorConfig(in_dim=int(feats["train"].shape[1]), dim=int(base.config.hidden_size), grid=cfg.grid)
    projector = Projector(pcfg)
    projector.fit_stats(feats["train"])  # fixed input statistics (saved with the projector; a resume reloads them)
    lcfg = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=0.0, target_modules=list(cfg.targets),
                      bias="none", task_type="CAUSAL_LM")
    lm = get_peft_model(base.model, lcfg)
    model = VQAModel(lm, tok, projector, eot)
    lora = [p for p in lm.parameters() if p.requires_grad]
    params = lora + list(projector.parameters())
    opt = torch.optim.AdamW([{"params": lora, "peak": cfg.lr}, {"params": list(projector.parameters()),
                                                                "peak": cfg.projector_lr}],
                            lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))

    step, history, elapsed = 0, [], 0.0
    ckpt = latest_checkpoint(cfg)
    if ckpt is not None:
        step, history, elapsed = load_checkpoint(ckpt, lm, opt, cfg, extra=projector)
        log.info("resuming from %s (step %d of %d)", ckpt, step, cfg.total_steps)
    train_items = splits["train"].items
    open_items = [it for it in train_items if kind(it) != "yes/no"]
    if cfg.attribute_answers:
        train_items = with_attribute_answers(train_items)
    if not train_items or (cfg.align_steps and not open_items):
        raise InputError("no VQA training items" if not train_items else "no open (colour / shape) VQA questions")
    orders = {"align": data_order(len(open_items), cfg.align_steps * cfg.batch, cfg.seed),
              "joint": (balanced_order(train_items, cfg.steps * cfg.batch, cfg.seed, answers()) if cfg.balance
                        else data_order(len(train_items), cfg.steps * cfg.batch, cfg.seed))}
    last = cfg.total_steps if stop_after is None else min(cfg.total_steps, stop_after)
    bar = tqdm(total=cfg.total_steps, initial=step, desc="train vqa", unit="step", disable=not progress,
               dynamic_ncols=True)
    t_loop = time.perf_counter() - elapsed
    lm.train()
    projector.train()
    while step < last:
        align = step < cfg.align_steps
        k = step if align else step - cfg.align_steps
        items, order = (open_items, orders["align"]) if align else (train_items, orders["joint"])
        if align:  # warm-up, then the projector's constant peak rate; the LoRA is off and not stepped
            rates = (0.0, cfg.projector_lr * min(1.0, (k + 1) / cfg.warmup))
        else:
            f = lr_at(k, cfg) / cfg.lr
            rates = (cfg.lr * f, cfg.projector_lr * f)
        for g, r in zip(opt.param_groups, rates):
            g["lr"] = r
        batch = [items[i] for i in order[k * cfg.batch:(k + 1) * cfg.batch]]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16), \
                (lm.disable_adapter() if align else contextlib.nullcontext()):
            s, n = model.loss(batch, feats["train"])
        (s / n).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        history.append({"step": step, "stage": "align" if align else "joint", "loss": float(s.detach()) / n,
                        "lr": rates[0], "projector_lr": rates[1]})
        bar.update(1)
        bar.set_postfix(stage=history[-1]["stage"], loss=f"{history[-1]['loss']:.3f}")
        if step % cfg.checkpoint_every == 0 or step == last:
            save_checkpoint(lm, opt, step, cfg, history, time.perf_counter() - t_loop, extra=projector)
    bar.close()
    train_s = time.perf_counter() - t_loop
    if stop_after is not None and step < cfg.total_steps:
        return {"stopped_at": step, "history": history}

    t_eval = time.perf_counter()
    val_items = _subset(splits["val"].items, cfg.val_items, cfg.seed + 1)
    test_items = _subset(splits["test"].items, cfg.test_items, cfg.seed + 2)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
        val = {"val": evaluate(model, val_items, feats["val"], progress=progress, desc="validate"),
               "test": evaluate(model, test_items, feats["test"], progress=progress, desc="test")}
    val["seconds"] = round(time.perf_counter() - t_eval, 1)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    od = OutputDir(out, force=False, owned=never_replaced, kind=KIND, inputs=cfg.inputs)
    with od as tmp:
        save_file({k: v.detach().to(torch.float16).contiguous() for k, v in projector.state_dict().items()},
                  str(tmp / PROJECTOR_FILE), metadata={"format": "pt"})
        (tmp / PROJECTOR_CONFIG).write_text(json.dumps({
            "projector": pcfg.to_dict(), "encoder": ENCODER_NAME, "image": asdict(ImageSpec()),
            "image_placeholder": IMAGE_PLACEHOLDER, "visual_tokens": pcfg.tokens,
            **({"answer_after": ANSWER_AFTER} if cfg.attribute_answers else {})}, indent=1) + "\n")
        save_adapter(lm, cfg.base, tmp / ADAPTER_DIR)
        summary = {"op": "vqa", "config": asdict(cfg), "training_key": cfg.training_key(),
                   "base": {"name": base.name, "source": base.source},
                   "data": {"dataset": "easy-vqa 1.0", "train_items": len(train_items),
                            "train_images": len(splits["train"].image_paths),
                            "val_images": len(splits["val"].image_paths),
                            "test_images": len(splits["test"].image_paths),
                            "open_items": len(open_items),
                            "examples_seen": cfg.total_steps * cfg.batch, "limit_images": limit_images},
                   "trainable_params": sum(p.numel() for p in params),
                   "seconds": {"train": round(train_s, 1), "total": round(time.perf_counter() - t_start, 1)},
                   "history": history}
        return commit_output(od, tmp, cfg, summary, val)
