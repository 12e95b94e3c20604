"""Lowering targets, looked up by name. Each module registers itself; heavy imports stay inside functions."""

from __future__ import annotations

from typing import Protocol

from ..errors import SpecError


class Target(Protocol):
    name: str
    file_suffix: str

    def lower(self, decoder, example, *, foundation_file: str | None, out_dir, program_name: str) -> dict: ...


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
