"""`memlora-eval`: the memory pipeline over LoCoMo-format conversations, on the PyTorch reference or a bundle.

Per conversation: a fresh SQLite store; every session's turns go through `add_turns` in windows of `--window`
turns (extract -> update); then each QA question of categories 1-4 goes through `answer`. Reported:
- extraction precision / recall of the extracted facts against the window's `observation` facts (matching:
  runtimes/memory/metrics.py, all-MiniLM-L6-v2 cosine >= --match-threshold, one-to-one);
- JSON validity per op (extract, update): the share of calls whose output runtimes.memory.parse accepts;
- QA F1 and BLEU-1 per category 1-4 (LoCoMo / Mem0 definitions, metrics.py), and an LLM-judge accuracy when
  --judge-url names an OpenAI-compatible endpoint;
- time per conversation and per op call.
Writes report.json and report.md into --out, and prints the Markdown table.

`--visual` (MemLoRA-V; a bundle exported with --vision): the same conversations with image-sharing turns added and
questions about those images (runtimes/memory/visual.py), each conversation memorised and asked once per path:
`text` (without the visual turns), `caption` (a caption written by the vision op at share time, text pipeline only:
the paper's baseline), `pixels` (images kept in the store, questions about them answered by the vision op), and on
request `gold-caption` (each image replaced by a perfect caption, "a red circle": the caption path's upper bound).
Reported per path: visual-question accuracy (per kind), and the text QA F1 with and without the visual turns.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ..clikit import Parser, quiet_startup, run_main
from ..errors import MemloraError
from ..factory import BACKEND_CHOICES, BACKEND_HELP
from ..outdir import OutputDir, OutputError, json_file_has
from . import locomo, metrics

PROG = "memlora-eval"
log = logging.getLogger("memlora.eval")


class EvalError(Exception):
    """Bad input for the evaluation (data, bundle, adapters, endpoint)."""


# ------------------------------------------------------------------------------------------------------- judge
JUDGE_PROMPT = """You grade answers to questions about a long conversation.
Question: {question}
Gold answer: {gold}
Generated answer: {pred}
The generated answer is CORRECT if it refers to the same thing as the gold answer (it may be longer, phrased
differently, or give a date in another format for the same day or period); otherwise it is WRONG.
Reply only with JSON: {{"label": "CORRECT"}} or {{"label": "WRONG"}}."""


def judge(url: str, model: str, question: str, gold: str, pred: str, api_key: str | None, timeout: float = 60) -> bool:
    import urllib.request

    body = json.dumps({"model": model, "temperature": 0, "messages": [
        {"role": "user", "content": JUDGE_PROMPT.format(question=question, gold=gold, pred=pred)}]}).encode()
    req = urllib.request.Request(url.rstrip("/") + "/chat/completions", data=body, method="POST",
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {api_key}"} if api_key else {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            content = json.loads(r.read())["choices"][0]["message"]["content"]
    except Exception as e:
        raise EvalError(f"judge endpoint {url} failed: {type(e).__name__}: {e}") from e
    return "CORRECT" in content.upper() and "WRONG" not in content.upper()


# ------------------------------------------------------------------------------------------------------- backends
Reference = Callable[[argparse.Namespace], "tuple[Any, Any, dict[str, Any]]"]
"""Makes the backend when no --bundle is given: (llm, embedder, description). The PyTorch reference loads models
with the exporter, so it is passed in by the `memlora-eval` entry point (exporter.reference.eval_main)."""
Shots = Callable[[argparse.Namespace, "list[str]"], "dict[str, list[Any]]"]
"""Gives `--few-shot` its examples: (args, the sample_ids evaluated) -> per op a list of `fewshot.Shot`, drawn from
the training conversations. Built from the training data (exporter.train.data), so also passed in by the entry
point."""


def make_backend(args: argparse.Namespace, reference: Reference | None = None) -> tuple[Any, Any, dict[str, Any]]:
    from ..factory import open_bundle
    from .embed import make_embedder

    if args.bundle:
        llm = open_bundle(args.bundle, backend=args.backend)
        m = llm.manifest
        embedder = make_embedder(args.embedder, args.bundle)
        desc = {"backend": "bundle", "runtime": llm.backend, "bundle": str(args.bundle),
                "model": m.raw["model"]["name"], "quantization": m.raw["quantization"]["scheme"],
                "strategy": m.raw["strategy"]}
    else:
        if reference is None:
            raise EvalError("the PyTorch reference backend comes with the exporter: run memlora-eval "
                            "(exporter.reference), or give --bundle")
        llm, embedder, desc = reference(args)
    desc["embedder"] = getattr(embedder, "kind", "?")
    return llm, embedder, desc


# ------------------------------------------------------------------------------------------------------- evaluation
def file_safe(name: str) -> str:
    """A sample_id as a plain file-name part (the data is input: an id like '../x' must not name a path)."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64]
    return safe if safe == name else f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def is_eval_report(path: Path) -> bool:
    """An earlier memlora-eval output (what --force may replace)."""
    return json_file_has(path / "report.json", lambda r: r.get("tool") == PROG or ("qa" in r and "extraction" in r
                                                                                   and "config" in r))


def progress(items: list[Any], desc: str, unit: str, stream: Any = None) -> Any:
    """Iterate `items` with progress on `stream` (stderr): tqdm's bar on a terminal; elsewhere (a log file, CI) a
    line at every tenth of the way with the elapsed time, so a run minutes long is never silent."""
    from tqdm import tqdm

    stream = stream or sys.stderr
    if stream.isatty():
        yield from tqdm(items, desc=desc, unit=unit, file=stream, leave=False)
        return
    n, t0 = len(items), time.perf_counter()
    every = max(1, -(-n // 10))
    for i, x in enumerate(items, 1):
        yield x
        if i % every == 0 and i < n:
            print(f"{PROG}: {desc} {i}/{n} ({time.perf_counter() - t0:.0f} s)", file=stream, flush=True)


def evaluate_conversation(conv: locomo.Conversation, pipe_factory: Any, scorer: Any, args: argparse.Namespace,
                          judge_fn: Any = None, visual_questions: list[Any] | None = None,
                          path_name: str | None = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    suffix = f"-{path_name}" if path_name else ""
    store_path = Path(args.store_dir) / f"store-{file_safe(conv.sample_id)}{suffix}.sqlite"
    pipe = pipe_factory(store_path, conv.sample_id)
    sessions = conv.sessions[: args.max_sessions] if args.max_sessions else conv.sessions
    kept = {s.index for s in sessions}
    windows = [w for w in conv.windows(args.window) if w.session in kept]
    ext = {"pred": 0, "gold": 0, "matched": 0}
    applied = {"added": 0, "updated": 0, "deleted": 0, "unchanged": 0, "skipped": 0}
    examples: list[dict[str, Any]] = []
    extracted: list[dict[str, Any]] = []
    for w in progress(windows, f"{conv.sample_id} memorise", "win"):
        try:
            res = pipe.add_turns(w.turns, w.date)
        except ValueError as e:  # a turn's shared image cannot be read (the data names a file that is not an image)
            pipe.store.close()
            raise EvalError(f"{conv.sample_id}: {e}") from None
        pe = scorer(res.facts) if res.facts else None
        ge = scorer(w.gold_facts) if w.gold_facts else None
        matched = metrics.match_facts(pe, ge, args.match_threshold) if pe is not None and ge is not None else []
        ext["pred"] += len(res.facts)
        ext["gold"] += len(w.gold_facts)
        ext["matched"] += len(matched)
        for a in res.applied:
            applied["added"] += len(a.added)
            applied["updated"] += len(a.updated)
            applied["deleted"] += len(a.deleted)
            applied["unchanged"] += a.unchanged
            applied["skipped"] += len(a.skipped)
        extracted.append({"dia_ids": w.dia_ids, "facts": res.facts,
                          "matched": [[int(i), int(j)] for i, j, *_ in matched]})
        if len(examples) < 3:
            examples.append({"dia_ids": w.dia_ids, "facts": res.facts, "gold": w.gold_facts,
                             "raw": [c.text for c in res.calls[:2]]})
    t_mem = time.perf_counter() - t0
    # A session slice is only asked what it contains: questions whose evidence lies in the kept sessions.
    questions = conv.questions(sessions=kept if args.max_sessions else None)
    if args.max_questions:
        questions = questions[: args.max_questions]
    qa = []
    for q in progress(questions, f"{conv.sample_id} answer", "q"):
        a = pipe.answer(q["question"])
        gold = str(q["answer"])
        item = {"category": q["category"], "question": q["question"], "gold": gold, "prediction": a.text,
                "f1": metrics.f1(a.text, gold), "bleu1": metrics.bleu1(a.text, gold),
                "evidence": [str(e) for e in q.get("evidence") or []],
                "retrieved": [[m.id, round(s, 4)] for m, s in a.memories],
                "turns": [[t.turn_id or t.id, round(s, 4)] for t, s in a.turns]}
        if judge_fn:
            item["judge"] = judge_fn(q["question"], gold, a.text)
        qa.append(item)
    vis = []
    if visual_questions:
        from . import visual

        vocab = visual.answer_words()
        for vq in visual_questions:
            a = pipe.answer(vq.question)
            vis.append({**vq.to_dict(), "prediction": a.text, "correct": visual.correct(a.text, vq.answer, vocab),
                        "op": a.call.op, "image_turn": a.image[0].turn_id if a.image else None,
                        "image_score": round(a.image[1], 4) if a.image else None})
    calls = [c.to_dict() for c in pipe.calls]
    pipe.store.close()
    return {"sample_id": conv.sample_id, "sessions": len(sessions), "windows": len(windows), "questions": len(qa),
            "seconds": round(time.perf_counter() - t0, 1), "memorise_seconds": round(t_mem, 1),
            "memories": applied, "extraction_counts": ext, "qa": qa, "calls": calls, "examples": examples,
            "windows_extracted": extracted, "visual": vis}


def qa_summary(qa_items: list[dict[str, Any]]) -> dict[str, Any]:
    """Per category 1-4 and "overall": name, n, mean F1 and BLEU-1 (and the judge's accuracy when it ran)."""
    qa: dict[str, Any] = {}
    for cat in (*locomo.QA_CATEGORIES, "overall"):
        items = qa_items if cat == "overall" else [q for q in qa_items if q["category"] == cat]
        row = {"name": locomo.CATEGORY_NAMES.get(cat, "all 1-4") if cat != "overall" else "all 1-4", "n": len(items),
               "f1": metrics.mean([q["f1"] for q in items]), "bleu1": metrics.mean([q["bleu1"] for q in items])}
        if items and "judge" in items[0]:
            row["judge"] = metrics.mean([float(q["judge"]) for q in items])
        qa[str(cat)] = row
    return qa


def summarise(convs: list[dict[str, Any]], args: argparse.Namespace, desc: dict[str, Any]) -> dict[str, Any]:
    calls = [c for r in convs for c in r["calls"]]
    validity = {}
    for op in ("extract", "update"):
        oc = [c for c in calls if c["op"] == op]
        ok = sum(1 for c in oc if c["ok"])
        validity[op] = {"valid": ok, "calls": len(oc), "rate": ok / len(oc) if oc else None,
                        "truncated": sum(1 for c in oc if c["stop_reason"] == "max_new_tokens")}
    timing = {}
    for op in ("extract", "update", "generate", "caption", "vqa"):
        oc = [c for c in calls if c["op"] == op]
        if not oc and op in ("caption", "vqa"):
            continue
        timing[op] = {"calls": len(oc), "mean_ms": metrics.mean([c["ms"] for c in oc]),
                      "mean_prompt_tokens": metrics.mean([c["prompt_tokens"] for c in oc]),
                      "mean_new_tokens": metrics.mean([c["new_tokens"] for c in oc])}
    ext = {k: sum(r["extraction_counts"][k] for r in convs) for k in ("pred", "gold", "matched")}
    qa = qa_summary([q for r in convs for q in r["qa"]])
    return {
        "config": {**desc, "data": str(args.data), "split": args.split, "window": args.window,
                   "update_batch": args.update_batch, "top_k": args.top_k,
                   "answer_turns": args.answer_turns, "turn_ranking": args.turn_ranking, "constrained": args.constrained,
                   "add_to_empty_store": args.add_to_empty_store,
                   "max_new_tokens": args.max_new_tokens,
                   "match_threshold": args.match_threshold, "max_sessions": args.max_sessions,
                   "max_questions": args.max_questions},
        "conversations": [{k: r[k] for k in ("sample_id", "sessions", "windows", "questions", "seconds",
                                             "memorise_seconds", "memories")} for r in convs],
        "extraction": {**ext, **metrics.prf(ext["matched"], ext["pred"], ext["gold"]),
                       "threshold": args.match_threshold},
        "json_validity": validity,
        "qa": qa,
        "timing": {"total_seconds": round(sum(r["seconds"] for r in convs), 1), "per_op": timing},
    }


def markdown(rep: dict[str, Any]) -> str:
    c = rep["config"]
    name = c.get("model", "?") + (f" + adapters ({', '.join(c['adapters'])})" if c.get("adapters") else "")
    if c["backend"] == "bundle":
        name = f"bundle {c['bundle']} ({c['quantization']}, {c['strategy']})"
    v, e = rep["json_validity"], rep["extraction"]

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}%"

    lines = [f"## memlora-eval: {name}", "",
             f"{len(rep['conversations'])} conversation(s) ({', '.join(x['sample_id'] for x in rep['conversations'])}), "
             f"constrained decoding {'on' if c['constrained'] else 'off'}, window {c['window']} turns, "
             f"answers from {c['top_k']} memories + {c.get('answer_turns', 0)} turns"
             f"{' (' + c['turn_ranking'] + ')' if c.get('answer_turns') and c.get('turn_ranking') else ''}, "
             f"embedder {c['embedder']}", "",
             "| metric | value |", "| --- | --- |",
             f"| extraction precision / recall (cos >= {e['threshold']}) | {pct(e['precision'])} / {pct(e['recall'])} "
             f"({e['matched']} matched, {e['pred']} extracted, {e['gold']} gold) |",
             f"| JSON validity extract | {pct(v['extract']['rate'])} ({v['extract']['valid']}/{v['extract']['calls']}) |",
             f"| JSON validity update | {pct(v['update']['rate'])} ({v['update']['valid']}/{v['update']['calls']}) |",
             "", "| category | n | F1 | BLEU-1 |" + (" judge |" if "judge" in rep["qa"]["overall"] else ""),
             "| --- | --- | --- | --- |" + (" --- |" if "judge" in rep["qa"]["overall"] else "")]
    for cat, row in rep["qa"].items():
        label = f"{cat} {row['name']}" if cat != "overall" else "**all 1-4**"
        if not row["n"]:
            lines.append(f"| {label} | 0 | - | - |" + (" - |" if "judge" in rep["qa"]["overall"] else ""))
            continue
        lines.append(f"| {label} | {row['n']} | {100 * row['f1']:.1f} | {100 * row['bleu1']:.1f} |"
                     + (f" {pct(row.get('judge'))} |" if "judge" in row else ""))
    lines += ["", "| conversation | sessions | windows | questions | seconds |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {x['sample_id']} | {x['sessions']} | {x['windows']} | {x['questions']} | {x['seconds']} |"
              for x in rep["conversations"]]
    t = rep["timing"]["per_op"]
    lines += ["", "| op | calls | mean ms | mean prompt tokens | mean new tokens |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {op} | {r['calls']} | {r['mean_ms']:.0f} | {r['mean_prompt_tokens']:.0f} | {r['mean_new_tokens']:.0f} |"
              for op, r in t.items()]
    return "\n".join(lines) + "\n"


def visual_markdown(rep: dict[str, Any]) -> str:
    """The --visual table: per path, accuracy on the visual questions and text QA F1."""
    v = rep["visual"]
    b = v["benchmark"]

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    lines = [f"## memlora-eval --visual: {rep['config'].get('bundle', '?')}", "",
             f"{b['shares_per_conversation']} image shares per conversation (easy-VQA test images, seed {b['seed']}), "
             f"{b['questions_per_image']} questions each, asked after the whole conversation.", "",
             "| path | visual questions | accuracy | colour | shape | yes/no | to the vision op | right image "
             "| text QA F1 (n) | extraction P / R |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, c in v["paths"].items():
        vs, qa, e = c["visual"], c["qa"]["overall"], c["extraction"]
        lines.append(f"| {name} | {vs['all']['n']} | {pct(vs['all']['accuracy'])} | {pct(vs['color']['accuracy'])} | "
                     f"{pct(vs['shape']['accuracy'])} | {pct(vs['yes/no']['accuracy'])} | {vs['routed_to_vqa']} | "
                     f"{vs['image_retrieved'] if name == 'pixels' else '-'} | {100 * qa['f1']:.1f} ({qa['n']}) | "
                     f"{pct(e['precision'])} / {pct(e['recall'])} |")
    lines += ["", "text: without the visual turns; caption: a caption written by the vision op when the image is "
              "shared, then the text pipeline (the paper's baseline); gold-caption: a perfect caption instead; "
              "pixels: the image kept in the store and questions about it answered by the vision op (MemLoRA-V)."]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    from .pipeline import PipelineConfig

    p = Parser(prog=PROG, description="Evaluate the memory pipeline on LoCoMo-format conversations.")
    p.add_argument("--data", default=str(locomo.DEFAULT_DATA), help="LoCoMo JSON (default: ../shared/data/locomo_dev.json)")
    p.add_argument("--split", default="val", choices=["val", "train", "all"],
                   help="conversations to use (val: the last 2 of the file, or --split-file's)")
    p.add_argument("--split-file", default=None, help='JSON {"train": [sample_id...], "val": [...]}')
    p.add_argument("--conversations", default=None, help="comma-separated sample_ids (overrides --split)")
    p.add_argument("--limit", type=int, default=None, help="at most this many conversations")
    p.add_argument("--max-sessions", type=int, default=None, help="only the first N sessions of each conversation (and only questions whose evidence lies in them)")
    p.add_argument("--max-questions", type=int, default=None, help="only the first N questions (cat. 1-4) of each")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--bundle", default=None, help="evaluate an exported bundle (ExecuTorch runtime)")
    g.add_argument("--reference", action="store_true", help="evaluate the PyTorch reference (the default)")
    p.add_argument("--backend", choices=list(BACKEND_CHOICES), default="auto", help=BACKEND_HELP)
    p.add_argument("--base", default="smollm2-135m", help="reference base model (embedded name or HF directory)")
    p.add_argument("--adapters", nargs="*", default=None, metavar="DIR|OP=DIR",
                   help="reference adapters: a directory with one sub-directory per op, or OP=DIR items")
    p.add_argument("--embedder", default="auto", choices=["auto", "torch", "bundle"],
                   help="retrieval embedder (auto: the bundle's when it has one, else PyTorch)")
    p.add_argument("--constrained", action=argparse.BooleanOptionalAction, default=True,
                   help="decode extract/update under their JSON-schema mask (default: on; --no-constrained decodes "
                        "freely, as the Android app does)")
    p.add_argument("--max-new-tokens", default=None, metavar="OP=N,...",
                   help="per-op generation length, e.g. extract=128,update=160 (default: the bundle's / built-in)")
    p.add_argument("--add-to-empty-store", action=argparse.BooleanOptionalAction, default=True,
                   help="ADD the facts that meet an empty store without an update call (pipeline default)")
    p.add_argument("--window", type=int, default=locomo.WINDOW, help="turns per extraction window")
    p.add_argument("--update-batch", type=int, default=4, help="facts per update call")
    p.add_argument("--few-shot", type=int, default=0, metavar="K",
                   help="show the model K worked examples per op from the training conversations before each prompt "
                        "(the few-shot baseline for a model without adapters; default 0)")
    p.add_argument("--top-k", type=int, default=10, help="memories retrieved per question")
    p.add_argument("--answer-turns", type=int, default=PipelineConfig.answer_turns,
                   help="conversation turns shown beside the memories per question (0: memories only, the paper's "
                        f"pipeline; default {PipelineConfig.answer_turns})")
    p.add_argument("--turn-ranking", choices=["hybrid", "cosine"], default=PipelineConfig.turn_ranking,
                   help="how those turns are chosen: cosine + BM25 rank fusion (default) or cosine alone")
    p.add_argument("--match-threshold", type=float, default=metrics.FACT_MATCH_THRESHOLD,
                   help="cosine for a predicted fact to match a gold observation")
    p.add_argument("--visual", action="store_true",
                   help="the visual memory benchmark (MemLoRA-V; needs a bundle exported with --vision): image "
                        "shares and questions about them added to the conversations, run per path (--visual-paths)")
    p.add_argument("--visual-paths", default="text,caption,pixels", metavar="PATH,...",
                   help="text (no visual turns), caption (caption-based baseline), gold-caption (the caption "
                        "baseline's upper bound: each image replaced by a perfect caption), pixels (images kept, "
                        "vision op)")
    p.add_argument("--visual-shares", type=int, default=6, help="image shares added per conversation")
    p.add_argument("--visual-seed", type=int, default=0, help="seed of the visual benchmark")
    p.add_argument("--judge-url", default=None, help="OpenAI-compatible base URL (…/v1) for an LLM-judge score")
    p.add_argument("--judge-model", default="gpt-4o-mini")
    p.add_argument("--judge-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    p.add_argument("--out", default="memlora_eval", help="output directory to create (report.json, report.md, stores)")
    p.add_argument("--force", action="store_true", help="replace an earlier memlora-eval output at --out")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--debug", "--verbose", "-v", dest="debug", action="store_true",
                   help="show library logs and warnings, and tracebacks")
    return p


def run(args: argparse.Namespace, reference: Reference | None = None, shots: Shots | None = None) -> dict[str, Any]:
    from .embed import TorchEmbedder
    from .pipeline import MemoryPipeline, PipelineConfig
    from .store import MemoryStore

    data = Path(args.data)
    if not data.is_absolute() and not data.exists() and args.data == str(locomo.DEFAULT_DATA):
        data = Path(__file__).resolve().parents[2] / locomo.DEFAULT_DATA  # ../shared/data beside the repository
    args.data = str(data)
    try:
        convs = locomo.load(args.data)
        if not args.conversations:
            convs = locomo.split(convs, args.split, args.split_file)
    except (FileNotFoundError, ValueError) as e:
        raise EvalError(str(e)) from None
    if args.conversations:
        wanted = [x.strip() for x in args.conversations.split(",") if x.strip()]
        missing = sorted(set(wanted) - {c.sample_id for c in convs})
        if missing:
            raise EvalError(f"--conversations: {missing} not in {args.data}; it has {[c.sample_id for c in convs]}")
        convs = [c for c in convs if c.sample_id in wanted]
    if args.limit:
        convs = convs[: args.limit]
    if not convs:
        raise EvalError("no conversation selected")
    for name in ("window", "update_batch", "top_k"):
        if getattr(args, name) < 1:
            raise EvalError(f"--{name.replace('_', '-')} must be >= 1")
    if args.answer_turns < 0:
        raise EvalError("--answer-turns must be >= 0")
    if not 0 <= args.few_shot <= 8:
        raise EvalError("--few-shot must be between 0 and 8")
    if args.few_shot and shots is None:
        raise EvalError("--few-shot takes its examples from the training data, which comes with the exporter: "
                        "run memlora-eval (exporter.reference)")
    inputs = [args.data, args.split_file, args.bundle,
              *[a.partition("=")[2] or a for a in (args.adapters or [])],
              *([args.base] if Path(args.base).exists() else [])]
    od = OutputDir(args.out, force=args.force, owned=is_eval_report, kind="memlora-eval output", inputs=inputs)
    od.check()  # before minutes of model work
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    max_new: dict[str, int] = {}
    for item in (args.max_new_tokens or "").split(","):
        if item.strip():
            op, sep, n = item.partition("=")
            if not sep or not n.strip().isdigit() or op.strip() not in ("extract", "update", "generate"):
                raise EvalError(f"--max-new-tokens expects OP=N items (ops extract, update, generate), got {item!r}")
            max_new[op.strip()] = int(n)
    paths: list[str] = []
    if args.visual:
        paths = [x.strip() for x in args.visual_paths.split(",") if x.strip()]
        bad = [x for x in paths if x not in VISUAL_PATHS]
        if bad or not paths or len(set(paths)) != len(paths):
            raise EvalError(f"--visual-paths takes distinct items of {', '.join(VISUAL_PATHS)}, got {args.visual_paths!r}")
        if not args.bundle:
            raise EvalError("--visual runs on a bundle exported with --vision (memlora-export --vision); give --bundle")
        if not 1 <= args.visual_shares <= 24:
            raise EvalError("--visual-shares must be between 1 and 24")
    examples = shots(args, [c.sample_id for c in convs]) if args.few_shot else None  # refused before models load
    llm, embedder, desc = make_backend(args, reference)
    if examples is not None:
        from .fewshot import FewShotLLM

        if getattr(llm, "adapters", None) or (getattr(llm, "manifest", None) is not None
                                              and llm.manifest.raw.get("strategy") != "none"):
            print(f"{PROG}: note: --few-shot on a model with adapters: the shots come on top of what they learnt",
                  file=sys.stderr)
        llm = FewShotLLM(llm, examples)
        desc["few_shot"] = args.few_shot
    vision = None
    if args.visual:
        from . import visual

        try:
            visual.answer_words()  # the benchmark's images come from easy-vqa
        except visual.VisualDataError as e:
            raise EvalError(str(e)) from None
        if set(paths) - {"text", "gold-caption"}:
            from ..vision import VisionRunner

            vision = VisionRunner(llm.manifest, backend="onnx" if getattr(llm, "backend", None) == "onnx"
                                  else "executorch")  # the text ops' backend runs the vision op too
    scorer_model = embedder if isinstance(embedder, TorchEmbedder) else TorchEmbedder()
    config = PipelineConfig(update_batch=args.update_batch, answer_top_k=args.top_k, answer_turns=args.answer_turns,
                            turn_ranking=args.turn_ranking,
                            constrained=args.constrained,
                            add_to_empty_store=args.add_to_empty_store,
                            max_new_tokens=max_new)

    def pipe_factory(path: Path, owner: str, images: str | None = None) -> MemoryPipeline:
        cfg = dataclasses.replace(config, images=images) if images in ("pixels", "caption") else config
        return MemoryPipeline(llm, embedder, MemoryStore(path), owner=owner, config=cfg,
                              vision=vision if images in ("pixels", "caption") else None)

    judge_fn = None
    if args.judge_url:
        key = os.environ.get(args.judge_key_env)

        def judge_fn(q: str, gold: str, pred: str) -> bool:
            return judge(args.judge_url, args.judge_model, q, gold, pred, key)

    results = []
    with od as tmp:
        args.store_dir = tmp
        if not args.visual:
            for conv in convs:
                r = evaluate_conversation(conv, pipe_factory, scorer_model.embed, args, judge_fn)
                print(f"{PROG}: {conv.sample_id}: {r['windows']} windows, {r['questions']} questions in "
                      f"{r['seconds']:.0f} s", file=sys.stderr)
                results.append(r)
            rep = summarise(results, args, desc)
            extra: dict[str, Any] = {}
            md = markdown(rep)
        else:
            rep, extra, md = run_visual(convs, paths, pipe_factory, scorer_model.embed, args, judge_fn, desc)
            results = extra.pop("primary")
        (tmp / "report.json").write_text(json.dumps({"tool": PROG, **rep, "details": results, **extra}, indent=1)
                                         + "\n")
        (tmp / "report.md").write_text(md)
        od.commit()
    return {"report": rep, "markdown": md}


VISUAL_PATHS = ("text", "caption", "gold-caption", "pixels")


def run_visual(convs: list[locomo.Conversation], paths: list[str], pipe_factory: Any, scorer: Any,
               args: argparse.Namespace, judge_fn: Any, desc: dict[str, Any]
               ) -> tuple[dict[str, Any], dict[str, Any], str]:
    """--visual: every conversation once per path (module docstring). (report, extra report.json keys, Markdown);
    the report's top-level figures are those of the last path."""
    from functools import partial

    from . import visual

    per_path: dict[str, list[dict[str, Any]]] = {p: [] for p in paths}
    for conv in convs:
        kept = [s.index for s in (conv.sessions[: args.max_sessions] if args.max_sessions else conv.sessions)]
        aug, questions = visual.augment(conv, seed=args.visual_seed, shares=args.visual_shares, sessions=kept)
        gold = visual.with_gold_captions(aug) if "gold-caption" in paths else None
        for name in paths:
            source = {"text": conv, "gold-caption": gold}.get(name, aug)
            r = evaluate_conversation(source, partial(pipe_factory, images=name), scorer,
                                      args, judge_fn, visual_questions=None if name == "text" else questions,
                                      path_name=name)
            ok = sum(v["correct"] for v in r["visual"])
            print(f"{PROG}: {conv.sample_id} [{name}]: {r['windows']} windows, {r['questions']} questions"
                  + (f", visual {ok}/{len(r['visual'])} right" if name != "text" else "")
                  + f" in {r['seconds']:.0f} s", file=sys.stderr)
            per_path[name].append(r)
    summaries = {}
    for name, rs in per_path.items():
        summaries[name] = {**summarise(rs, args, desc), "visual": visual.summary([v for r in rs for v in r["visual"]])}
    primary = paths[-1]
    rep = {**summaries[primary], "visual": {
        "benchmark": {"source": "easy-vqa test", "seed": args.visual_seed, "shares_per_conversation": args.visual_shares,
                      "questions_per_image": 2, "paths": paths},
        "paths": summaries}}
    rep["config"]["visual"] = True
    extra = {"primary": per_path[primary], "visual_details": {n: rs for n, rs in per_path.items() if n != primary}}
    return rep, extra, visual_markdown(rep) + "\n" + markdown(rep)


def main(argv: list[str] | None = None, reference: Reference | None = None, shots: Shots | None = None) -> int:
    """The memlora-eval CLI; `reference`: the backend without --bundle (the console script passes the PyTorch
    reference: exporter.reference.eval_main)."""
    args = build_parser().parse_args(argv)
    quiet_startup(args.debug, PROG)
    if not args.debug:
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
        except ImportError:
            pass
    from ..manifest import BundleError

    state: dict[str, Any] = {}

    def body() -> int:
        state["result"] = run(args, reference, shots)
        return 0

    code = run_main(PROG, body, debug=args.debug, user_errors=(EvalError, MemloraError, BundleError, OutputError),
                    interrupted="no report was written")
    if code:
        return code
    print(state["result"]["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
