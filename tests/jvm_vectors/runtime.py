"""Runtime vectors: the profiler's reading of a runner stats line, the LM's byte-level BPE tokenizer (the ONNX
backend's) and runtimes.base.Runtime's decoding loop over scripted steps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


# A `PyTorchObserver` stats line as ExecuTorch 1.5.1's LLM runner (TextLLMRunner, what Android's LlmModule wraps)
# printed it in this project for a separate-adapter bundle: the app's LlmCallback.onStats receives this JSON.
RUNNER_STATS = ('{"prefill_token_per_sec":16000,"decode_token_per_sec":4875,"prompt_tokens":128,"generated_tokens":39,'
                '"model_load_start_ms":1795353505223,"model_load_end_ms":1795353505225,"inference_start_ms":1795353505225,'
                '"inference_end_ms":1795353505241,"model_execution_start_ms":1795353505241,"model_execution_end_ms":1795353505241,'
                '"prompt_eval_end_ms":1795353505233,"first_token_ms":1795353505233,"aggregate_sampling_time_ms":1,'
                '"aggregate_model_execution_time_ms":15,"SCALING_FACTOR_UNITS_PER_SECOND":1000}')


def bench_vectors() -> dict[str, Any]:
    """The profiler's reading of a runner stats line (runtimes.profiler.adb.parse_observer) and of a device result."""
    from runtimes.profiler.adb import parse_observer

    run = parse_observer("PyTorchObserver " + RUNNER_STATS)
    run.pop("raw", None)
    return {"stats": RUNNER_STATS, "run": run}


# ---------------------------------------------------------------------------------------------------- ONNX path: BPE + loop
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
                r"\s+(?!\S)|\s+")
BPE_TEXTS = [
    "", "Hello world", "Hello  world!!   I'm   here", "I'm you're they've we'll she'd it's DON'T We'RE", "12345 3.14159 1,000,000 2023-05-08",
    "   leading and trailing   ", "tabs\tand\nnewlines\r\n\r\nand  \n  mixed", "\n\n\n", "a" * 70 + " " + "ab" * 40,
    "Naïve café — «quotes» {braces} [brackets] (parens) <angle>", "Straße İstanbul ΣΊΣΥΦΟΣ ǅemo ﬁne ½ ①", "你好，世界。日本語のテキスト 한국어",
    "emoji 😀👍🏽 👨‍👩‍👧‍👦 🇫🇷 and ©®™", "nbsp\u00a0em\u2003thin\u2009zwsp\u200bline\u2028para\u2029ideo\u3000end", "control\x00\x07\x1b chars \ufffd",
    "\u0301accent-first e\u0301 é", "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", "x<|im_end|>y<|endoftext|><|im_start|>",
    "<|im_start|><|im_start|> <|im_end|> text", "memlora memloras xmemlora memlora!", "<|im_star", "don't stop-believing (x)[y]{z} !!! ??? ...",
    "{\"facts\": [\"Caroline moved to Denver\", \"Melanie has two kids\"]}", "```json\n{\"memory\": []}\n```", "\x85next line",
    "x\u00a0<|im_end|>\u00a0\u2003y \u00a0<|im_start|>z\t<|im_end|>\n\n", "memlora_x _memlora ½memlora memlora½ émemlora memlora\u0301 (memlora)",
]


def _bpe_variants(tokenizer_file: Path) -> dict[str, Any]:
    """The bundle's tokenizer and two variants built with the tokenizers library itself: a Llama-3 / Qwen-style one
    (NFC, Split regex + ByteLevel without regex, ignore_merges) and one with add_prefix_space, lstrip / rstrip
    specials and a non-special single-word added token."""
    from tokenizers import AddedToken, Tokenizer, normalizers, pre_tokenizers
    from tokenizers import Regex

    base = Tokenizer.from_file(str(tokenizer_file))
    split = Tokenizer.from_str(base.to_str())
    split.normalizer = normalizers.NFC()
    split.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    raw = json.loads(split.to_str())
    raw["model"]["ignore_merges"] = True
    split = Tokenizer.from_str(json.dumps(raw))
    prefix = Tokenizer.from_str(base.to_str())
    prefix.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    raw = json.loads(prefix.to_str())
    for a in raw["added_tokens"]:
        if a["content"] == "<|im_start|>":
            a["lstrip"] = True
        if a["content"] == "<|im_end|>":
            a["rstrip"] = True
    prefix = Tokenizer.from_str(json.dumps(raw))
    prefix.add_tokens([AddedToken("memlora", single_word=True, normalized=True)])
    return {"bundle": base, "split-nfc": split, "prefix-strip": prefix}


def bpe_vectors(tokenizer_file: Path, prompts_: list[str], out: Path) -> dict[str, Any]:
    """The language model's byte-level BPE tokenizer (what the app's ONNX backend tokenizes with): texts -> ids with
    tokenizers' encode(add_special_tokens=False), ids -> text with decode(skip_special_tokens=True/False)."""
    variants = _bpe_variants(tokenizer_file)
    (out / "bpe").mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"variants": []}
    for name, tok in variants.items():
        (out / "bpe" / f"{name}.json").write_text(tok.to_str())
        texts = [*prompts_, *BPE_TEXTS] if name == "bundle" else [*prompts_[:3], *BPE_TEXTS]
        enc = [{"text": t, "ids": tok.encode(t, add_special_tokens=False).ids} for t in texts]
        dec: list[dict[str, Any]] = []
        emoji = tok.encode("ok 😀👍🏽 é", add_special_tokens=False).ids
        id_lists = [c["ids"] for c in enc[-len(BPE_TEXTS):]] + [emoji[:n] for n in range(len(emoji) + 1)]
        id_lists += [[1, 2, 0, 3], [1] + emoji + [2], [49151, 0, 1234, 17], [242], [242, 218], [218, 218, 218], [10813, 1, 242, 218]]
        for ids in id_lists:
            for skip in (True, False):
                dec.append({"ids": ids, "skip_special_tokens": skip, "text": tok.decode(ids, skip_special_tokens=skip)})
        result["variants"].append({"name": name, "file": f"bpe/{name}.json", "encode": enc, "decode": dec,
                                   "added": {a.content: i for i, a in tok.get_added_tokens_decoder().items()}})
    return result


class _ScriptedRuntime:
    """runtimes.base.Runtime's decoding loop (stream) over a scripted step: each forward returns logits whose maximum
    sits on the script's next ids (several ids: a tie, which argmax breaks towards the smallest). It tests the loop
    (stop ids, lengths, streamed pieces, the calls made), not a model; the JVM test replays the same script."""

    @staticmethod
    def run(manifest: Any, op: str, prompt_ids: list[int], script: list[list[int]], **kwargs: Any) -> dict[str, Any]:
        from runtimes.base import Generation, Runtime

        calls: list[dict[str, Any]] = []
        vocab = int(manifest.raw["model"]["vocab_size"])

        class Scripted(Runtime):
            backend = "scripted"

            def _load(self, op: str) -> None:
                pass

            def _forward(self, op: str, tokens: list[int], start_pos: int) -> np.ndarray:
                step = script[len(calls)]
                calls.append({"tokens": list(tokens), "start_pos": start_pos})
                logits = np.zeros(vocab, dtype=np.float32)
                logits[step] = 1.0
                return logits

        rt = Scripted(manifest)
        case: dict[str, Any] = {"op": op, "prompt_ids": prompt_ids, "script": script, "kwargs": kwargs, "calls": calls}
        try:
            pieces: list[str] = []
            for item in rt.stream(op, prompt_tokens=prompt_ids, **kwargs):
                if isinstance(item, Generation):
                    case["result"] = {"text": item.text, "tokens": item.tokens, "stop_reason": item.stop_reason,
                                      "new_tokens": item.stats.new_tokens, "prompt_tokens": item.stats.prompt_tokens}
                else:
                    pieces.append(item)
            case["pieces"] = pieces
        except ValueError as e:
            case["error"] = str(e)
        return case


def loop_vectors(manifest: Any) -> dict[str, Any]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(manifest.tokenizer_file))
    ids = lambda t: tok.encode(t, add_special_tokens=False).ids  # noqa: E731
    prompt = ids("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    text = [[i] for i in ids("Hi 😀 naïve café — 👍🏽!")]
    stops = manifest.ops["extract"].stop_token_ids
    cases = [
        _ScriptedRuntime.run(manifest, "extract", prompt, text + [[stops[-1]]]),
        _ScriptedRuntime.run(manifest, "generate", prompt, text[:3] + [[1]] + text[3:] + [[stops[0]]]),
        _ScriptedRuntime.run(manifest, "extract", prompt, text + [[5]], max_new_tokens=4),
        _ScriptedRuntime.run(manifest, "update", prompt, [[stops[-1]]]),
        _ScriptedRuntime.run(manifest, "extract", prompt, [[40, 7], [9, 300, 12], [49151, 0]] + [[stops[0], stops[-1]]]),
        _ScriptedRuntime.run(manifest, "extract", prompt, text, max_new_tokens=2),  # ends inside an emoji
        _ScriptedRuntime.run(manifest, "extract", [17] * (manifest.max_seq_len - 5), text * 2),  # context_full
        _ScriptedRuntime.run(manifest, "extract", [17] * manifest.max_seq_len, text),  # prompt does not fit
    ]
    return {"max_seq_len": manifest.max_seq_len, "vocab_size": int(manifest.raw["model"]["vocab_size"]),
            "stop_token_ids": {op: e.stop_token_ids for op, e in manifest.ops.items()},
            "generation": {op: e.generation for op, e in manifest.ops.items()}, "cases": cases}
