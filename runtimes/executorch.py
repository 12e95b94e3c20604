"""ExecuTorch runtime: each op's `.pte` loaded through ExecuTorch's Python runtime, with its `.ptd` data file
(the shared foundation weights of a separate-adapter bundle)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Runtime
from .manifest import BundleError


def _load_kernels() -> Any:
    import torch  # noqa: F401  (the portable lib needs torch's libraries loaded)

    # Registers the llama:: custom ops (update_cache, custom_sdpa) and the quantized kernels (embedding_byte).
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401
    import executorch.kernels.quantized  # noqa: F401
    from executorch.runtime import Runtime as ETRuntime

    return ETRuntime.get()


class ExecuTorchRuntime(Runtime):
    backend = "executorch"

    def __init__(self, manifest, **_: Any):
        super().__init__(manifest)
        if manifest.raw["format"] not in ("executorch", "both"):  # "both": ops' program/data_files are the .pte/.ptd
            raise BundleError(f"bundle format is {manifest.raw['format']!r}, not executorch")
        self._et = _load_kernels()
        self._methods: dict[str, Any] = {}  # program file -> loaded method (ops may share a program)

    def _load(self, op: str) -> None:
        entry = self.manifest.ops[op]
        if entry.program in self._methods:
            return
        if len(entry.data_files) > 1:
            raise BundleError(f"op {op!r} names {len(entry.data_files)} data files; this runtime maps one")
        data = self.manifest.root / entry.data_files[0] if entry.data_files else None
        program = self._et.load_program(self.manifest.root / entry.program, data_path=data)
        self._methods[entry.program] = program.load_method("forward")

    def _forward(self, op: str, tokens: list[int], start_pos: int) -> np.ndarray:
        import torch

        method = self._methods[self.manifest.ops[op].program]
        out = method.execute([torch.tensor([tokens], dtype=torch.long), torch.tensor([start_pos], dtype=torch.long)])
        return out[0][0].numpy()
