"""Bundle directory writing: everything goes into a temp dir beside the target and is renamed into place at the
end, so an interrupted or failed export leaves no bundle (and never a half-written one). The rules for replacing an
existing path are the ones every memlora output follows (runtimes.outdir)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from runtimes.manifest import MANIFEST, BundleError, dump, file_entry, from_dict
from runtimes.outdir import OutputDir, OutputError as _OutputError, check_output as _check, json_file_has

from .errors import ExportError, OutputError

KIND = "bundle"


def is_bundle(path: Path) -> bool:
    """A directory this tool wrote: its manifest names memlora as the tool."""
    return json_file_has(path / MANIFEST, lambda m: (m.get("tool") or {}).get("name") == "memlora")


def check_output(out: Path, force: bool, inputs: Iterable[str | Path] = ()) -> None:
    """Fail early (before any model work) if the output cannot or must not be written."""
    try:
        _check(out, force=force, owned=is_bundle, kind=KIND, inputs=inputs)
    except _OutputError as e:
        raise OutputError(str(e)) from None


class BundleWriter:
    """`with BundleWriter(out, force) as w:` — write files into `w.dir`; on success call `w.commit(manifest)`."""

    def __init__(self, out: Path, force: bool, inputs: Iterable[str | Path] = ()):
        self.out = Path(out)
        self._od = OutputDir(out, force=force, owned=is_bundle, kind=KIND, inputs=inputs)
        self.dir: Path | None = None

    def __enter__(self) -> "BundleWriter":
        try:
            self.dir = self._od.__enter__()
        except _OutputError as e:
            raise OutputError(str(e)) from None
        return self

    def file_table(self) -> dict[str, Any]:
        assert self.dir is not None
        return {p.name: file_entry(p) for p in sorted(self.dir.iterdir())
                if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")}

    def commit(self, manifest: dict[str, Any]) -> Path:
        assert self.dir is not None
        manifest["files"] = self.file_table()
        try:  # what is written is checked by the reader's own definition of the format first
            from_dict(self.dir, manifest)
        except BundleError as e:
            raise ExportError(f"the manifest does not pass the bundle reader ({e}); nothing was written") from None
        (self.dir / MANIFEST).write_text(dump(manifest))
        try:
            return self._od.commit()
        except _OutputError as e:
            raise OutputError(str(e)) from None

    def __exit__(self, *exc: Any) -> None:
        self._od.__exit__(*exc)
