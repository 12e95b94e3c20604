"""PEFT LoRA training of one memory op's adapter on the base model, on CPU.

- Examples (exporter.train.data) are tokenized exactly as the reference backend encodes a prompt
  (`apply_chat_template(..., add_generation_prompt=True)`, no extra special tokens) followed by the target and the
  chat template's end-of-turn token; labels are -100 over the prompt, so the loss is on the answer tokens only.
  The LM head runs only over the answer positions (`logits_to_keep`).
- AdamW on the LoRA weights, linear warm-up then cosine decay to 10 % of the peak; `batch` examples per step
  (gradient accumulation, one sequence per forward: no padding); a seeded data order that depends only on the seed.
- Checkpoints (safetensors + JSON only: LoRA weights, AdamW moments, torch RNG state, step and loss history) every
  `checkpoint_every` steps in `<out>.checkpoints/`; a new run with the same config resumes from the newest one and
  ends with the same weights as an uninterrupted run.
- The result is written to a temporary directory and renamed to `out`: adapter_config.json +
  adapter_model.safetensors (fp16), training_config.json, validation.json (validation loss and greedy-decoding
  scores of the adapter and of the bare base on the same items).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from runtimes.outdir import OutputDir, OutputError as OutputDirError, check_output, never_replaced

from ..errors import InputError, OutputError, SpecError
from .data import OPS, Example

ALL = "all"
"""`--op all`: one adapter trained on the examples of every op (the single-adapter baseline of the MemLoRA paper's
expert-per-op design); it serves each op of a bundle (`--adapter extract=DIR --adapter update=DIR ...`)."""

log = logging.getLogger("memlora.train")

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]


@dataclass
class TrainConfig:
    op: str
    out: str
    base: str = "smollm2-135m"
    data: str = str(Path("..") / "shared" / "data" / "locomo_dev.json")
    # Defaults from the validation sweep (docs/training.md): rank 8 on all linear modules at lr 1e-3 matched rank 16
    # (within 0.002 validation loss) at half the size, and beat attention-only LoRA by 0.05.
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: list(ALL_LINEAR))
    max_len: int = 640
    """Examples longer than this (prompt + answer tokens) are left out, never truncated."""
    steps: int = 200
    batch: int = 1
    """Examples per optimizer step (gradient accumulation)."""
    lr: float = 1e-3
    warmup: int = 10
    weight_decay: float = 0.0
    seed: int = 0
    threads: int = 2
    bf16: bool = True
    """bfloat16 autocast for the forward / backward (LoRA weights and optimizer stay float32)."""
    val_examples: int = 48
    """Validation examples for the validation loss (a seeded subset of the validation split)."""
    val_decode: int = 16
    """Validation examples decoded greedily (adapter and bare base) for JSON validity and match scores."""
    eval_base: bool = True
    checkpoint_every: int = 25
    keep_checkpoints: bool = False
    val_every: int = 0
    """Validation loss every this many steps, recorded in the history (the curve); 0: only at the end."""

    def __post_init__(self) -> None:
        if self.op not in OPS and self.op != ALL:
            raise SpecError(f"--op must be one of {[*OPS, ALL]}, got {self.op!r}")
        for name in ("rank", "steps", "batch", "max_len", "threads", "checkpoint_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise SpecError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if not isinstance(self.val_every, int) or self.val_every < 0:
            raise SpecError(f"val_every must be an int >= 0, got {self.val_every!r}")
        if not 0 < self.lr < 1:
            raise SpecError(f"lr must be in (0, 1), got {self.lr!r}")
        bad = sorted(set(self.targets) - set(ALL_LINEAR))
        if bad or not self.targets:
            raise SpecError(f"target modules {bad or self.targets} are not LoRA targets; choose from {ALL_LINEAR}")
        if not 0 <= self.dropout < 1:
            raise SpecError(f"dropout must be in [0, 1), got {self.dropout!r}")

    def training_key(self) -> str:
        """Hash of everything that shapes the weights (not the output path or the evaluation settings)."""
        keep = {k: v for k, v in asdict(self).items()
                if k not in ("out", "threads", "val_examples", "val_decode", "eval_base", "checkpoint_every",
                             "keep_checkpoints", "val_every")}
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def inputs(self) -> list[str]:
        """Paths the output may not overlap: the data file and a base model given as a path."""
        return [self.data, *([self.base] if Path(self.base).exists() else [])]

    @property
    def checkpoint_dir(self) -> Path:
        return Path(str(Path(self.out)) + ".checkpoints")


# ------------------------------------------------------------------------------------------------ tokenization
@dataclass
class Encoded:
    ids: list[int]
    labels: list[int]

    @property
    def answer_tokens(self) -> int:
        return sum(1 for x in self.labels if x != -100)


def end_of_turn(tokenizer: Any, stop_ids: Sequence[int]) -> list[int]:
    """The tokens the chat template puts after an assistant message, up to its first stop token: what the
    model must emit to end its answer (SmolLM2: <|im_end|>)."""
    probe = [{"role": "user", "content": "x"}]
    prompt = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(probe + [{"role": "assistant", "content": "ANSWER"}], tokenize=False)
    i = full.find("ANSWER", len(prompt) - 1 if full.startswith(prompt) else 0)
    suffix = tokenizer(full[i + len("ANSWER"):], add_special_tokens=False)["input_ids"] if i >= 0 else []
    for n, t in enumerate(suffix):
        if t in stop_ids:
            return suffix[:n + 1]
    return [tokenizer.eos_token_id]


def encode(tokenizer: Any, example: Example, eot: Sequence[int]) -> Encoded:
    """Prompt ids exactly as the reference backend encodes them, then the target ids and the end-of-turn."""
    prompt = tokenizer.apply_chat_template(example.messages, tokenize=False, add_generation_prompt=True)
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    t = tokenizer(example.target, add_special_tokens=False)["input_ids"] + list(eot)
    return Encoded(ids=p + t, labels=[-100] * len(p) + t)


def answer_loss(model: Any, enc: Encoded) -> tuple[Any, int]:
    """(sum of the answer tokens' cross-entropy, number of answer tokens); logits only over the answer."""
    import torch
    import torch.nn.functional as F

    first = next(i for i, x in enumerate(enc.labels) if x != -100)
    if any(x == -100 for x in enc.labels[first:]):
        raise ValueError("labels must be -100 over the prompt and real tokens over the whole answer")
    ids = torch.tensor([enc.ids])
    keep = len(enc.ids) - first + 1
    logits = model(input_ids=ids, logits_to_keep=keep).logits[0, :-1].float()
    target = torch.tensor(enc.labels[first:])
    return F.cross_entropy(logits, target, reduction="sum"), len(target)


def lr_at(step: int, cfg: Any) -> float:
    """Linear warm-up over `warmup` steps, then cosine to 10 % of the peak at the last step."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    span = max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - cfg.warmup) / span))))


def data_order(n: int, total: int, seed: int) -> list[int]:
    """`total` example indices: seeded permutations of range(n), one after another (epochs)."""
    rng = random.Random(seed)
    out: list[int] = []
    while len(out) < total:
        perm = list(range(n))
        rng.shuffle(perm)
        out.extend(perm)
    return out[:total]


# ------------------------------------------------------------------------------------------------ checkpoints
def _lora_state(model: Any) -> dict[str, Any]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(model).items()}


def save_checkpoint(model: Any, opt: Any, step: int, cfg: Any, history: list[dict[str, float]],
                    elapsed: float, extra: Any = None) -> Path:
    """`extra`: a module trained beside the LoRA (the vqa op's projector), saved with it."""
    import torch
    from safetensors.torch import save_file

    root = cfg.checkpoint_dir
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        save_file(_lora_state(model), str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        if extra is not None:
            save_file({k: v.detach().contiguous() for k, v in extra.state_dict().items()},
                      str(tmp / "extra.safetensors"), metadata={"format": "pt"})
        sd = opt.state_dict()
        tensors = {"rng.torch": torch.get_rng_state()}
        for idx, st in sd["state"].items():
            for name, v in st.items():
                tensors[f"state.{idx}.{name}"] = (v if torch.is_tensor(v) else torch.tensor(float(v))).contiguous()
        save_file(tensors, str(tmp / "optimizer.safetensors"), metadata={"format": "pt"})
        (tmp / "state.json").write_text(json.dumps({
            "step": step, "training_key": cfg.training_key(), "param_groups": sd["param_groups"],
            "history": history, "elapsed_s": elapsed}, indent=1))
        final = root / f"step-{step:06d}"
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in sorted(root.glob("step-*"))[:-2]:  # keep the two newest
        shutil.rmtree(old, ignore_errors=True)
    return final


def is_checkpoint_dir(path: Path) -> bool:
    """Only memlora-train's own checkpoints (step-NNNNNN directories, and its temporary ones) may be removed."""
    try:
        return path.is_dir() and not path.is_symlink() and all(
            p.is_dir() and not p.is_symlink() and (p.name.startswith("step-") or p.name.startswith(".tmp-"))
            for p in path.iterdir())
    except OSError:
        return False


def latest_checkpoint(cfg: Any) -> Path | None:
    if not cfg.checkpoint_dir.is_dir():
        return None
    done = [p for p in sorted(cfg.checkpoint_dir.glob("step-*")) if (p / "state.json").exists()]
    return done[-1] if done else None


def load_checkpoint(path: Path, model: Any, opt: Any, cfg: Any,
                    extra: Any = None) -> tuple[int, list[dict[str, float]], float]:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = json.loads((path / "state.json").read_text())
    if state.get("training_key") != cfg.training_key():
        raise InputError(f"checkpoint {path} was made with another training config; pass --restart to start over "
                         f"(or another --out)")
    set_peft_model_state_dict(model, load_file(str(path / "adapter_model.safetensors")))
    if extra is not None:
        extra.load_state_dict(load_file(str(path / "extra.safetensors")))
    t = load_file(str(path / "optimizer.safetensors"))
    opt_state: dict[int, dict[str, Any]] = {}
    for k, v in t.items():
        if k.startswith("state."):
            _, idx, name = k.split(".", 2)
            opt_state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    torch.set_rng_state(t["rng.torch"])
    return int(state["step"]), list(state["history"]), float(state.get("elapsed_s", 0.0))


# ------------------------------------------------------------------------------------------------ scoring
def score_outputs(op: str, items: Sequence[Example], outputs: Sequence[str], embed: Callable[[list[str]], Any] | None
                  ) -> dict[str, Any]:
    """Scores of greedy outputs against the targets.

    extract: json_valid (runtimes.memory.parse accepts it), json_strict (the whole output is one JSON value),
    exact (same fact list), fact precision / recall / F1 (all-MiniLM-L6-v2 cosine >= 0.6, one-to-one, as
    memlora-eval). update: json_valid, json_strict, exact (same events), event_accuracy (share of target events
    that the output has: same event on the same id; ADD: same text). generate: QA F1 / BLEU-1 (LoCoMo
    definitions) and exact match.
    """
    from runtimes.memory import metrics
    from runtimes.memory.parse import ParseError, parse_extract, parse_update

    n = len(items)
    if op == "generate":
        from runtimes.memory.pipeline import clean_answer

        preds = [clean_answer(o) for o in outputs]
        return {"items": n, "f1": metrics.mean([metrics.f1(p, e.target) for p, e in zip(preds, items)]),
                "bleu1": metrics.mean([metrics.bleu1(p, e.target) for p, e in zip(preds, items)]),
                "exact": metrics.mean([float(metrics.tokens(p) == metrics.tokens(e.target)) for p, e in zip(preds, items)])}
    parse = parse_extract if op == "extract" else parse_update
    valid = strict = exact = 0
    matched = n_pred = n_gold = 0
    ev_hit = ev_total = 0
    for e, o in zip(items, outputs):
        gold = parse(e.target)
        try:
            pred = parse(o)
            valid += 1
        except ParseError:
            pred = None
        try:
            json.loads(o.strip())
            strict += 1
        except ValueError:
            pass
        if pred is not None and pred == gold:
            exact += 1
        if op == "extract":
            n_gold += len(gold)
            n_pred += len(pred or [])
            if pred and gold and embed is not None:
                matched += len(metrics.match_facts(embed(list(pred)), embed(list(gold))))
        else:
            ev_total += len(gold)
            for g in gold:
                hit = any(p["event"] == g["event"] and (p["text"] == g["text"] if g["event"] == "ADD" else p["id"] == g["id"])
                          for p in (pred or []))
                ev_hit += hit
    out: dict[str, Any] = {"items": n, "json_valid": valid / n if n else 0.0, "json_strict": strict / n if n else 0.0,
                           "exact": exact / n if n else 0.0}
    if op == "extract":
        out.update({f"fact_{k}": v for k, v in metrics.prf(matched, n_pred, n_gold).items()})
        if embed is None:
            out["fact_f1"] = None
    else:
        out["event_accuracy"] = ev_hit / ev_total if ev_total else 0.0
    return out


# ------------------------------------------------------------------------------------------------ training
def _pick(n: int, k: int, seed: int) -> list[int]:
    idx = list(range(n))
    random.Random(seed).shuffle(idx)
    return sorted(idx[:k])


def train(cfg: TrainConfig, *, train_examples: Sequence[Example], val_examples: Sequence[Example],
          restart: bool = False, progress: bool = True, embed: Callable[[list[str]], Any] | None = None,
          data_info: dict[str, Any] | None = None, stop_after: int | None = None) -> dict[str, Any]:
    """Train, validate and write the adapter directory `cfg.out`. `stop_after` ends the run after that many steps
    with a checkpoint and no output (used to test resuming). Returns the training summary."""
    return run_training(cfg, "adapter directory", restart=restart, stop_after=stop_after,
                        body=lambda: _train(cfg, train_examples, val_examples, progress, embed, data_info, stop_after))


def run_training(cfg: Any, kind: str, *, restart: bool, stop_after: int | None, body: Callable[[], Any]) -> Any:
    """What every memlora-train run does around its own `body`: refuse an unusable `cfg.out` before any work (not
    for a `stop_after` test run, which writes no output), drop the checkpoints on `restart` (only memlora-train's
    own), and run `body` at `cfg.threads` torch threads."""
    import torch

    if stop_after is None:
        try:
            check_output(Path(cfg.out), force=False, owned=never_replaced, kind=kind, inputs=cfg.inputs)
        except OutputDirError as e:
            raise OutputError(str(e)) from None
    if restart and cfg.checkpoint_dir.exists():
        if not is_checkpoint_dir(cfg.checkpoint_dir):
            raise OutputError(f"{cfg.checkpoint_dir} is not a memlora-train checkpoint directory; not removing it")
        shutil.rmtree(cfg.checkpoint_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return body()
    finally:
        torch.set_num_threads(threads)


def _train(cfg: TrainConfig, train_examples: Sequence[Example], val_examples: Sequence[Example], progress: bool,
           embed: Callable[[list[str]], Any] | None, data_info: dict[str, Any] | None,
           stop_after: int | None) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from tqdm import tqdm

    from ..load import load_base
    from ..pipeline import stop_token_ids

    out = Path(cfg.out)
    t_start = time.perf_counter()
    base = load_base(cfg.base)
    tok = base.tokenizer
    stops = stop_token_ids(tok, base.config)
    eot = end_of_turn(tok, stops)

    def encode_all(examples: Sequence[Example]) -> tuple[list[Encoded], list[Example]]:
        encs, kept = [], []
        for e in examples:
            x = encode(tok, e, eot)
            if len(x.ids) <= cfg.max_len:
                encs.append(x)
                kept.append(e)
        return encs, kept

    train_enc, _ = encode_all(train_examples)
    if not train_enc:
        raise InputError(f"no training example fits max_len={cfg.max_len} tokens ({len(train_examples)} examples)")
    val_enc_all, val_kept = encode_all(val_examples)
    val_idx = _pick(len(val_enc_all), cfg.val_examples, cfg.seed + 1)
    val_enc = [val_enc_all[i] for i in val_idx]
    dec_items = []
    for op in ops_of(cfg.op):  # --op all: cfg.val_decode items of every op
        of_op = [e for e in val_kept if e.op == op]
        dec_items += [of_op[i] for i in _pick(len(of_op), cfg.val_decode, cfg.seed + 2)]

    torch.manual_seed(cfg.seed)
    lcfg = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.targets),
                      bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(base.model, lcfg)
    params = [p for p in model.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if cfg.bf16 else None

    def loss_over(encs: Sequence[Encoded]) -> float:
        total, count = 0.0, 0
        model.eval()
        with torch.no_grad():
            for x in encs:
                if autocast:
                    with autocast():
                        s, c = answer_loss(model, x)
                else:
                    s, c = answer_loss(model, x)
                total, count = total + float(s), count + c
        return total / max(count, 1)

    step, history, elapsed = 0, [], 0.0
    ckpt = latest_checkpoint(cfg)  # (--restart removed the checkpoints already)
    if ckpt is not None:
        step, history, elapsed = load_checkpoint(ckpt, model, opt, cfg)
        log.info("resuming from %s (step %d of %d)", ckpt, step, cfg.steps)
    order = data_order(len(train_enc), cfg.steps * cfg.batch, cfg.seed)
    last = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train {cfg.op}", unit="step", disable=not progress,
               dynamic_ncols=True)
    t_loop = time.perf_counter() - elapsed
    model.train()
    while step < last:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        micro = [train_enc[i] for i in order[step * cfg.batch:(step + 1) * cfg.batch]]
        n_tok = sum(x.answer_tokens for x in micro)
        loss_sum = 0.0
        for x in micro:
            if autocast:
                with autocast():
                    s, _ = answer_loss(model, x)
            else:
                s, _ = answer_loss(model, x)
            (s / n_tok).backward()
            loss_sum += float(s.detach())
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        history.append({"step": step, "loss": loss_sum / n_tok, "lr": opt.param_groups[0]["lr"]})
        bar.update(1)
        bar.set_postfix(loss=f"{loss_sum / n_tok:.3f}", lr=f"{opt.param_groups[0]['lr']:.1e}")
        if cfg.val_every and step % cfg.val_every == 0 and step < cfg.steps:
            history[-1]["val_loss"] = loss_over(val_enc)
            model.train()
            bar.write(f"step {step}: validation loss {history[-1]['val_loss']:.4f}")
        if step % cfg.checkpoint_every == 0 or step == last:
            save_checkpoint(model, opt, step, cfg, history, time.perf_counter() - t_loop)
    bar.close()
    train_s = time.perf_counter() - t_loop
    if stop_after is not None and step < cfg.steps:
        return {"stopped_at": step, "history": history}

    # ---------------------------------------------------------------------------------------- validation + output
    t_val = time.perf_counter()
    val = {"val_loss": loss_over(val_enc), "val_items": len(val_enc)}
    if cfg.eval_base:
        with model.disable_adapter():
            val["base_val_loss"] = loss_over(val_enc)
    out.parent.mkdir(parents=True, exist_ok=True)
    od = OutputDir(out, force=False, owned=never_replaced, kind="adapter directory", inputs=cfg.inputs)
    with od as tmp:
        save_adapter(model, cfg.base, tmp)
        if cfg.val_decode:
            val.update(decode_scores(cfg, tmp, dec_items, embed))
        val["seconds"] = time.perf_counter() - t_val
        summary = {
            "op": cfg.op, "config": asdict(cfg), "training_key": cfg.training_key(),
            "base": {"name": base.name, "source": base.source},
            "prompt_template": _template(cfg.op), "end_of_turn_ids": eot,
            "data": {**(data_info or {}), "train_examples": len(train_examples), "train_used": len(train_enc),
                     "train_dropped_too_long": len(train_examples) - len(train_enc),
                     "val_examples": len(val_examples), "val_loss_items": len(val_enc), "val_decode_items": len(dec_items),
                     "examples_seen": cfg.steps * cfg.batch},
            "trainable_params": n_params,
            "seconds": {"train": round(train_s, 1), "total": round(time.perf_counter() - t_start, 1)},
            "history": history,
            "versions": _versions(),
        }
        return commit_output(od, tmp, cfg, summary, val)


def save_adapter(model: Any, base: str, out: Path) -> None:
    """The PEFT adapter as memlora-train ships it: safetensors in fp16, naming its base, no model-card template."""
    model.peft_config["default"].base_model_name_or_path = base
    model.save_pretrained(str(out), safe_serialization=True)
    (out / "README.md").unlink(missing_ok=True)  # PEFT's empty model-card template
    half_precision(out / "adapter_model.safetensors")


def commit_output(od: OutputDir, tmp: Path, cfg: Any, summary: dict[str, Any], val: dict[str, Any]) -> dict[str, Any]:
    """Write training_config.json (`summary`) and validation.json (`val`) into the output being built in `tmp`,
    commit it, and drop the run's checkpoints (unless `cfg.keep_checkpoints`). Returns `summary` with `val`."""
    (tmp / "training_config.json").write_text(json.dumps(summary, indent=1) + "\n")
    (tmp / "validation.json").write_text(json.dumps(val, indent=1) + "\n")
    try:
        od.commit()
    except OutputDirError as e:
        raise OutputError(str(e)) from None
    if not cfg.keep_checkpoints and is_checkpoint_dir(cfg.checkpoint_dir):
        shutil.rmtree(cfg.checkpoint_dir, ignore_errors=True)
    return {**summary, "validation": val}


def half_precision(path: Path) -> None:
    """Rewrite a LoRA safetensors file in float16 (the adapter as committed: half the bytes)."""
    import torch
    from safetensors.torch import load_file, save_file

    t = {k: v.to(torch.float16).contiguous() for k, v in load_file(str(path)).items()}
    save_file(t, str(path), metadata={"format": "pt"})


def decode_scores(cfg: TrainConfig, adapter_dir: Path, items: Sequence[Example],
                  embed: Callable[[list[str]], Any] | None) -> dict[str, Any]:
    """Greedy outputs of the saved (fp16) adapter and of the bare base through the PyTorch reference backend
    (exporter.reference: the inference path), scored by `score_outputs`: {"decode": {"adapter": .., "base": ..}},
    for `--op all` one such pair per op ({"decode": {op: {"adapter": .., "base": ..}}})."""
    from runtimes import prompts

    from ..reference import ReferenceLLM

    ops = ops_of(cfg.op)
    llm = ReferenceLLM(cfg.base, adapters={op: adapter_dir for op in ops}, threads=cfg.threads)
    per_op: dict[str, Any] = {}
    for op in ops:
        its = [e for e in items if e.op == op]
        if not its:
            continue
        max_new = prompts.DEFAULT_GENERATION[op]["max_new_tokens"]
        res: dict[str, Any] = {}
        runs = [("adapter", op)] + ([("base", f"base-{op}")] if cfg.eval_base else [])
        for label, name in runs:  # an op name without an adapter runs on the bare base
            t0 = time.perf_counter()
            outs = [llm.generate(name, messages=e.messages, max_new_tokens=max_new).text for e in its]
            res[label] = score_outputs(op, its, outs, embed)
            res[label]["seconds"] = round(time.perf_counter() - t0, 1)
            res[label]["samples"] = [{"target": e.target, "output": o} for e, o in list(zip(its, outs))[:3]]
        per_op[op] = res
    return {"decode": per_op if cfg.op == ALL else per_op.get(cfg.op, {})}


def ops_of(op: str) -> tuple[str, ...]:
    return OPS if op == ALL else (op,)


def _template(op: str) -> Any:
    from runtimes import prompts

    return prompts.template_for(op) if op != ALL else {o: prompts.template_for(o) for o in OPS}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "transformers", "peft"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
