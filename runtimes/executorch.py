"""ExecuTorch runtime: each op's `.pte` loaded through ExecuTorch's Python runtime, with its `.ptd` data files
(a separate-adapter bundle: the shared foundation weights and the op's LoRA weights, over one shared program).

ExecuTorch's Python runtime (`Runtime.load_program(data_path=...)`, the pybindings' `_load_program`) maps one data
file; the C++ Module, TextLLMRunner and Android's LlmModule take a list. An op with several data files is loaded from
one temporary file that merges their named data (`merge_data_files`)."""

from __future__ import annotations

from pathlib import Path
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
        self._methods: dict[tuple, Any] = {}  # (program, data files) -> loaded method (ops may share both)
        self.etdump = etdump
        self.programs: dict[str, Any] = {}  # etdump only: op -> loaded Program

    def _key(self, op: str) -> tuple:
        entry = self.manifest.ops[op]
        return (entry.program, *entry.data_files)

    def _load(self, op: str) -> None:
        entry = self.manifest.ops[op]
        key = self._key(op)
        if key in self._methods:
            if self.etdump:
                self.programs[op] = self.programs[next(o for o in self.programs if self._key(o) == key)]
            return
        path, data = program_files(self.manifest, op)
        trace = {"enable_etdump": True, "debug_buffer_size": 0} if self.etdump else {}
        try:
            program, methods = load_methods(self._et, path, data, ["forward"], **trace)
        except BundleError:  # a data file refused by merge_data_files: its own line
            raise
        except Exception as e:  # ExecuTorch raises RuntimeError/ValueError for a damaged or foreign program
            raise BundleError(f"op {op!r}: executorch cannot load {entry.program}: {one_line(e)}") from e
        self._methods[key] = methods["forward"]
        if self.etdump:
            self.programs[op] = program

    def _forward(self, op: str, tokens: list[int], start_pos: int) -> np.ndarray:
        import torch

        program = self.manifest.ops[op].program
        try:
            out = self._methods[self._key(op)].execute([torch.tensor([tokens], dtype=torch.long),
                                                  torch.tensor([start_pos], dtype=torch.long)])
            return out[0][0].numpy()
        except Exception as e:  # a program that loads but does not run as a memlora decoder (damaged, foreign)
            raise BundleError(f"op {op!r}: program {program} failed to run: {one_line(e)}") from e


def program_files(manifest: Any, op: str) -> tuple[Any, list[Any]]:
    """The op's program and its data files, opened through the manifest's checked accessor."""
    entry = manifest.ops[op]
    return manifest.path(entry.program), [manifest.path(f) for f in entry.data_files]


def load_methods(et: Any, path: Any, data: list[Any], names: list[str], **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """A program with all of its data files, and its methods `names` loaded. Several data files are merged into one
    temporary file first (the Python runtime maps one), removed once the methods are loaded: they hold what they need
    (XNNPACK packs its weights at load)."""
    import tempfile

    if len(data) <= 1:
        program = et.load_program(path, data_path=data[0] if data else None, **kwargs)
        return program, {n: program.load_method(n) for n in names}
    with tempfile.TemporaryDirectory(prefix="memlora-ptd-") as tmp:
        merged = Path(tmp) / "merged.ptd"
        merge_data_files(data, merged)
        program = et.load_program(path, data_path=merged, **kwargs)
        return program, {n: program.load_method(n) for n in names}


def merge_data_files(paths: list[Any], out: Path) -> None:
    """The named data of several `.ptd` files as one (ExecuTorch's flat_tensor serializer): a key in two files is
    refused, as the C++ runtime's merged data map refuses it."""
    from executorch.exir._serialize.data_serializer import DataEntry, DataPayload
    from executorch.extension.flat_tensor.serialize.serialize import FlatTensorSerializer

    ser = FlatTensorSerializer()
    buffers: list[bytes] = []
    named: dict[str, Any] = {}
    for p in paths:
        try:
            payload = ser.deserialize(Path(p).read_bytes())
        except Exception as e:
            raise BundleError(f"{Path(p).name} is not an ExecuTorch data file: {one_line(e)}") from e
        base = len(buffers)
        buffers.extend(payload.buffers)
        for key, entry in payload.named_data.items():
            if key in named:
                raise BundleError(f"data key {key!r} is in two of {[Path(q).name for q in paths]}")
            # alignment is not stored in a .ptd: 64 covers XNNPACK's (16) and ExecuTorch's tensor alignment
            named[key] = DataEntry(buffer_index=base + entry.buffer_index, alignment=64,
                                   tensor_layout=entry.tensor_layout)
    with open(out, "wb") as f:
        ser.serialize(DataPayload(buffers=buffers, named_data=named)).write_to_file(f)
