"""ONNX runtime: each op's ONNX Runtime GenAI graph run by `onnxruntime_genai` (og.Model / og.Generator).

A separate-adapter bundle has one foundation graph whose LoRA weights are graph inputs with zero defaults, plus one
`.onnx_adapter` file per op (onnxruntime's adapter format). Every memory operation gets a fresh generator; the op's
adapter is made active on it with ORT GenAI's `Adapters` / `set_active_adapter`, and the time that takes is recorded
in the generation's stats (`adapter_switch_ms`).

The manifest (schema v1) carries the ONNX files per op under `ops.<op>.backends.onnx` and the graph's LoRA input
signature under `backends.onnx`; adapter files are checked against that signature (names, shapes, dtype, graph id)
before ORT GenAI sees them. Stdlib + numpy + onnxruntime(-genai) only: runtimes never import the exporter.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .base import Generation, Runtime
from .manifest import BundleError, Manifest, is_plain_name, one_line

BACKEND = "onnx"
GENAI_CONFIG = "genai_config.json"  # ORT GenAI reads this fixed name from the bundle root


class AdapterFileError(BundleError):
    """An `.onnx_adapter` file does not fit the foundation graph of its bundle."""


def onnx_ops(manifest: Manifest) -> dict[str, dict[str, Any]]:
    """Per op, the ONNX backend entry of the manifest; raises when the bundle has no ONNX programs."""
    out = {op: (e.backends or {}).get(BACKEND) for op, e in manifest.ops.items()}
    missing = sorted(op for op, e in out.items() if not e)
    if missing:
        raise BundleError(f"bundle format is {manifest.raw.get('format')!r}: no ONNX program for ops {missing} "
                          "(export with --format onnx or --format both)")
    return out  # type: ignore[return-value]


def read_adapter(path: Path) -> tuple[int, dict[str, np.ndarray]]:
    """(model_version, name -> float array) of an onnxruntime adapter file."""
    import onnxruntime as ort

    try:
        a = ort.AdapterFormat.read_adapter(str(path))
        params = {k: np.array(v.numpy()) for k, v in a.get_parameters().items()}
        return int(a.get_model_version()), params
    except Exception as e:  # onnxruntime raises RuntimeError/Fail for a file it cannot parse
        raise AdapterFileError(f"adapter file {path.name} cannot be read as an onnxruntime adapter: {e}") from e


def check_adapter_params(name: str, model_version: int, params: dict[str, Any],
                         lora_inputs: dict[str, list[int | None]], graph_id: int, dtype: str = "float32",
                         blocks: dict[str, int] | None = None) -> None:
    """The adapter's parameters must be LoRA inputs of the foundation graph with the graph's shapes (None = the
    symbolic rank, which A and B of one module must share) and element type (`dtype`: float32, or float16 for a bundle
    exported with quant.lora_dtype fp16), and the adapter must have been written for this very graph (its
    model_version is the graph id). `blocks`: projections whose A holds n blocks of B's rank (the fp16 layout)."""
    if model_version != graph_id:
        raise AdapterFileError(f"adapter file {name} was exported for another foundation graph "
                               f"(graph id {model_version}, this bundle's graph is {graph_id})")
    if not params:
        raise AdapterFileError(f"adapter file {name} holds no parameters")
    unknown = sorted(set(params) - set(lora_inputs))
    if unknown:
        raise AdapterFileError(f"adapter file {name}: {len(unknown)} parameters are not LoRA inputs of the foundation "
                               f"graph, e.g. {unknown[0]!r}")
    ranks: dict[str, int] = {}
    for k, v in sorted(params.items()):
        shape, want = list(np.shape(v)), list(lora_inputs[k])
        if len(shape) != len(want) or any(w is not None and s != w for s, w in zip(shape, want)):
            shown = ["r" if w is None else w for w in want]
            raise AdapterFileError(f"adapter file {name}: {k} has shape {shape}, the foundation graph's input is {shown}")
        if np.asarray(v).dtype != np.dtype(dtype):
            raise AdapterFileError(f"adapter file {name}: {k} is {np.asarray(v).dtype}, the graph expects {dtype}")
        module = k.rpartition(".lora_")[0]
        rank = shape[want.index(None)] if None in want else None
        if rank is not None and k.endswith(".lora_B.MatMul.weight"):
            rank *= (blocks or {}).get(module, 1)
        if rank is not None and ranks.setdefault(module, rank) != rank:
            raise AdapterFileError(f"adapter file {name}: {module} has lora_A and lora_B of different ranks")
    pairs = {k.rpartition(".lora_")[0] for k in params}
    for module in pairs:
        missing = [ab for ab in "AB" if f"{module}.lora_{ab}.MatMul.weight" not in params]
        if missing:
            raise AdapterFileError(f"adapter file {name}: {module} has no lora_{missing[0]}")


def check_adapter_file(path: Path, lora_inputs: dict[str, list[int | None]], graph_id: int,
                       dtype: str = "float32", blocks: dict[str, int] | None = None) -> None:
    version, params = read_adapter(path)
    check_adapter_params(path.name, version, params, lora_inputs, graph_id, dtype, blocks)


def check_files(manifest: Manifest, what: str, names: list[str]) -> None:
    """Cheap checks that hold even with verify=False: every file is there and has the size the manifest says."""
    files = manifest.raw["files"]
    for f in names:
        p = manifest.path(f, must_exist=False)  # listed, plain, inside the bundle
        kind = "external data file" if f.endswith(".data") else "file"
        if not p.is_file():
            raise BundleError(f"{what}: {kind} {f} is missing from the bundle")
        want = files.get(f, {}).get("bytes")
        if want is not None and p.stat().st_size != want:
            raise BundleError(f"{what}: {kind} {f} has {p.stat().st_size} bytes, the manifest says {want} "
                              "(truncated or replaced)")


def check_external_data(manifest: Manifest, program: str) -> None:
    """An ONNX graph names its external weight files inside itself: each must be a plain name the bundle lists
    (onnxruntime would otherwise open whatever path the graph says)."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors

    try:
        model = onnx.load(str(manifest.path(program)), load_external_data=False)
    except Exception as e:
        raise BundleError(f"{program}: not a readable ONNX graph: {one_line(e)}") from None
    for t in _get_all_tensors(model):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        loc = next((kv.value for kv in t.external_data if kv.key == "location"), None)
        if loc is None or not is_plain_name(loc) or loc not in manifest.raw["files"]:
            raise BundleError(f"{program}: tensor {t.name!r} keeps its data in {loc!r}, which is not a file the "
                              "bundle lists")


class OnnxRuntime(Runtime):
    backend = BACKEND

    def __init__(self, manifest: Manifest, threads: int | None = None, **_: Any):
        super().__init__(manifest)
        self.entries = onnx_ops(manifest)
        self.info: dict[str, Any] = dict((manifest.raw.get("backends") or {}).get(BACKEND) or {})
        self.threads = threads
        self._models: dict[str, Any] = {}  # program file -> og.Model (ops may share one graph)
        self._adapters: dict[str, Any] = {}  # program file -> og.Adapters
        self._gen: dict[str, Any] = {}  # op -> its current og.Generator
        self.switch_ms: dict[str, float] = {}
        self.generator_ms: dict[str, float] = {}

    # ------------------------------------------------------------------ loading
    def _model(self, program: str) -> Any:
        import onnxruntime_genai as og

        if program not in self._models:
            self._check_genai_config()
            check_external_data(self.manifest, program)
            cfg = og.Config(str(self.manifest.root))  # reads <bundle>/genai_config.json; the op's graph is overlaid
            overlay: dict[str, Any] = {"model": {"decoder": {"filename": program}},
                                       "search": {"max_length": int(self.info.get("max_length", self.manifest.max_seq_len))}}
            if self.threads:
                overlay["model"]["decoder"]["session_options"] = {"intra_op_num_threads": int(self.threads)}
            cfg.overlay(json.dumps(overlay))
            try:
                self._models[program] = og.Model(cfg)
            except Exception as e:
                raise BundleError(f"onnxruntime-genai cannot load {program}: {one_line(e)}") from e
        return self._models[program]

    def _check_genai_config(self) -> None:
        """ORT GenAI reads <bundle>/genai_config.json by its fixed name and opens the files it names: the config
        must be a listed bundle file (sha256 checked by verify) and every file name in it a listed plain name."""
        if not (self.manifest.root / GENAI_CONFIG).is_file():
            raise BundleError(f"{GENAI_CONFIG} is missing from the bundle")
        path = self.manifest.path(GENAI_CONFIG)
        try:
            cfg = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise BundleError(f"{GENAI_CONFIG}: invalid JSON: {one_line(e)}") from e

        def walk(v: Any, where: str) -> None:
            if isinstance(v, dict):
                for k, x in v.items():
                    if k.endswith("filename") and x is not None:
                        if not is_plain_name(x) or x not in self.manifest.raw["files"]:
                            raise BundleError(f"{GENAI_CONFIG}: {where}{k} names {x!r}, which is not a file the "
                                              "bundle lists")
                    walk(x, f"{where}{k}.")
            elif isinstance(v, list):
                for i, x in enumerate(v):
                    walk(x, f"{where}{i}.")

        walk(cfg, "")

    def _load(self, op: str) -> None:
        e = self.entries[op]
        adapter = [e["adapter_file"]] if e.get("adapter_file") else []
        check_files(self.manifest, f"op {op!r}", [e["program"], *(e.get("data_files") or []), *adapter])
        model = self._model(e["program"])
        if e.get("adapter_file"):
            import onnxruntime_genai as og

            path = self.manifest.path(e["adapter_file"])
            check_adapter_file(path, self.info.get("lora_inputs") or {}, int(self.info.get("graph_id", -1)),
                               (self.info.get("lora") or {}).get("dtype", "float32"), self.info.get("lora_blocks"))
            adapters = self._adapters.get(e["program"])
            if adapters is None:
                adapters = self._adapters[e["program"]] = og.Adapters(model)
            try:
                adapters.load(str(path), op)
            except Exception as err:
                raise AdapterFileError(f"onnxruntime-genai refused adapter file {e['adapter_file']}: {one_line(err)}") from err

    # ------------------------------------------------------------------ running
    def new_generator(self, op: str) -> Any:
        """A fresh generator for one memory operation (its own KV cache: nothing carries over from the previous op),
        with the op's adapter made active on it. Both steps are timed: `generator_ms[op]` (allocating the generator;
        counted in the op's prefill / TTFT) and `switch_ms[op]` (set_active_adapter: the adapter switch proper)."""
        import onnxruntime_genai as og

        e = self.entries[op]
        model = self._models[e["program"]]
        t0 = time.perf_counter()
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=int(self.info.get("max_length", self.manifest.max_seq_len)))
        gen = og.Generator(model, params)
        t1 = time.perf_counter()
        if e.get("adapter_file"):
            gen.set_active_adapter(self._adapters[e["program"]], op)
        self.generator_ms[op] = (t1 - t0) * 1e3
        self.switch_ms[op] = (time.perf_counter() - t1) * 1e3
        self._gen[op] = gen
        return gen

    def _forward(self, op: str, tokens: list[int], start_pos: int) -> np.ndarray:
        gen = self._gen.get(op)
        if start_pos == 0 or gen is None:
            if start_pos != 0:
                raise ValueError(f"op {op!r}: decoding must start at position 0, got {start_pos}")
            gen = self.new_generator(op)
        else:
            n = gen.token_count()
            if start_pos < n:
                gen.rewind_to(start_pos)
            elif start_pos > n:
                raise ValueError(f"op {op!r}: position {start_pos} skips past the {n} tokens already decoded")
        try:
            gen.append_tokens(np.asarray(tokens, dtype=np.int32))
            return np.array(gen.get_logits(), dtype=np.float32).reshape(-1)
        except Exception as e:  # a graph that loads but does not run as this decoder (damaged, foreign)
            raise BundleError(f"op {op!r}: program {self.entries[op]['program']} failed to run: {one_line(e)}") from e

    def stream(self, op: str, *args: Any, **kwargs: Any) -> Iterator[str | Generation]:
        for item in super().stream(op, *args, **kwargs):
            if isinstance(item, Generation):
                item.stats.adapter_switch_ms = round(self.switch_ms.get(op, 0.0), 4)
            yield item
