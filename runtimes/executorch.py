"""ExecuTorch runtime: each op's `.pte` loaded through ExecuTorch's Python runtime, with its `.ptd` data file
(the shared foundation weights of a separate-adapter bundle)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Runtime
from .manifest import BundleError, one_line


def _load_kernels() -> Any:
    import torch  # noqa: F401  (the portable lib needs torch's libraries loaded)

    # Registers the llama:: custom ops (update_cache, custom_sdpa) and the quantized kernels (embedding_byte).
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401
    import executorch.kernels.quantized  # noqa: F401
    from executorch.runtime import Runtime as ETRuntime

    return ETRuntime.get()


class ExecuTorchRuntime(Runtime):
    backend = "executorch"

    def __init__(self, manifest, etdump: bool = False, **_: Any):
        """`etdump`: load programs with ExecuTorch's event tracer on (memlora-profile's breakdown); the loaded
        programs are then kept in `programs` (program file -> Program) to write their ETDump from."""
        super().__init__(manifest)
        if manifest.raw["format"] not in ("executorch", "both"):  # "both": ops' program/data_files are the .pte/.ptd
            raise BundleError(f"bundle format is {manifest.raw['format']!r}, not executorch")
        self._et = _load_kernels()
        self._methods: dict[str, Any] = {}  # program file -> loaded method (ops may share a program)
        self.etdump = etdump
        self.programs: dict[str, Any] = {}  # etdump only: program file -> loaded Program

    def _load(self, op: str) -> None:
        entry = self.manifest.ops[op]
        if entry.program in self._methods:
            return
        path, data = program_files(self.manifest, op)
        trace = {"enable_etdump": True, "debug_buffer_size": 0} if self.etdump else {}
        try:
            program = self._et.load_program(path, data_path=data, **trace)
            self._methods[entry.program] = program.load_method("forward")
        except Exception as e:  # ExecuTorch raises RuntimeError/ValueError for a damaged or foreign program
            raise BundleError(f"op {op!r}: executorch cannot load {entry.program}: {one_line(e)}") from e
        if self.etdump:
            self.programs[entry.program] = program

    def _forward(self, op: str, tokens: list[int], start_pos: int) -> np.ndarray:
        import torch

        program = self.manifest.ops[op].program
        try:
            out = self._methods[program].execute([torch.tensor([tokens], dtype=torch.long),
                                                  torch.tensor([start_pos], dtype=torch.long)])
            return out[0][0].numpy()
        except Exception as e:  # a program that loads but does not run as a memlora decoder (damaged, foreign)
            raise BundleError(f"op {op!r}: program {program} failed to run: {one_line(e)}") from e


def program_files(manifest: Any, op: str) -> tuple[Any, Any]:
    """The op's program and its data file (or None), opened through the manifest's checked accessor."""
    entry = manifest.ops[op]
    if len(entry.data_files) > 1:
        raise BundleError(f"op {op!r} names {len(entry.data_files)} data files; this runtime maps one")
    data = manifest.path(entry.data_files[0]) if entry.data_files else None
    return manifest.path(entry.program), data
