"""`ExportSpec`: the one typed description of an export. No torch import here.

Each section checks its own rules in `__post_init__`; rules across sections live on `ExportSpec`. The CLI builds a
spec and adds no checks of its own, so the Python API gets exactly the same validation. A field's choices are its
`Literal` type and its default is the dataclass default: the CLI reads both from here (`choices`, `default`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from .errors import SpecError

Quant = Literal["int4", "int8", "fp32"]
Strategy = Literal["merged", "separate", "none"]
Format = Literal["executorch", "onnx", "both"]  # both: .pte programs and ONNX graphs in one bundle and manifest
Target = Literal["android", "host"]
LoraDtype = Literal["fp32", "fp16"]  # ONNX separate adapter files
Int4Weights = Literal["asymmetric", "symmetric"]
AccuracyLevel = Literal[1, 4]  # ONNX MatMulNBits activations: 1 = fp32, 4 = int8
LmHeadBits = Literal[4, 8]
Int8Variant = Literal["matmulnbits", "dynamic"]  # ONNX int8 graphs (see QuantSpec.int8_variant)
EmbedderQuant = Literal["int8", "fp32"]
VisionQuant = Literal["int8", "fp32"]

MEMORY_OPS = ("extract", "update", "generate")
OP_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def _choice(field_name: str, value: Any, literal: Any) -> None:
    allowed = list(get_args(literal))
    if value not in allowed:
        raise SpecError(f"{field_name} must be one of {allowed}, got {value!r}")


def choices(section: type, name: str) -> list[Any]:
    """The allowed values of a spec field: the members of its Literal type (None left out of an optional one)."""
    hint = get_type_hints(section)[name]
    if get_origin(hint) is Union:  # Strategy | None
        hint = next(a for a in get_args(hint) if a is not type(None))
    if get_origin(hint) is not Literal:
        raise TypeError(f"{section.__name__}.{name} is not a Literal field")
    return list(get_args(hint))


def default(section: type, name: str) -> Any:
    """A spec field's default value."""
    f = next(f for f in dataclasses.fields(section) if f.name == name)
    return f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]


@dataclass
class ModelSpec:
    base: str = "smollm2-135m"
    """Embedded model name, a Hugging Face model directory, or a .gguf file."""
    max_seq_len: int = 1024
    """KV-cache length of the exported programs (prompt + generated tokens)."""

    def __post_init__(self) -> None:
        if not isinstance(self.base, str) or not self.base:
            raise SpecError("model.base must be a non-empty string")
        if not isinstance(self.max_seq_len, int) or not 16 <= self.max_seq_len <= 32768:
            raise SpecError(f"model.max_seq_len must be an int in [16, 32768], got {self.max_seq_len!r}")


@dataclass
class AdapterSpec:
    paths: dict[str, str] = field(default_factory=dict)
    """Operation name -> PEFT adapter directory."""
    strategy: Strategy | None = None
    """merged: LoRA folded into each op's weights; separate: shared foundation .ptd + per-op LoRA program;
    none: the base model only. Default: separate when adapters are given, else none."""

    def __post_init__(self) -> None:
        for name in self.paths:
            if not OP_NAME_RE.match(name):
                raise SpecError(
                    f"adapter op name must match {OP_NAME_RE.pattern} (lowercase, digits, underscore), got {name!r}"
                )
        if self.strategy is None:
            self.strategy = "separate" if self.paths else "none"
        _choice("adapters.strategy", self.strategy, Strategy)
        if self.strategy == "none" and self.paths:
            raise SpecError("adapters.strategy 'none' conflicts with adapters.paths: drop the adapters or pick merged/separate")
        if self.strategy != "none" and not self.paths:
            raise SpecError(f"adapters.strategy {self.strategy!r} needs at least one adapter (--adapter OP=DIR)")


@dataclass
class QuantSpec:
    scheme: Quant = "int4"
    """int4: int8 dynamic activations + int4 grouped weights on linears, int8 embeddings; int8: int8 dynamic
    activations + int8 per-channel weights; fp32: no quantization. LoRA weights always stay float."""
    group_size: int = 32
    int4_weights: Int4Weights = "asymmetric"
    """int4 linears: "asymmetric" = min-max 4-bit codes with a per-group float offset applied to the input's group
    sums (exact for Q4_0/Q4_1-style GGUF weights; ExecuTorch: quant.GroupOffsetLinear, ONNX: MatMulNBits + offset
    MatMul, targets.onnx_graph.int4_with_offsets), "symmetric" = the backend's plain symmetric int4 (XNNPACK with HQQ
    scales; the ORT GenAI builder's MatMulNBits), faster to decode."""
    accuracy_level: AccuracyLevel = 4
    """ONNX only: activation precision of MatMulNBits (int4/int8 weights): 4 = int8 activations (fastest on CPU),
    1 = fp32 activations."""
    lm_head_bits: LmHeadBits = 8
    """ONNX int4 only: bits of the LM head and of the tied embedding that shares its weight (8 = symmetric block-wise
    8-bit, llama.cpp's Q8_0; 4 = the builder's int4). The ExecuTorch int4 scheme keeps its head at 8 bits always."""
    lora_dtype: LoraDtype = "fp32"
    """ONNX separate bundles only: how the LoRA weights are stored in the adapter files and fed to the foundation
    graph. fp32, or fp16 (half the bytes; the graph casts them to fp32, so the LoRA path still computes in fp32)."""
    int8_variant: Int8Variant = "matmulnbits"
    """ONNX int8 only, measured on SmolLM2-135M by bench/onnx_vs_builder.py (docs/onnx.md): "matmulnbits" = the
    builder's own int8 precision (MatMulNBits bits=8, block `group_size`, activations at `accuracy_level`);
    "dynamic" = the builder's fp32 graph through onnxruntime.quantization.quantize_dynamic (per-channel int8 weights,
    DynamicQuantizeMatMul)."""

    def __post_init__(self) -> None:
        _choice("quant.scheme", self.scheme, Quant)
        _choice("quant.lora_dtype", self.lora_dtype, LoraDtype)
        if self.int4_weights not in get_args(Int4Weights):
            raise SpecError(f"quant.int4_weights must be asymmetric or symmetric, got {self.int4_weights!r}")
        _choice("quant.accuracy_level", self.accuracy_level, AccuracyLevel)
        _choice("quant.lm_head_bits", self.lm_head_bits, LmHeadBits)
        _choice("quant.int8_variant", self.int8_variant, Int8Variant)
        if self.group_size not in (16, 32, 64, 128, 256):
            raise SpecError(f"quant.group_size must be one of [16, 32, 64, 128, 256], got {self.group_size!r}")


@dataclass
class OutputSpec:
    path: str = "memlora_bundle"
    force: bool = False
    """Replace an existing output directory."""


@dataclass
class FidelitySpec:
    enabled: bool = True
    tokens: int = 64
    """Greedy tokens generated by the reference and replayed through the exported program."""
    strict: bool = False
    """Fail the export (no bundle) when an op misses the fidelity target of its quantization scheme."""

    def __post_init__(self) -> None:
        if not isinstance(self.tokens, int) or not 1 <= self.tokens <= 1024:
            raise SpecError(f"fidelity.tokens must be an int in [1, 1024], got {self.tokens!r}")


@dataclass
class EmbedderSpec:
    enabled: bool | None = None
    """Bundle the retrieval embedder (all-MiniLM-L6-v2 as embedder.pte + its tokenizer) so a phone retrieves
    memories locally. Default: on for target android, off for host."""
    quant: EmbedderQuant = "int8"

    def __post_init__(self) -> None:
        if self.enabled is not None and not isinstance(self.enabled, bool):
            raise SpecError(f"embedder.enabled must be true, false or null, got {self.enabled!r}")
        _choice("embedder.quant", self.quant, EmbedderQuant)


@dataclass
class VisionSpec:
    path: str | None = None
    """MemLoRA-V's vision op (`memlora-train --op vqa` output directory; "embedded" = the one shipped for an embedded
    base, or the base's own tower + projector when the base is a LLaVA-layout VLM directory): exported as
    `vision.pte` (ExecuTorch's multimodal methods) over the text ops' `foundation.ptd` plus `vqa.lora.ptd`. None: no
    vision op."""
    quant: VisionQuant | None = None
    """The image encoder + projector inside vision.pte: "int8" = XNNPACK's dynamic int8 on the projector and the
    encoder's convolutions in `exporter.vision.encoder.INT8_CONVS` (a VLM's ViT tower: its linears; the rest fp32);
    "fp32" = all fp32. None: int8, or fp32 where quant.scheme is fp32."""

    def __post_init__(self) -> None:
        if self.path is not None and (not isinstance(self.path, str) or not self.path):
            raise SpecError(f"vision.path must be a directory, \"embedded\" or null, got {self.path!r}")
        if self.quant is not None:
            _choice("vision.quant", self.quant, VisionQuant)


@dataclass
class ExportSpec:
    model: ModelSpec = field(default_factory=ModelSpec)
    adapters: AdapterSpec = field(default_factory=AdapterSpec)
    quant: QuantSpec = field(default_factory=QuantSpec)
    output: OutputSpec = field(default_factory=OutputSpec)
    fidelity: FidelitySpec = field(default_factory=FidelitySpec)
    embedder: EmbedderSpec = field(default_factory=EmbedderSpec)
    vision: VisionSpec = field(default_factory=VisionSpec)
    target: Target = "android"
    format: Format = "executorch"

    def __post_init__(self) -> None:
        _choice("target", self.target, Target)
        _choice("format", self.format, Format)
        if self.embedder.enabled is None:
            self.embedder.enabled = self.target == "android"
        if self.vision.quant is None:
            self.vision.quant = "fp32" if self.quant.scheme == "fp32" else "int8"
        if self.quant.lora_dtype != "fp32" and (self.format == "executorch" or self.adapters.strategy != "separate"):
            raise SpecError(f"quant.lora_dtype {self.quant.lora_dtype} applies to the ONNX adapter files of a separate "
                            "bundle: use it with --format onnx|both and --adapters separate")
        if self.vision.path is not None and self.adapters.strategy == "none":
            raise SpecError("the vision op reads the foundation the text ops' separate adapters share: give the text "
                            "ops their adapters (--adapter OP=DIR; memlora-train --base BASE trains them)")
        if self.vision.path is not None and self.adapters.strategy != "separate":
            raise SpecError("the vision op is exported with separate adapters only (it reads the text ops' shared "
                            "foundation; merged programs are not built yet)")
        if self.vision.path is not None and "vqa" in self.adapters.paths:
            raise SpecError("adapter op name 'vqa' is the vision op's: rename that adapter or drop --vision")
        if self.fidelity.enabled and self.fidelity.tokens >= self.model.max_seq_len // 2:
            raise SpecError(
                f"fidelity.tokens ({self.fidelity.tokens}) must be below half of model.max_seq_len ({self.model.max_seq_len})"
            )

    @property
    def ops(self) -> list[str]:
        """Operations the bundle serves: the adapters' names, or the three memory ops on the bare base."""
        return list(self.adapters.paths) if self.adapters.paths else list(MEMORY_OPS)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExportSpec":
        sections = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(sections))
        if unknown:
            raise SpecError(f"unknown spec keys {unknown}; known: {sorted(sections)}")
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            section_cls = {"model": ModelSpec, "adapters": AdapterSpec, "quant": QuantSpec,
                           "output": OutputSpec, "fidelity": FidelitySpec, "embedder": EmbedderSpec,
                           "vision": VisionSpec}.get(name)
            if section_cls is None:
                kwargs[name] = value
                continue
            if not isinstance(value, dict):
                raise SpecError(f"spec section {name!r} must be a mapping, got {type(value).__name__}")
            known = {f.name for f in dataclasses.fields(section_cls)}
            bad = sorted(set(value) - known)
            if bad:
                raise SpecError(f"unknown keys {bad} in spec section {name!r}; known: {sorted(known)}")
            kwargs[name] = section_cls(**value)
        return cls(**kwargs)

    @property
    def out_path(self) -> Path:
        return Path(self.output.path)
