"""The memory store and op parsers under hostile model output: how long refusals and the largest updates take.

    python bench/memory_hostile.py [--sizes 2000,8000,32000]

Prints the time of: parsing (refusing) a 50,000-event update, a 30,000-deep nesting, a pathological brace soup of
the maximum length; applying the largest update the parser admits (MAX_EVENTS events, 300-character texts) to a
store of 20,000 memories; and `MemoryStore.add` of N memories for each N of --sizes (one transaction each), whose
time per memory should stay flat (it grew linearly with the store, so quadratically in total, before the
memories_text index: 8,000 ADDs took 2.9 s, now 0.17 s on the 2-core development machine). Timing only, no
assertions: tests/test_memory_hostile.py asserts the behaviour.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtimes.memory.parse import MAX_EVENTS, MAX_OUTPUT_CHARS, ParseError, parse_extract, parse_update  # noqa: E402
from runtimes.memory.prompts import format_memories  # noqa: E402
from runtimes.memory.store import MemoryStore  # noqa: E402


def embed(texts: list[str]) -> np.ndarray:
    out = np.zeros((len(texts), 8), dtype=np.float32)
    for i, t in enumerate(texts):
        out[i, hash(t) % 8] = 1.0
    return out


def timed(label: str, fn) -> None:
    t0 = time.perf_counter()
    try:
        fn()
        what = "parsed / applied"
    except ParseError as e:
        what = f"ParseError: {e}"
    print(f"{label:55s} {1e3 * (time.perf_counter() - t0):9.1f} ms  {what[:70]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="2000,8000,32000")
    a = p.parse_args(argv)
    ev = {"id": "0", "text": "x", "event": "DELETE"}
    timed("parse_update: 50,000 events", lambda: parse_update(json.dumps({"memory": [ev] * 50_000})))
    timed("parse_extract: 30,000 levels of nesting", lambda: parse_extract('{"facts": ' + "[" * 30_000))
    soup = ('\\"{"a":"' * MAX_OUTPUT_CHARS)[:MAX_OUTPUT_CHARS]
    timed(f"parse_extract: {len(soup):,}-character brace / quote soup", lambda: parse_extract(soup))
    with tempfile.TemporaryDirectory() as d:
        with MemoryStore(Path(d) / "big.sqlite") as s:
            s.add([f"memory {i}" for i in range(20_000)], owner="u", embed_fn=embed)
            _, id_map = format_memories(s.all("u")[:40], with_dates=False)
            kinds = ("ADD", "UPDATE", "DELETE", "NONE")
            raw = json.dumps({"memory": [{"id": str(n % 40), "text": f"event {n} " + "z" * 300, "event": kinds[n % 4]}
                                         for n in range(MAX_EVENTS)]})
            events = parse_update(raw)
            timed(f"apply_update: {len(events)} events on 20,000 memories",
                  lambda: s.apply_update(events, id_map, owner="u", embed_fn=embed))
        for n in (int(x) for x in a.sizes.split(",")):
            with MemoryStore(Path(d) / f"add{n}.sqlite") as s:
                t0 = time.perf_counter()
                s.add([f"fact {i}" for i in range(n)], owner="u", embed_fn=embed)
                dt = time.perf_counter() - t0
                print(f"{'add: ' + format(n, ',') + ' memories in one transaction':55s} {1e3 * dt:9.1f} ms  "
                      f"{1e6 * dt / n:.1f} us per memory")
    return 0


if __name__ == "__main__":
    sys.exit(main())
