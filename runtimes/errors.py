"""The roots of memlora's own errors, on the runtime side so that both sides share them: the exporter's error
hierarchy (exporter/errors.py) extends these, and the runtime side never imports the exporter."""


class MemloraError(Exception):
    """Root of every error memlora raises on purpose; the CLIs print one line for it."""


class InputError(MemloraError):
    """A base model, adapter or packaged model on disk cannot be used (missing, corrupt, unsafe format)."""
