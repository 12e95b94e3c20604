"""Output directories of every memlora command (bundle, eval report, profile report, trained adapter). Stdlib only.

One rule for all of them, because an output path is where a tool can destroy what a user owns:
- an existing path is replaced only with `force`, and only when it is empty or an earlier output of the same kind
  (`owned(path)`: a bundle's manifest with our `tool` field, a report's schema, ...); a file is never replaced;
- an output equal to, inside or containing an input (base model, adapters, data file), the current directory, a home
  or the root directory is refused;
- everything is written into `.NAME.partial-*` beside the output (with a marker naming this process) and renamed
  into place at the end with a no-replace rename, after checking the path again: a directory that appeared at the
  output path while the command ran is never replaced;
- a later run removes the partial directories of runs that were killed (their marker names a dead process), and
  says where older leftovers without a marker are;
- the result gets the user's umask, not mkdtemp's 0700.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

log = logging.getLogger("memlora.output")
MARKER = ".memlora-partial"


class OutputError(Exception):
    """The output location cannot be used, or using it would replace something this tool did not make."""


def json_file_has(path: Path, check: Callable[[dict[str, Any]], bool]) -> bool:
    """True when `path` is a JSON object (at most 64 MiB) for which `check` holds; False for anything else."""
    try:
        if not path.is_file() or path.stat().st_size > 64 << 20:
            return False
        raw = json.loads(path.read_text(encoding="utf-8"))
        return isinstance(raw, dict) and bool(check(raw))
    except (OSError, ValueError, TypeError, AttributeError, RecursionError):
        return False


def _real(p: str | Path) -> Path:
    return Path(os.path.realpath(os.path.abspath(p)))


def _overlaps(a: Path, b: Path) -> str | None:
    if a == b:
        return "is"
    if b in a.parents:
        return "is inside"
    if a in b.parents:
        return "contains"
    return None


def never_replaced(path: Path) -> bool:
    """`owned` for outputs a command never replaces (it has no --force): memlora-train's adapter directories."""
    return False


def check_output(out: str | Path, *, force: bool, owned: Callable[[Path], bool], kind: str,
                 inputs: Iterable[str | Path] = ()) -> None:
    """Fail (OutputError, one line) before any expensive work if `out` cannot or must not be written."""
    out = Path(out)
    if os.path.islink(out):
        raise OutputError(f"output {out} is a symbolic link; give the directory itself")
    real = _real(out)
    homes = {_real(Path.home())} | ({_real(os.environ["HOME"])} if os.environ.get("HOME") else set())
    for place, what in [(Path("/"), "the root directory"), (_real(Path.cwd()), "the current directory"),
                        *((h, "a home directory") for h in homes)]:
        rel = _overlaps(real, place)
        if rel in ("is", "contains"):
            raise OutputError(f"output {out} {rel} {what}; give a new directory for the {kind}")
    for inp in inputs:
        if inp is None or str(inp) == "":
            continue
        rel = _overlaps(real, _real(inp))
        if rel:
            raise OutputError(f"output {out} {rel} the input {inp}; give a separate directory for the {kind}")
    if os.path.lexists(out):
        if owned is never_replaced:
            raise OutputError(f"output {out} already exists; give a new path for the {kind}")
        if not force:
            raise OutputError(f"output {out} already exists (pass --force to replace an earlier {kind})")
        if not out.is_dir():
            raise OutputError(f"output {out} exists and is not a directory; refusing to replace it")
        if not _replaceable(out, owned):
            raise OutputError(f"output {out} exists and is not a {kind} written by memlora; refusing to replace it "
                              "(even with --force)")
    parent = real.parent
    if not parent.is_dir():
        raise OutputError(f"output parent directory {parent} does not exist")
    try:  # a real probe: os.access says yes to root even on a read-only filesystem
        os.rmdir(tempfile.mkdtemp(prefix=f".{out.name}.probe-", dir=parent))
    except OSError as e:
        raise OutputError(f"output directory {parent} is not writable: {e.strerror}") from e


def _replaceable(path: Path, owned: Callable[[Path], bool]) -> bool:
    try:
        return not any(path.iterdir()) or owned(path)
    except OSError:
        return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _chmod_tree(root: Path) -> None:
    """mkdtemp makes a 0700 directory, and some writers make 0600 files (onnx's external-data writer, mkstemp):
    give the whole result the permissions the user's umask gives a new directory / file. A bundle file left 0600
    is unreadable to the app once `adb push` has copied it, with its mode, to /data/local/tmp."""
    mask = _umask()
    os.chmod(root, 0o777 & ~mask)
    for dirpath, dirnames, filenames in os.walk(root):
        for names, mode in ((dirnames, 0o777), (filenames, 0o666)):
            for name in names:
                p = os.path.join(dirpath, name)
                if not os.path.islink(p):
                    os.chmod(p, mode & ~mask)


_RENAME_NOREPLACE = 1
_libc = None


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename `src` to `dst`, failing with FileExistsError if `dst` exists (Linux renameat2; elsewhere a check
    right before the rename, which leaves a window of microseconds instead of the whole run)."""
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        _libc = ctypes.CDLL(name, use_errno=True) if name else False
    fn = getattr(_libc, "renameat2", None) if _libc else None
    if fn is not None:
        at_fdcwd = -100
        if fn(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(err, os.strerror(err), str(dst))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(parent: Path, name: str) -> None:
    """Remove this tool's leftovers for output `name` in `parent` from runs that were killed (SIGKILL, power loss):
    only directories whose marker names a process of this host that no longer runs."""
    try:
        entries = [p for p in parent.iterdir() if p.name.startswith(f".{name}.partial-") or p.name.startswith(f".{name}.old-")]
    except OSError:
        return
    host = socket.gethostname()
    for p in entries:
        if not p.is_dir() or p.is_symlink():
            continue
        marker = p / MARKER
        info: dict[str, Any] = {}
        if json_file_has(marker, lambda d: info.update(d) or True):
            pid = info.get("pid")
            if info.get("host") == host and isinstance(pid, int) and not _alive(pid):
                shutil.rmtree(p, ignore_errors=True)
                log.warning("removed %s, left by an interrupted run", p)
        else:
            log.warning("%s looks like the leftover of an interrupted memlora run (no marker: an older version); "
                        "remove it if no memlora command is running", p)


class OutputDir:
    """`with OutputDir(out, force=..., owned=..., kind=...) as tmp:` write into `tmp`, then call `.commit()`.
    Without commit (an error, Ctrl-C, SIGTERM) the temporary directory is removed and `out` is untouched."""

    def __init__(self, out: str | Path, *, force: bool, owned: Callable[[Path], bool], kind: str,
                 inputs: Iterable[str | Path] = ()):
        self.out = Path(out)
        self.force = force
        self.owned = owned
        self.kind = kind
        self.inputs = [i for i in inputs if i]
        self.dir: Path | None = None
        self.committed = False

    def check(self) -> None:
        check_output(self.out, force=self.force, owned=self.owned, kind=self.kind, inputs=self.inputs)

    def __enter__(self) -> Path:
        self.check()
        parent = _real(self.out).parent
        clean_stale(parent, self.out.name)
        try:
            self.dir = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-", dir=parent))
            (self.dir / MARKER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                       "output": str(self.out)}))
        except OSError as e:
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)
            raise OutputError(f"cannot create a directory next to {self.out}: {e.strerror or e}") from e
        return self.dir

    def commit(self) -> Path:
        """Move the finished output into place. Refuses (OutputError, the temporary output removed) when the path
        now holds something that may not be replaced, including a directory that appeared while the command ran."""
        assert self.dir is not None and not self.committed
        (self.dir / MARKER).unlink()
        _chmod_tree(self.dir)
        out = self.out
        old: Path | None = None
        if os.path.lexists(out):
            if not self.force:
                raise OutputError(f"output {out} appeared while this command ran; it was left untouched and nothing "
                                  "was written (pass --force to replace an earlier output)")
            if os.path.islink(out) or not out.is_dir() or not _replaceable(out, self.owned):
                raise OutputError(f"output {out} now holds something that is not a {self.kind} written by memlora; "
                                  "it was left untouched and nothing was written")
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=self.dir.parent))
            os.rmdir(old)
            rename_noreplace(out, old)
            try:
                (old / MARKER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
            except OSError:
                pass
        try:
            rename_noreplace(self.dir, out)
        except FileExistsError:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)  # ours (checked above); the new output did not land either
            raise OutputError(f"output {out} appeared while this command ran; it was left untouched and nothing "
                              "was written") from None
        except OSError:
            if old is not None:
                rename_noreplace(old, out)
            raise
        self.committed = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return out

    def __exit__(self, *exc: Any) -> None:
        if not self.committed and self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
