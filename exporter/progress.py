"""Export stages a person can follow: each stage's start, a live elapsed-time indicator while it runs (a ticking
line on a terminal, a "still ..." line every 30 s in a log) and its time at the end, recorded in `timings`."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from typing import Iterator

log = logging.getLogger("memlora.export")


@contextlib.contextmanager
def step(name: str, timings: dict[str, float]) -> Iterator[None]:
    log.info("%s ...", name)
    t0 = time.perf_counter()
    with _ticker(name, t0):
        yield
    timings[name] = round(time.perf_counter() - t0, 2)
    log.info("%s done in %.1f s", name, timings[name])


@contextlib.contextmanager
def _ticker(name: str, t0: float) -> Iterator[None]:
    if not log.isEnabledFor(logging.INFO):
        yield
        return
    stream = sys.stderr
    tty = stream.isatty()
    stop = threading.Event()

    def run() -> None:
        last = t0
        while not stop.wait(1.0 if tty else 5.0):
            now = time.perf_counter()
            if tty:
                stream.write(f"\r  {name}: {now - t0:.0f} s elapsed ")
                stream.flush()
            elif now - last >= 30:
                last = now
                log.info("still %s (%.0f s)", name, now - t0)

    th = threading.Thread(target=run, name=f"progress {name}", daemon=True)
    th.start()
    try:
        yield
    finally:
        stop.set()
        th.join()
        if tty:
            stream.write("\r\033[K")
            stream.flush()
