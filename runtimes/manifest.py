"""The bundle format: one definition, stdlib only. The exporter writes it; runtimes and the Android app read it.

`manifest.json` sits at the bundle root. `files` lists every other file with its size and sha256; `ops` maps each
memory operation to its program, the data files it needs, its prompt template and generation defaults.

A bundle is a closed world: every file name in the manifest is a plain name of a file in the bundle directory
(`NAME_RULE`), listed in `files`, and resolves (symlinks followed) inside the bundle. `load_manifest` checks every
name and every field a reader uses, with one-line errors naming the field; runtimes open bundle files only through
`Manifest.path`, which checks the name again. android_demo/core's Manifest.java applies the same rules, and both are
tested on the same hostile manifests (tests/data/hostile_manifests.json).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .chat import ChatFormat, OpPrompt, PromptError

SCHEMA_VERSION = 2
# Schema 2 carries prompts as data (tokenizer.chat_format, ops.<op>.prompt: runtimes/chat.py); schema 1 bundles
# still load here and build their prompts from tokenizer.chat_template (Jinja), as they were exported.
READS = (1, 2)
MANIFEST = "manifest.json"
REQUIRED = ("schema_version", "model", "tokenizer", "strategy", "quantization", "format", "versions", "ops", "files")
# Optional sections; a reader that predates one warns and ignores it, so adding one keeps SCHEMA_VERSION.
#   embedder: {name, program, method, tokenizer, dim, max_len, pooling: "mean", normalize, ...} - the retrieval
#   embedder (runtimes.memory.embed.BundleEmbedder); its program and tokenizer are listed in `files`.
#   vision: {op, program, data_files, methods, image, visual_tokens, prompt{before, after}, generation,
#   stop_token_ids, onnx?: {encoder, embed, decoder, data_files, adapter_file, graph_id, past{layers, kv_heads,
#   head_dim}}, ...} - MemLoRA-V's vision op (runtimes.vision.VisionRunner); its files are listed in `files`.
KNOWN = set(REQUIRED) | {"tool", "created_utc", "spec", "export", "backends", "embedder", "target", "vision"}
NAME_RULE = "a plain file name in the bundle (no '/', '\\', ':' or control characters; not '.' or '..'; 1-255 bytes)"
_SHA256 = re.compile(r"[0-9a-f]{64}")
INT32 = 2**31 - 1
INT64 = 2**63 - 1


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
    prompt: OpPrompt | None = None
    """The op's system text and user template (schema 2); None in a schema 1 bundle."""
    backends: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per format ("executorch", "onnx") the files of this op, for bundles exported with several formats;
    `program` / `data_files` above are the first format's (ExecuTorch when the bundle has it)."""


def is_plain_name(name: Any) -> bool:
    """`NAME_RULE`: a name that can only mean a file directly inside the bundle directory, on any OS."""
    if not isinstance(name, str) or name in ("", ".", ".."):
        return False
    try:
        size = len(name.encode("utf-8"))  # lone surrogates (JSON "\ud800") are not file names
    except UnicodeEncodeError:
        return False
    return size <= 255 and not any(c in "/\\:" or ord(c) < 0x20 or ord(c) == 0x7F for c in name)


def _inside(root_real: str, path: Path) -> bool:
    real = os.path.realpath(path)
    return real != root_real and real.startswith(root_real.rstrip(os.sep) + os.sep)


@dataclass
class Manifest:
    root: Path
    raw: dict[str, Any]
    ops: dict[str, OpEntry] = field(default_factory=dict)
    chat_format: ChatFormat | None = None
    """How to frame messages (schema 2); None in a schema 1 bundle (its Jinja chat_template is rendered instead)."""

    def path(self, name: str, must_exist: bool = True) -> Path:
        """`root / name` for a file the bundle lists, after checking that the name is plain, that the file resolves
        inside the bundle directory and (`must_exist`) that it is a regular file. The one way runtimes open bundle
        files: with `load_manifest(verify=True)` every listed file's size and sha256 were checked before."""
        files = self.raw["files"]
        if not is_plain_name(name):
            raise BundleError(f"{name!r} is not {NAME_RULE}")
        if name not in files:
            raise BundleError(f"{name!r} is not a file of this bundle (the manifest's files do not list it)")
        p = self.root / name
        if not _inside(os.path.realpath(self.root), p):
            raise BundleError(f"bundle file {name} leads outside the bundle (a link)")
        if must_exist and not p.is_file():
            raise BundleError(f"bundle file missing: {name}")
        return p

    @property
    def tokenizer_file(self) -> Path:
        return self.path(self.raw["tokenizer"]["file"])

    @property
    def chat_template(self) -> str | None:
        return self.raw["tokenizer"].get("chat_template")

    @property
    def max_seq_len(self) -> int:
        return int(self.raw["model"]["max_seq_len"])

    @property
    def embedder(self) -> dict[str, Any] | None:
        return self.raw.get("embedder")

    @property
    def vision(self) -> dict[str, Any] | None:
        return self.raw.get("vision")


def one_line(e: BaseException, limit: int = 300) -> str:
    """An exception from a library (ExecuTorch, onnxruntime, tokenizers) as one short line for a BundleError."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_entry(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


# ------------------------------------------------------------------------------------------------ schema checks
def kind(v: Any) -> str:
    """A JSON value's type, as error messages name it (the same words in Manifest.java)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    return "an object"


class _Checker:
    """Type checks of the manifest's fields; every error is one line `<manifest>: <field>: <problem>`."""

    def __init__(self, where: Path, files: dict[str, Any]):
        self.where, self.files = where, files

    def fail(self, fld: str, problem: str) -> BundleError:
        return BundleError(f"{self.where}: {fld}: {problem}")

    def get(self, obj: dict[str, Any], fld: str, key: str, required: bool) -> Any:
        if required and key not in obj:
            raise self.fail(f"{fld}.{key}" if fld else key, "missing")
        return obj.get(key)

    def obj(self, fld: str, v: Any, optional: bool = False) -> dict[str, Any] | None:
        if v is None and optional:
            return None
        if not isinstance(v, dict):
            raise self.fail(fld, f"expected an object, got {kind(v)}")
        return v

    def str_(self, fld: str, v: Any, optional: bool = False) -> str | None:
        if v is None and optional:
            return None
        if not isinstance(v, str):
            raise self.fail(fld, f"expected a string, got {kind(v)}")
        return v

    def int_(self, fld: str, v: Any, lo: int, hi: int, optional: bool = False) -> int | None:
        if v is None and optional:
            return None
        if not isinstance(v, int) or isinstance(v, bool):
            raise self.fail(fld, f"expected an integer, got {kind(v)}")
        if not lo <= v <= hi:
            raise self.fail(fld, f"{v} is out of range ({lo}..{hi})")
        return v

    def num(self, fld: str, v: Any, lo: float, hi: float, optional: bool = False) -> float | None:
        if v is None and optional:
            return None
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise self.fail(fld, f"expected a number, got {kind(v)}")
        if not (math.isfinite(v) and lo <= v <= hi):
            raise self.fail(fld, f"{v} is out of range ({lo}..{hi})")
        return float(v)

    def list_(self, fld: str, v: Any, optional: bool = False) -> list[Any] | None:
        if v is None and optional:
            return None
        if not isinstance(v, list):
            raise self.fail(fld, f"expected an array, got {kind(v)}")
        return v

    def name(self, fld: str, v: Any, optional: bool = False) -> str | None:
        """A bundle file name: a plain name (NAME_RULE) that `files` lists."""
        if self.str_(fld, v, optional) is None:
            return None
        if not is_plain_name(v):
            raise self.fail(fld, f"{v!r} is not {NAME_RULE}")
        if v not in self.files:
            raise self.fail(fld, f"{v!r} is not listed in the manifest's files")
        return v

    def names(self, fld: str, v: Any) -> list[str]:
        return [self.name(f"{fld}[{i}]", x) for i, x in enumerate(self.list_(fld, v, optional=True) or [])]


def check_fields(raw: dict[str, Any], where: Path) -> None:
    """Every field a reader uses has its type; every file name is plain and listed. Order matters: Manifest.java
    checks in the same order, so both name the same field for the same manifest."""
    c = _Checker(where, {})
    c.files = c.obj("files", raw["files"])
    model = c.obj("model", raw["model"])
    c.int_("model.max_seq_len", c.get(model, "model", "max_seq_len", True), 1, INT32)
    for k in ("vocab_size", "n_layers", "dim", "n_heads", "n_kv_heads", "head_dim", "hidden_dim"):
        c.int_(f"model.{k}", model.get(k), 1, INT32, optional=True)
    tok = c.obj("tokenizer", raw["tokenizer"])
    c.name("tokenizer.file", c.get(tok, "tokenizer", "file", True))
    for k in ("chat_template", "bos_token", "eos_token"):
        c.str_(f"tokenizer.{k}", tok.get(k), optional=True)
    c.str_("strategy", raw["strategy"])
    quant = c.obj("quantization", raw["quantization"])
    c.str_("quantization.scheme", quant.get("scheme"), optional=True)
    c.str_("format", raw["format"])
    c.obj("versions", raw["versions"])
    for op, entry in c.obj("ops", raw["ops"]).items():
        f = f"ops.{op}"
        e = c.obj(f, entry)
        c.name(f"{f}.program", c.get(e, f, "program", True))
        c.names(f"{f}.data_files", e.get("data_files"))
        c.str_(f"{f}.prompt_template", c.get(e, f, "prompt_template", True))
        gen = c.obj(f"{f}.generation", e.get("generation"), optional=True) or {}
        c.int_(f"{f}.generation.max_new_tokens", gen.get("max_new_tokens"), 0, INT32, optional=True)
        c.num(f"{f}.generation.temperature", gen.get("temperature"), 0.0, 1e6, optional=True)
        c.num(f"{f}.generation.top_p", gen.get("top_p"), 0.0, 1.0, optional=True)
        for i, t in enumerate(c.list_(f"{f}.stop_token_ids", e.get("stop_token_ids"), optional=True) or []):
            c.int_(f"{f}.stop_token_ids[{i}]", t, 0, INT32)
        c.obj(f"{f}.adapter", e.get("adapter"), optional=True)
        c.obj(f"{f}.fidelity", e.get("fidelity"), optional=True)
        c.str_(f"{f}.method", e.get("method"), optional=True)
        for fmt, b in (c.obj(f"{f}.backends", e.get("backends"), optional=True) or {}).items():
            fb = f"{f}.backends.{fmt}"
            b = c.obj(fb, b)
            c.name(f"{fb}.program", c.get(b, fb, "program", True))
            c.names(f"{fb}.data_files", b.get("data_files"))
            c.name(f"{fb}.adapter_file", b.get("adapter_file"), optional=True)
            c.str_(f"{fb}.method", b.get("method"), optional=True)
    for fmt, info in (c.obj("backends", raw.get("backends"), optional=True) or {}).items():
        fb = f"backends.{fmt}"
        info = c.obj(fb, info)
        c.name(f"{fb}.genai_config", info.get("genai_config"), optional=True)
        c.int_(f"{fb}.max_length", info.get("max_length"), 1, INT32, optional=True)
        c.int_(f"{fb}.graph_id", info.get("graph_id"), -INT64 - 1, INT64, optional=True)
        for name, shape in (c.obj(f"{fb}.lora_inputs", info.get("lora_inputs"), optional=True) or {}).items():
            for i, d in enumerate(c.list_(f"{fb}.lora_inputs.{name}", shape)):
                c.int_(f"{fb}.lora_inputs.{name}[{i}]", d, 0, INT64, optional=True)
        lora = c.obj(f"{fb}.lora", info.get("lora"), optional=True) or {}
        c.str_(f"{fb}.lora.dtype", lora.get("dtype"), optional=True)
        for name, n in (c.obj(f"{fb}.lora_blocks", info.get("lora_blocks"), optional=True) or {}).items():
            c.int_(f"{fb}.lora_blocks.{name}", n, 1, INT32)
    emb = c.obj("embedder", raw.get("embedder"), optional=True)
    if emb is not None:
        c.name("embedder.program", c.get(emb, "embedder", "program", True))
        c.name("embedder.tokenizer", c.get(emb, "embedder", "tokenizer", True))
        c.int_("embedder.dim", c.get(emb, "embedder", "dim", True), 1, INT32)
        c.int_("embedder.max_len", c.get(emb, "embedder", "max_len", True), 1, INT32)
        c.str_("embedder.pooling", c.get(emb, "embedder", "pooling", True))
        c.str_("embedder.method", emb.get("method"), optional=True)
    vis = c.obj("vision", raw.get("vision"), optional=True)
    if vis is not None:
        c.str_("vision.op", c.get(vis, "vision", "op", True))
        if "program" in vis or "onnx" not in vis:  # ExecuTorch's program: absent only in ONNX-only bundles
            c.name("vision.program", c.get(vis, "vision", "program", True))
            c.names("vision.data_files", vis.get("data_files"))
            methods = c.obj("vision.methods", c.get(vis, "vision", "methods", True))
            for k in ("image", "embed", "decode"):
                c.str_(f"vision.methods.{k}", c.get(methods, "vision.methods", k, True))
        image = c.obj("vision.image", c.get(vis, "vision", "image", True))
        c.int_("vision.image.size", c.get(image, "vision.image", "size", True), 1, 8192)
        for k in ("mean", "std"):
            values = c.list_(f"vision.image.{k}", c.get(image, "vision.image", k, True))
            if len(values) != 3:
                raise c.fail(f"vision.image.{k}", "expected 3 values (R, G, B)")
            for i, v in enumerate(values):
                c.num(f"vision.image.{k}[{i}]", v, -1e6 if k == "mean" else 1e-9, 1e6)
        c.int_("vision.visual_tokens", c.get(vis, "vision", "visual_tokens", True), 1, INT32)
        prompt = c.obj("vision.prompt", c.get(vis, "vision", "prompt", True))
        for k in ("before", "after"):
            c.str_(f"vision.prompt.{k}", c.get(prompt, "vision.prompt", k, True))
        gen = c.obj("vision.generation", vis.get("generation"), optional=True) or {}
        c.int_("vision.generation.max_new_tokens", gen.get("max_new_tokens"), 1, INT32, optional=True)
        after = c.str_("vision.generation.answer_after", gen.get("answer_after"), optional=True)
        if after is not None and not 1 <= len(after) <= 64:
            raise c.fail("vision.generation.answer_after", "expected 1 to 64 characters")
        for i, t in enumerate(c.list_("vision.stop_token_ids", vis.get("stop_token_ids"), optional=True) or []):
            c.int_(f"vision.stop_token_ids[{i}]", t, 0, INT32)
        vo = c.obj("vision.onnx", vis.get("onnx"), optional=True)
        if vo is not None:  # the ONNX graphs of the vision op (--format both; runtimes.vision backend "onnx")
            for k in ("encoder", "embed", "decoder", "adapter_file"):
                c.name(f"vision.onnx.{k}", c.get(vo, "vision.onnx", k, True))
            c.names("vision.onnx.data_files", vo.get("data_files"))
            c.int_("vision.onnx.graph_id", c.get(vo, "vision.onnx", "graph_id", True), 0, INT32)
            past = c.obj("vision.onnx.past", c.get(vo, "vision.onnx", "past", True))
            for k in ("layers", "kv_heads", "head_dim"):
                c.int_(f"vision.onnx.past.{k}", c.get(past, "vision.onnx.past", k, True), 1, 4096)
    for name, entry in c.files.items():
        if not is_plain_name(name):
            raise c.fail("files", f"{name!r} is not {NAME_RULE}")
        e = c.obj(f"files.{name}", entry)
        c.int_(f"files.{name}.bytes", c.get(e, f"files.{name}", "bytes", True), 0, INT64)
        sha = c.str_(f"files.{name}.sha256", c.get(e, f"files.{name}", "sha256", True))
        if not _SHA256.fullmatch(sha):
            raise c.fail(f"files.{name}.sha256", "expected 64 lowercase hex digits")


def load_manifest(bundle: str | Path, verify: bool = True) -> Manifest:
    """Parse `bundle/manifest.json` and check its fields and file names (see the module doc); with `verify`, check
    every listed file's size and sha256 too. Without it, files are checked for existence only when opened."""
    root = Path(bundle)
    path = root / MANIFEST
    if not path.is_file():
        raise BundleError(f"{root} is not a memlora bundle: {MANIFEST} not found")
    root_real = os.path.realpath(root)
    if not _inside(root_real, path):
        raise BundleError(f"{path}: {MANIFEST} leads outside the bundle (a link)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise BundleError(f"{path}: invalid JSON: not UTF-8 text") from e
    except OSError as e:
        raise BundleError(f"{path}: cannot read: {e.strerror or e}") from e
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise BundleError(f"{path}: invalid JSON: {e}") from e
    except RecursionError as e:
        raise BundleError(f"{path}: invalid JSON: nested too deeply") from e
    except ValueError as e:  # an integer of thousands of digits
        raise BundleError(f"{path}: invalid JSON: {one_line(e, 100)}") from e
    return _checked(root, raw, path, verify)


def _checked(root: Path, raw: Any, path: Path, verify: bool) -> Manifest:
    root_real = os.path.realpath(root)
    if not isinstance(raw, dict):
        raise BundleError(f"{path}: the manifest is not a JSON object")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise BundleError(f"{path}: missing required keys {missing}")
    sv = raw["schema_version"]
    if not isinstance(sv, int) or isinstance(sv, bool):
        raise BundleError(f"{path}: schema_version: expected an integer, got {kind(sv)}")
    if sv not in READS:
        raise BundleError(f"{path}: schema_version {sv} is not supported (this runtime reads {list(READS)}); "
                          + ("update memlora to run it" if sv > SCHEMA_VERSION else "re-export the bundle"))
    unknown = sorted(set(raw) - KNOWN)
    if unknown:
        warnings.warn(f"{path}: unknown keys {unknown} ignored", stacklevel=2)
    check_fields(raw, path)
    for name in raw["files"]:
        if not _inside(root_real, root / name):
            raise BundleError(f"bundle file {name} leads outside the bundle (a link)")
    if verify:
        for name, entry in raw["files"].items():
            f = root / name
            try:
                if not f.is_file():
                    raise BundleError(f"bundle file missing: {name}")
                if f.stat().st_size != entry["bytes"]:
                    raise BundleError(f"bundle file {name}: {f.stat().st_size} bytes, manifest says {entry['bytes']} (truncated?)")
                if sha256_file(f) != entry["sha256"]:
                    raise BundleError(f"bundle file {name}: sha256 mismatch (corrupted or modified)")
            except OSError as e:
                raise BundleError(f"bundle file {name}: cannot read: {e.strerror or e}") from e
    m = Manifest(root=root, raw=raw)
    try:
        if sv >= 2 or "chat_format" in raw["tokenizer"]:
            m.chat_format = ChatFormat.from_dict(raw["tokenizer"].get("chat_format"), "tokenizer.chat_format")
        prompts = {name: OpPrompt.from_dict(op.get("prompt"), f"ops.{name}.prompt")
                   for name, op in raw["ops"].items() if sv >= 2 or "prompt" in op}
    except PromptError as e:
        raise BundleError(f"{path}: {e}") from None
    for name, op in raw["ops"].items():
        m.ops[name] = OpEntry(prompt=prompts.get(name), name=name, program=op["program"], data_files=list(op.get("data_files") or []),
                              prompt_template=op["prompt_template"], generation=dict(op.get("generation") or {}),
                              stop_token_ids=[int(t) for t in op.get("stop_token_ids") or []],
                              adapter=op.get("adapter"), fidelity=op.get("fidelity"), backends=dict(op.get("backends") or {}))
    return m


def from_dict(root: str | Path, raw: dict[str, Any]) -> Manifest:
    """A manifest that is not written yet, checked by the same rules as one read from disk (files by name and
    location, not by checksum): the exporter checks what it is about to write, and runs its fidelity check on it."""
    root = Path(root)
    return _checked(root, json.loads(dump(raw)), root / MANIFEST, verify=False)


def dump(raw: dict[str, Any]) -> str:
    return json.dumps(raw, indent=2, sort_keys=True) + "\n"
