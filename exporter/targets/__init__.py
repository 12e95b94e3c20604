"""Export targets, looked up by format name. Every target implements `Target.export(job) -> TargetResult`: it
exports what the spec asks into the bundle directory and returns, per op, references to the files that serve it.
The pipeline assembles the manifest from those results alone. Heavy imports stay inside the target modules."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import SpecError


@dataclass
class ExportJob:
    """Everything a target may use; it writes only into `out`."""

    spec: Any
    base: Any  # exporter.load.BaseModel (the Hugging Face model, tokenizer and directory)
    arch: Any  # exporter.arch.ArchConfig
    adapters: dict[str, Any]  # op -> exporter.load.Adapter
    out: Path
    timings: dict[str, float]
    stop_token_ids: list[int]
    decoder: Any | None = None  # exporter.arch's decoder built from the base (ExecuTorch lowers it)
    vision: Any | None = None  # exporter.vision.VisionOp: MemLoRA-V's vision op, when the spec asks for it


@dataclass
class TargetResult:
    ops: dict[str, dict[str, Any]]
    """Per op: "program" and "data_files" (bundle file names), optionally "adapter_file", "method" and target
    facts ("lowering"; "adapter_name"), as the manifest records them."""
    info: dict[str, Any] | None = None
    """Graph-level facts for the manifest's `backends.<format>`."""
    quantization: dict[str, Any] | None = field(default=None)
    """The manifest's `quantization` when this target's programs are the bundle's first (None: the spec's)."""
    vision: dict[str, Any] | None = None
    """The vision op's program, data files and lowering facts (the manifest's `vision`), when the job has one."""


class Target(Protocol):
    name: str
    file_suffix: str

    def export(self, job: ExportJob) -> TargetResult: ...


_REGISTRY: dict[str, type] = {}


def register_target(name: str):
    def wrap(cls):
        if name in _REGISTRY:
            raise ValueError(f"target {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def get_target(name: str) -> Target:
    from . import executorch_xnnpack, onnx_genai  # noqa: F401  (register)

    if name not in _REGISTRY:
        raise SpecError(f"format must be one of {sorted(_REGISTRY)}, got {name!r}")
    return _REGISTRY[name]()
