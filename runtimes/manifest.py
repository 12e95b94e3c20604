"""The bundle format: one definition, stdlib only. The exporter writes it; runtimes and the Android app read it.

`manifest.json` sits at the bundle root. `files` lists every other file with its size and sha256; `ops` maps each
memory operation to its program, the data files it needs, its prompt template and generation defaults.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
REQUIRED = ("schema_version", "model", "tokenizer", "strategy", "quantization", "format", "versions", "ops", "files")
# Optional sections; a reader that predates one warns and ignores it, so adding one keeps SCHEMA_VERSION.
#   embedder: {name, program, method, tokenizer, dim, max_len, pooling: "mean", normalize, ...} - the retrieval
#   embedder (runtimes.memory.embed.BundleEmbedder); its program and tokenizer are listed in `files`.
KNOWN = set(REQUIRED) | {"tool", "created_utc", "spec", "export", "backends", "embedder", "target"}


class BundleError(Exception):
    """The bundle is missing, malformed or does not match its checksums."""


@dataclass
class OpEntry:
    name: str
    program: str
    data_files: list[str]
    prompt_template: str
    generation: dict[str, Any]
    stop_token_ids: list[int]
    adapter: dict[str, Any] | None = None
    fidelity: dict[str, Any] | None = None
    backends: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per format ("executorch", "onnx") the files of this op, for bundles exported with several formats;
    `program` / `data_files` above are the first format's (ExecuTorch when the bundle has it)."""


@dataclass
class Manifest:
    root: Path
    raw: dict[str, Any]
    ops: dict[str, OpEntry] = field(default_factory=dict)

    @property
    def tokenizer_file(self) -> Path:
        return self.root / self.raw["tokenizer"]["file"]

    @property
    def chat_template(self) -> str | None:
        return self.raw["tokenizer"].get("chat_template")

    @property
    def max_seq_len(self) -> int:
        return int(self.raw["model"]["max_seq_len"])

    @property
    def embedder(self) -> dict[str, Any] | None:
        return self.raw.get("embedder")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_entry(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def load_manifest(bundle: str | Path, verify: bool = True) -> Manifest:
    """Parse `bundle/manifest.json`; with `verify`, check every listed file's size and sha256."""
    root = Path(bundle)
    path = root / MANIFEST
    if not path.is_file():
        raise BundleError(f"{root} is not a memlora bundle: {MANIFEST} not found")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{path}: invalid JSON: {e}") from e
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise BundleError(f"{path}: missing required keys {missing}")
    if raw["schema_version"] != SCHEMA_VERSION:
        raise BundleError(f"{path}: schema_version {raw['schema_version']} is not supported (this runtime reads {SCHEMA_VERSION})")
    unknown = sorted(set(raw) - KNOWN)
    if unknown:
        warnings.warn(f"{path}: unknown keys {unknown} ignored", stacklevel=2)
    if verify:
        for name, entry in raw["files"].items():
            f = root / name
            if not f.is_file():
                raise BundleError(f"bundle file missing: {name}")
            if f.stat().st_size != entry["bytes"]:
                raise BundleError(f"bundle file {name}: {f.stat().st_size} bytes, manifest says {entry['bytes']} (truncated?)")
            if sha256_file(f) != entry["sha256"]:
                raise BundleError(f"bundle file {name}: sha256 mismatch (corrupted or modified)")
    emb = raw.get("embedder")
    if emb is not None:
        for key in ("program", "tokenizer", "dim", "max_len", "pooling"):
            if key not in emb:
                raise BundleError(f"{path}: embedder entry misses {key!r}")
        for f in (emb["program"], emb["tokenizer"]):
            if f not in raw["files"]:
                raise BundleError(f"embedder names {f!r}, which the manifest's files do not list")
    m = Manifest(root=root, raw=raw)
    for name, op in raw["ops"].items():
        backends = op.get("backends") or {}
        for fmt, b in [(None, op), *backends.items()]:
            for f in [b["program"], *b.get("data_files", []), *([b["adapter_file"]] if b.get("adapter_file") else [])]:
                if f not in raw["files"]:
                    where = f" ({fmt})" if fmt else ""
                    raise BundleError(f"op {name!r}{where} names {f!r}, which the manifest's files do not list")
        m.ops[name] = OpEntry(name=name, program=op["program"], data_files=list(op.get("data_files", [])),
                              prompt_template=op["prompt_template"], generation=dict(op.get("generation", {})),
                              stop_token_ids=[int(t) for t in op.get("stop_token_ids", [])],
                              adapter=op.get("adapter"), fidelity=op.get("fidelity"), backends=dict(backends))
    return m


def dump(raw: dict[str, Any]) -> str:
    return json.dumps(raw, indent=2, sort_keys=True) + "\n"
