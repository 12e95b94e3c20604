"""Bundle directory writing: everything goes into a temp dir beside the target and is renamed into place at the
end, so an interrupted or failed export leaves no bundle (and never a half-written one)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from runtimes.manifest import MANIFEST, dump, file_entry

from .errors import OutputError


def check_output(out: Path, force: bool) -> None:
    """Fail early (before any model work) if the output cannot be written."""
    if out.exists() and not force:
        raise OutputError(f"output {out} already exists (pass --force to replace it)")
    if out.exists() and not out.is_dir():
        raise OutputError(f"output {out} exists and is not a directory")
    parent = out.resolve().parent
    if not parent.is_dir():
        raise OutputError(f"output parent directory {parent} does not exist")
    try:  # a real probe: os.access says yes to root even on a read-only filesystem
        os.rmdir(tempfile.mkdtemp(prefix=f".{out.name}.probe-", dir=parent))
    except OSError as e:
        raise OutputError(f"output directory {parent} is not writable: {e.strerror}") from e


class BundleWriter:
    """`with BundleWriter(out, force) as w:` — write files into `w.dir`; on success call `w.commit(manifest)`."""

    def __init__(self, out: Path, force: bool):
        self.out = Path(out)
        self.force = force
        self.dir: Path | None = None
        self.committed = False

    def __enter__(self) -> "BundleWriter":
        check_output(self.out, self.force)
        try:
            self.dir = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-", dir=self.out.resolve().parent))
        except OSError as e:
            raise OutputError(f"cannot create a directory next to {self.out}: {e}") from e
        return self

    def file_table(self) -> dict[str, Any]:
        assert self.dir is not None
        return {p.name: file_entry(p) for p in sorted(self.dir.iterdir()) if p.is_file() and p.name != MANIFEST}

    def commit(self, manifest: dict[str, Any]) -> Path:
        assert self.dir is not None
        manifest["files"] = self.file_table()
        (self.dir / MANIFEST).write_text(dump(manifest))
        old = None
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.old-{os.getpid()}")
            os.replace(self.out, old)
        os.replace(self.dir, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self.committed = True
        return self.out

    def __exit__(self, *exc: Any) -> None:
        if not self.committed and self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
