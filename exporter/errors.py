"""Error hierarchy: every failure a user can cause maps to one of these, and the CLI prints one line for it.

The root `MemloraError` and `InputError` live on the runtime side (runtimes/errors.py), which the runtimes raise too
(e.g. the packaged embedder model missing) and which never imports the exporter."""

from runtimes.errors import InputError, MemloraError

__all__ = ["MemloraError", "SpecError", "InputError", "AdapterMismatchError", "UnsupportedError", "OutputError",
           "ExportError", "ParityError"]


class SpecError(MemloraError):
    """The export spec is invalid (bad choice, conflicting fields)."""


class AdapterMismatchError(InputError):
    """An adapter was trained for another base model (architecture, shapes or target modules)."""


class UnsupportedError(MemloraError):
    """The model uses a feature this exporter does not lower (named in the message)."""


class OutputError(MemloraError):
    """The output location cannot be used (exists without --force, not writable)."""


class ExportError(MemloraError):
    """Lowering or serialisation failed."""


class ParityError(MemloraError):
    """The exported program does not match the PyTorch reference within the requested bounds."""
