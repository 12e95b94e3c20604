"""Error hierarchy: every failure a user can cause maps to one of these, and the CLI prints one line for it."""


class MemloraError(Exception):
    """Root of every error the exporter raises on purpose."""


class SpecError(MemloraError):
    """The export spec is invalid (bad choice, conflicting fields)."""


class InputError(MemloraError):
    """A base model or adapter on disk cannot be used (missing, corrupt, unsafe format)."""


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
