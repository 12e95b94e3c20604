"""The phone's path on the host: an ExecuTorch bundle run by ExecuTorch's own C++ `TextLLMRunner` against this
project's Python runtime (runtimes/executorch.py), same program, prompts and threads, interleaved.

    PYTHONPATH=. python bench/textllm_runner.py BUNDLE [--ops extract update generate] [--tokens 128] [--rounds 3]

On a phone, Android's `LlmModule` drives the same C++ runner; the README's other speed figures come from the Python
decode loop. Per op: prefill tok/s and decode tok/s of each (medians over rounds), and their ratio. The runner's
Python binding takes one data file, so an op of a separate bundle runs from its data files merged into one
temporary `.ptd` (`merge_data_files`), as the Python runtime loads it; Android's `LlmModule` takes the list.
The runner stops at the bundle's stop tokens, so its decode rate is over the tokens it generated (at least 16).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def runner_run(runner, config, text: str) -> dict[str, float]:
    stats = {}

    def on_stats(s) -> None:
        stats.update(prompt=s.num_prompt_tokens, generated=s.num_generated_tokens, start=s.inference_start_ms,
                     prefilled=s.prompt_eval_end_ms, first=s.first_token_ms, end=s.inference_end_ms)

    runner.reset()
    sys.stdout.flush()
    saved = os.dup(1)  # the runner prints the text and its stats line from C++: keep them off the report
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            runner.generate(text, config, token_callback=lambda _t: None, stats_callback=on_stats)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    return {"prefill_tok_s": stats["prompt"] / max(stats["prefilled"] - stats["start"], 1e-3) * 1e3,
            "decode_tok_s": (stats["generated"] - 1) / max(stats["end"] - stats["first"], 1e-3) * 1e3,
            "generated": stats["generated"]}


def python_run(rt, op: str, ids: list[int], n: int) -> dict[str, float]:
    import numpy as np

    t0 = time.perf_counter()
    logits = rt.forward(op, ids, 0)
    t1 = time.perf_counter()
    for i in range(n - 1):
        logits = rt.forward(op, [int(np.argmax(logits))], len(ids) + i)
    t2 = time.perf_counter()
    return {"prefill_tok_s": len(ids) / (t1 - t0), "decode_tok_s": (n - 1) / (t2 - t1), "generated": n}


def fidelity_messages(op: str) -> list[dict[str, str]]:
    """The op's first fixed fidelity prompt (runtimes/prompts.py), the prompt every bench here uses."""
    from runtimes import prompts

    tpl = prompts.template_for(op)
    return prompts.render(tpl, **prompts.FIDELITY_SAMPLES[tpl][0])


def op_runners(rt, ops: list[str], tmp: Path) -> tuple[dict, dict]:
    """Per op a TextLLMRunner on the bundle's program and data (an op's data files merged into one `.ptd` under
    `tmp`: the binding takes one) and the op's prompt text, chat-formatted as the bundle formats it."""
    from executorch.extension.llm.runner import TextLLMRunner

    from runtimes.executorch import merge_data_files, program_files

    m = rt.manifest
    runners, texts = {}, {}
    for op in ops:
        program, data = program_files(m, op)
        if len(data) > 1:
            merged = tmp / f"{op}.ptd"
            merge_data_files(data, merged)
            data = [merged]
        runners[op] = TextLLMRunner(str(program), str(m.path(m.raw["tokenizer"]["file"])),
                                    str(data[0]) if data else None)
        texts[op] = rt.apply_chat_template(fidelity_messages(op))
    return runners, texts


def greedy_config(max_new_tokens: int):
    from executorch.extension.llm.runner import GenerationConfig

    config = GenerationConfig()
    config.max_new_tokens = max_new_tokens
    config.temperature = 0.0
    config.echo = False
    config.num_bos = 0  # the chat format writes its own special tokens
    config.num_eos = 0
    return config


def interleaved_medians(ops: list[str], rounds: int, measure) -> dict[str, dict[str, dict[str, float]]]:
    """`measure(op) -> {name: run}` for every op, round after round (round 0 warms up and is dropped); per op and
    name, the median of each run field."""
    runs: dict[str, dict[str, list[dict]]] = {op: {} for op in ops}
    for rnd in range(rounds + 1):
        for op in ops:
            for name, run in measure(op).items():
                if rnd:
                    runs[op].setdefault(name, []).append(run)
    return {op: {name: {f: statistics.median(r[f] for r in rs) for f in rs[0]} for name, rs in by_name.items()}
            for op, by_name in runs.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle")
    p.add_argument("--ops", nargs="+")
    p.add_argument("--tokens", type=int, default=128, help="max new tokens (the runner stops earlier at a stop token)")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()

    from runtimes.factory import open_bundle

    rt = open_bundle(a.bundle, backend="executorch")
    ops = a.ops or list(rt.manifest.ops)
    tmp = tempfile.TemporaryDirectory(prefix="memlora-bench-")
    runners, texts = op_runners(rt, ops, Path(tmp.name))
    ids = {op: rt.encode(fidelity_messages(op)) for op in ops}
    config = greedy_config(a.tokens)

    def measure(op: str) -> dict[str, dict]:
        r = runner_run(runners[op], config, texts[op])
        return {"runner": r, "python": python_run(rt, op, ids[op], max(16, r["generated"]))}

    med = interleaved_medians(ops, a.rounds, measure)
    print(f"{'op':<9} {'prompt':>6} {'new':>4} {'runner prefill':>14} {'python prefill':>14} {'runner decode':>13} "
          f"{'python decode':>13} {'decode runner/python':>20}")
    for op in ops:
        r, q = med[op]["runner"], med[op]["python"]
        print(f"{op:<9} {len(ids[op]):>6} {r['generated']:>4.0f} {r['prefill_tok_s']:>14.0f} {q['prefill_tok_s']:>14.0f} "
              f"{r['decode_tok_s']:>13.1f} {q['decode_tok_s']:>13.1f} {r['decode_tok_s'] / q['decode_tok_s']:>19.2f}x")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
