"""memlora's runtime side: read and run bundles (the device-side reader). Never imports the exporter.

`runtimes.open_bundle(path, backend="auto")` is the one way to open a bundle (runtimes/factory.py). Importing this
package imports nothing heavy: the names below load runtimes/factory.py on first use.
"""

from __future__ import annotations

from typing import Any

_FACTORY = ("open_bundle", "runtime_for", "runtime_class", "resolve_backend", "BACKENDS", "BACKEND_CHOICES")
__all__ = list(_FACTORY)


def __getattr__(name: str) -> Any:
    if name in _FACTORY:
        from . import factory

        return getattr(factory, name)
    raise AttributeError(f"module 'runtimes' has no attribute {name!r}")
