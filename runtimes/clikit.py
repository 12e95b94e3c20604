"""What every memlora command shares at its edges (stdlib only): one-line errors, exit codes, signals, quiet start-up.

Exit codes (all five commands):
    0    success
    1    a user error: bad input, bundle, path or output (one line `PROG: error: ...`)
    2    command-line misuse (unknown option, bad value; one line)
    70   an internal error (a bug: one line; `--debug` shows the traceback)
    128+N  stopped by signal N: 130 Ctrl-C (SIGINT), 143 SIGTERM, 129 SIGHUP; nothing half-written is left
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import re
import signal
import sys
import warnings
from typing import Any, Callable, NoReturn, Sequence

EXIT_USER = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70
NOISY_LOGGERS = ("torch", "torchao", "executorch", "transformers", "peft", "root", "httpx", "sentence_transformers",
                 "onnxruntime", "onnx_ir", "onnxscript", "urllib3", "filelock", "huggingface_hub", "matplotlib", "PIL")


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class Interrupted(KeyboardInterrupt):
    """SIGTERM / SIGHUP turned into the same unwinding as Ctrl-C, so every `finally` and context manager runs."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_received: list[int] = []  # the signals `_raise` has turned into Interrupted in this process


def _raise(signum: int, frame: Any) -> None:
    _received.append(signum)
    raise Interrupted(signum)


def _signal_behind(e: BaseException) -> int | None:
    """The signal that stopped the body, if one did. A library's own cleanup can replace the KeyboardInterrupt while it
    unwinds (torch.export, interrupted inside a dispatch mode, raises "Trying to pop empty mode stack" from its
    `finally`), and a wrapper can turn that into its own error; the interrupt is then only in the exception's chain,
    or, where a wrapper dropped the chain, in `_received`."""
    seen: set[int] = set()
    x: BaseException | None = e
    while x is not None and id(x) not in seen:
        seen.add(id(x))
        if isinstance(x, Interrupted):
            return x.signum
        if isinstance(x, KeyboardInterrupt):
            return int(signal.SIGINT)
        x = x.__cause__ or x.__context__
    return _received[-1] if _received else None


def install_signal_handlers() -> None:
    for s in (signal.SIGTERM, signal.SIGHUP):
        try:
            signal.signal(s, _raise)
        except (ValueError, OSError):  # not the main thread, or not on this platform
            pass


def quiet_startup(verbose: bool, prog: str) -> None:
    """Keep library chatter (torch / torchao / transformers warnings, ExecuTorch's C++ cpuinfo lines) off the
    terminal unless `verbose`. Call before importing torch. Python-level stderr (our messages, progress bars) still
    reaches the terminal; what C/C++ libraries write straight to file descriptor 2 goes to a log file instead."""
    install_signal_handlers()
    level = logging.DEBUG if verbose else logging.WARNING
    logging.basicConfig(level=level, stream=sys.stderr, format="%(name)s: %(message)s")
    if verbose:
        return
    os.environ.setdefault("TORCH_LOGS", "-torch")  # torch configures its loggers at import; "-torch" = errors only
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights" bar reads it too
    os.environ.setdefault("PYTHONWARNINGS", "ignore")  # child processes (profiler) start quiet as well
    os.environ.setdefault("ORT_LOGGING_LEVEL", "3")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for cat in (FutureWarning, UserWarning, DeprecationWarning, RuntimeWarning):
        warnings.filterwarnings("ignore", category=cat)
    _divert_native_stderr(prog)


_native_log: str | None = None  # where C/C++ library output of this process went, once diverted


def _divert_native_stderr(prog: str) -> None:
    global _native_log
    if _native_log is not None or os.environ.get("MEMLORA_NATIVE_STDERR") == "keep":
        return
    # Only in the command itself (its console script), with Python's stderr on descriptor 2: never inside a test
    # runner or a program that calls main() in-process.
    if os.path.basename(sys.argv[0] if sys.argv else "") != prog:
        return
    try:
        if sys.stderr.fileno() != 2:
            return
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        return
    from pathlib import Path

    path = None
    for root in (os.environ.get("MEMLORA_CACHE") or str(Path.home() / ".cache" / "memlora"), "/tmp"):
        try:
            d = Path(root) / "logs"
            d.mkdir(parents=True, exist_ok=True)
            path = d / f"{prog}.native.log"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            break
        except OSError:
            path = None
    if path is None:
        fd = os.open(os.devnull, os.O_WRONLY)
    os.dup2(fd, 2)
    os.close(fd)
    # Python keeps writing to the terminal through a copy of the original descriptor; ExecuTorch's Python binding
    # writes its C++ log lines ("[cpuinfo_utils.cpp:71] ...") through sys.stderr, so those are sorted out there.
    terminal = os.fdopen(saved, "w", buffering=1, encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                         errors="backslashreplace")
    sys.stderr = _NativeLogFilter(terminal, os.fdopen(os.dup(2), "w", buffering=1, errors="backslashreplace"))
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
            h.setStream(sys.stderr)
    _native_log = str(path) if path else os.devnull
    # Child processes inherit descriptor 2 (the log); ours tell them where the terminal is through this variable.
    os.environ["MEMLORA_NATIVE_STDERR"] = "keep"


_NATIVE_LINE = re.compile(r"^\[[\w./-]+\.(?:cpp|cc|c|h|hpp):\d+\] ")


class _NativeLogFilter(io.TextIOBase):
    """sys.stderr for a quiet command: C++ log lines ("[file.cpp:71] ...", which ExecuTorch's binding writes in
    pieces) go to the log file; everything else reaches the terminal unchanged and unbuffered, so progress bars
    still draw. Only text starting with "[" is held back, until its "]" shows whether it is such a line."""

    def __init__(self, terminal: Any, log: Any):
        self.terminal, self.log = terminal, log
        self._pending = ""
        self._native = False

    def write(self, s: str) -> int:
        n = len(s)
        while s:
            if self._native:  # inside a native line: to the log up to its newline
                head, nl, s = s.partition("\n")
                self.log.write(head + nl)
                self._native = not nl
                continue
            if self._pending or s.startswith("["):
                self._pending += s
                s = ""
                if "]" in self._pending or "\n" in self._pending or len(self._pending) > 200:
                    pending, self._pending = self._pending, ""
                    if _NATIVE_LINE.match(pending):
                        self._native = True
                        s = pending
                    else:
                        self.terminal.write(pending)
                continue
            cut = s.find("\n[")
            if cut < 0:
                self.terminal.write(s)
                break
            self.terminal.write(s[:cut + 1])
            s = s[cut + 1:]
        return n

    def flush(self) -> None:
        self.terminal.flush()
        self.log.flush()

    def fileno(self) -> int:
        return self.terminal.fileno()

    def isatty(self) -> bool:
        return self.terminal.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.terminal.encoding


def os_error_line(e: OSError) -> str:
    what = e.strerror or str(e)
    where = e.filename if e.filename is not None else ""
    return f"{what}: {where}" if where else what


def run_main(prog: str, body: Callable[[], int], *, debug: bool, user_errors: Sequence[type[BaseException]],
             interrupted: str = "nothing was written") -> int:
    """Run a command's body: user errors -> one line + exit 1, OS errors (disk full, permissions) -> one line naming
    the path + exit 1, signals -> one line + 128+N, anything else -> one line + exit 70 (`--debug` re-raises)."""
    try:
        try:
            return body()
        except BaseException as e:
            signum = None if isinstance(e, SystemExit) else _signal_behind(e)
            if signum is None or (debug and not isinstance(e, KeyboardInterrupt)):
                raise
            print(f"{prog}: interrupted ({signal.Signals(signum).name}); {interrupted}", file=sys.stderr)
            return 128 + signum
    except tuple(user_errors) as e:  # type: ignore[misc]
        if debug:
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USER
    except OSError as e:
        if debug:
            raise
        print(f"{prog}: error: {os_error_line(e)}", file=sys.stderr)
        return EXIT_USER
    except (Exception, RecursionError) as e:
        if debug:
            raise
        text = " ".join(str(e).split())[:300]
        print(f"{prog}: internal error: {type(e).__name__}: {text} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL
