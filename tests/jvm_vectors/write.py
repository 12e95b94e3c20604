"""Write every vector file (atomically) and the command line: `python -m tests.jvm_vectors OUT_DIR [--bundle DIR]`."""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .bundle import manifest_vectors, tiny_bundle
from .prompts import chat_vectors, format_vectors
from .runtime import bench_vectors, bpe_vectors, loop_vectors
from .store import image_vectors, pipeline_vectors, ranking_vectors, store_vectors
from .text import json_vectors, parse_vectors, text_vectors, wordpiece_vectors

DESCRIPTION = "Shared test vectors for the Android app's JVM module (android_demo/core)"
VERSION = 3  # 2: bpe.json + loop.json (the ONNX backend's tokenizer and decoding loop); 3: schema 2 bundles (prompts
# as data): chat.json from the chat format with token ids, no templates.json, refusals as outcome + field, not text


def write(out_dir: Path, bundle: Path | None = None) -> dict[str, Any]:
    from runtimes.manifest import load_manifest

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        src_bundle = Path(bundle) if bundle else tiny_bundle()
        m = load_manifest(src_bundle, verify=False)
        fmt = format_vectors(m)
        chat = chat_vectors(m, [c["messages"] for c in fmt["messages"]])
        files = {
            "text.json": text_vectors(),
            "json.json": json_vectors(),
            "parse.json": parse_vectors(),
            "format.json": fmt,
            "chat.json": chat,
            "manifest.json": {"bundle": str(src_bundle), "cases": manifest_vectors(src_bundle, tmp)},
            "wordpiece.json": wordpiece_vectors(),
            "store.json": store_vectors(tmp),
            "ranking.json": ranking_vectors(tmp),
            "images.json": image_vectors(tmp),
            "pipeline.json": pipeline_vectors(tmp, m),
            "bench.json": bench_vectors(),
            "bpe.json": bpe_vectors(m.tokenizer_file, [c["text"] for c in chat if c["format_name"] == "bundle"], tmp),
            "loop.json": loop_vectors(m),
        }
        for name, data in files.items():
            (tmp / name).write_text(json.dumps(data, indent=1))
        meta = {"version": VERSION, "bundle": str(src_bundle), "seconds": round(time.perf_counter() - t0, 1),
                "python": sys.version.split()[0], "files": sorted(files),
                "versions": {p: md.version(p) for p in ("executorch", "tokenizers", "jinja2") if _installed(p)}}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
        return meta
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _installed(pkg: str) -> bool:
    try:
        md.version(pkg)
        return True
    except md.PackageNotFoundError:
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.jvm_vectors", description=DESCRIPTION)
    p.add_argument("out", help="directory to (re)create with the vectors")
    p.add_argument("--bundle", help="a real exported bundle to record the manifest of (default: a cached tiny export)")
    a = p.parse_args(argv)
    import logging
    import warnings

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")
    warnings.filterwarnings("ignore")
    if a.bundle and not (Path(a.bundle) / "manifest.json").is_file():
        print(f"vectors: error: {a.bundle} is not a memlora bundle (no manifest.json)", file=sys.stderr)
        return 1
    meta = write(Path(a.out), Path(a.bundle) if a.bundle else None)
    print(f"vectors: wrote {len(meta['files'])} files to {a.out} in {meta['seconds']} s (bundle {meta['bundle']})")
    return 0
