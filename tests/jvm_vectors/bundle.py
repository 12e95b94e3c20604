"""The bundle the vectors record: a tiny real export (cached), and load_manifest on it and on damaged variants."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]


def _source_key() -> str:
    h = hashlib.sha256()
    for pattern in ("exporter/*.py", "exporter/targets/*.py", "runtimes/manifest.py", "runtimes/prompts.py",
                    "runtimes/chat.py"):
        for p in sorted(ROOT.glob(pattern)):
            h.update(p.name.encode())
            h.update(p.read_bytes())
    for pkg in ("executorch", "torch", "transformers"):
        try:
            h.update(md.version(pkg).encode())
        except md.PackageNotFoundError:
            pass
    return h.hexdigest()[:16]


def tiny_bundle() -> Path:
    """A real export (the exporter's own code path) of a tiny random llama with the SmolLM2 tokenizer, cached."""
    cache = Path(os.environ.get("MEMLORA_CACHE", Path.home() / ".cache" / "memlora")) / "android-vectors"
    bundle = cache / f"bundle-{_source_key()}"
    if (bundle / "manifest.json").is_file():
        return bundle
    cache.mkdir(parents=True, exist_ok=True)
    for old in cache.glob("bundle-*"):
        shutil.rmtree(old, ignore_errors=True)
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from exporter.cli import main as export_main
    from exporter.load import resolve_base

    print("vectors: exporting a tiny bundle once (the real exporter; about a minute) ...", file=sys.stderr)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
                                         max_position_embeddings=256))
    model.config.architectures = ["LlamaForCausalLM"]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "tiny-llama"
        model.save_pretrained(src, safe_serialization=True)
        AutoTokenizer.from_pretrained(resolve_base("smollm2-135m")[1]).save_pretrained(src)
        rc = export_main(["--base", str(src), "--quant", "fp32", "--skip-fidelity", "--max-seq-len", "256",
                          "--no-embedder", "--out", str(bundle), "--force"])
    if rc != 0:
        raise SystemExit(f"vectors: the tiny export failed (exit {rc})")
    return bundle


def _link_bundle(src: Path, dst: Path, raw: dict[str, Any] | None, drop: tuple[str, ...] = ()) -> None:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.name != "manifest.json" and f.name not in drop:
            try:  # a bundle is a closed world: a symlink leading out of it is refused, a hard link is its own file
                os.link(f, dst / f.name)
            except OSError:
                shutil.copy2(f, dst / f.name)
    (dst / "manifest.json").write_text(json.dumps(raw, indent=2) if raw is not None else "{ not json")


def manifest_vectors(bundle: Path, out: Path) -> list[dict[str, Any]]:
    from runtimes.manifest import load_manifest

    base = json.loads((bundle / "manifest.json").read_text())
    big = max(base["files"], key=lambda n: base["files"][n]["bytes"])
    first_op = next(iter(base["ops"]))

    def variant(name: str, mutate: Callable[[dict[str, Any]], Any] | None, drop: tuple[str, ...] = ()) -> Path:
        raw = json.loads(json.dumps(base))
        if mutate is not None:
            mutate(raw)
        d = out / "manifests" / name
        _link_bundle(bundle, d, raw if name != "invalid-json" else None, drop)
        return d

    # (name, directory, verify, what a refusal must name: the field or file; the message text is each reader's own)
    cases = [("real", bundle, True, None), ("real-noverify", bundle, False, None)]
    cases += [
        ("missing-keys", variant("missing-keys", lambda r: (r.pop("ops"), r.pop("versions"))), True, "ops"),
        ("schema-3", variant("schema-3", lambda r: r.update(schema_version=3)), True, "schema_version"),
        ("unknown-keys", variant("unknown-keys", lambda r: r.update(zeta=1, alpha={"x": 1})), True, None),
        ("size-mismatch", variant("size-mismatch", lambda r: r["files"][big].update(bytes=r["files"][big]["bytes"] - 1)), True, big),
        ("sha-mismatch", variant("sha-mismatch", lambda r: r["files"][big].update(sha256="0" * 64)), True, big),
        ("sha-mismatch-noverify", out / "manifests" / "sha-mismatch", False, None),
        ("file-missing", variant("file-missing", None, drop=(big,)), True, big),
        ("op-unlisted-file", variant("op-unlisted-file", lambda r: r["ops"][first_op]["data_files"].append("foundation.ptd")),
         True, f"ops.{first_op}.data_files"),
        ("backend-unlisted-file", variant("backend-unlisted-file", lambda r: r["ops"][first_op].update(
            backends={"onnx": {"program": "model.onnx", "data_files": [], "adapter_file": None}})), False,
         f"ops.{first_op}.backends.onnx.program"),
        ("embedder-incomplete", variant("embedder-incomplete", lambda r: r.update(embedder={"program": "embedder.pte"})), False,
         "embedder.program"),
        ("embedder-unlisted", variant("embedder-unlisted", lambda r: r.update(embedder={
            "program": "embedder.pte", "tokenizer": "embedder_tokenizer.json", "dim": 384, "max_len": 256, "pooling": "mean"})),
         False, "embedder.program"),
        ("no-chat-format", variant("no-chat-format", lambda r: r["tokenizer"].pop("chat_format")), False,
         "tokenizer.chat_format"),
        ("prompt-extra-brace", variant("prompt-extra-brace", lambda r: r["ops"][first_op]["prompt"].update(
            user=r["ops"][first_op]["prompt"]["user"] + " {x}")), False, f"ops.{first_op}.prompt.user"),
        ("invalid-json", variant("invalid-json", None), True, "invalid JSON"),
        ("no-manifest", out / "manifests" / "does-not-exist", True, "manifest.json"),
    ]
    results = []
    for name, d, verify, names in cases:
        case: dict[str, Any] = {"name": name, "dir": os.path.relpath(d, out) if d != bundle else None, "verify": verify}
        try:
            m = load_manifest(d, verify=verify)
            case["ok"] = {"ops": {op: {"program": e.program, "data_files": e.data_files, "prompt_template": e.prompt_template,
                                       "prompt": e.prompt.to_dict(), "generation": e.generation,
                                       "stop_token_ids": e.stop_token_ids, "adapter": e.adapter,
                                       "backends": getattr(e, "backends", {})}
                                  for op, e in m.ops.items()},
                          "max_seq_len": m.max_seq_len, "chat_template": m.chat_template,
                          "chat_format": m.chat_format.to_dict(),
                          "tokenizer_file": m.raw["tokenizer"]["file"], "strategy": m.raw["strategy"],
                          "format": m.raw["format"], "versions": m.raw["versions"], "embedder": m.raw.get("embedder")}
        except Exception as e:  # noqa: BLE001 - BundleError and whatever else Python raises, recorded as is
            message = str(e).replace(str(d), "<bundle>")
            if names is None or names not in message:
                raise SystemExit(f"vectors: manifest case {name}: Python says {message!r}, which does not name {names!r}")
            case["error"] = {"type": type(e).__name__, "names": names, "python_message": message}
        results.append(case)
    return results
