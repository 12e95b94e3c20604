"""The one way to open a bundle: `open_bundle(path, backend="auto")` returns the `Runtime` that runs its programs.

`backend` is "executorch", "onnx" or "auto"; "auto" is resolved here and nowhere else (`resolve_backend`): ExecuTorch
unless the bundle is ONNX-only. memlora-run, memlora-eval, memlora-profile, the exporter's fidelity check and the
benches all open bundles through this module. Stdlib only at import: a backend's module (and torch / onnxruntime)
is imported when a runtime of that backend is made.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .manifest import Manifest, load_manifest

if TYPE_CHECKING:
    from .base import Runtime

BACKENDS = ("executorch", "onnx")
BACKEND_CHOICES = ("auto", *BACKENDS)
"""What a CLI's --backend accepts."""
BACKEND_HELP = "which programs of the bundle to run; auto: ExecuTorch unless the bundle is ONNX-only"


def resolve_backend(manifest: Manifest, backend: str = "auto") -> str:
    """The backend that runs `manifest`'s programs: `backend` itself, or for "auto" ExecuTorch unless the bundle is
    ONNX-only. Whether the bundle has programs for it is the runtime's check (a one-line BundleError when it opens)."""
    if backend == "auto":
        return "onnx" if manifest.raw["format"] == "onnx" else "executorch"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKEND_CHOICES)}, got {backend!r}")
    return backend


def runtime_class(backend: str) -> type["Runtime"]:
    """The Runtime subclass of a backend (not "auto": resolve it first)."""
    if backend == "executorch":
        from .executorch import ExecuTorchRuntime

        return ExecuTorchRuntime
    if backend == "onnx":
        from .onnx import OnnxRuntime

        return OnnxRuntime
    raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")


def runtime_for(manifest: Manifest, backend: str = "auto", **kwargs: Any) -> "Runtime":
    """A runtime of `backend` ("auto" resolved) over an already loaded manifest. `kwargs` go to the runtime
    (`threads`: ONNX Runtime's intra-op threads; `etdump`: ExecuTorch's event tracer); a backend ignores the ones
    it has no use for."""
    return runtime_class(resolve_backend(manifest, backend))(manifest, **kwargs)


def open_bundle(bundle: str | Path, backend: str = "auto", verify: bool = True, **kwargs: Any) -> "Runtime":
    """Load and check the bundle's manifest (`verify`: also every file's size and sha256), then make its runtime."""
    return runtime_for(load_manifest(bundle, verify=verify), backend, **kwargs)
