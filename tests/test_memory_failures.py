"""bench/memory_failures.py: each wrong answer gets the first source that explains it, following the evidence fact
from the conversation through extraction, the store and retrieval (real MiniLM embeddings, a real SQLite store)."""

import sys
from pathlib import Path

import numpy as np

from runtimes.memory import locomo
from runtimes.memory.embed import TorchEmbedder
from runtimes.memory.store import MemoryStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from memory_failures import attribute  # noqa: E402

OBS = {"D1:1": ["Caroline moved from Boston to Denver."], "D1:2": ["Melanie paints sunrises with her kids."],
       "D1:3": ["Caroline adopted a dog named Max."]}


def test_each_failure_gets_its_source(tmp_path):
    emb = TorchEmbedder()

    def embed(texts):
        return np.asarray(emb.embed(list(texts)), dtype=np.float32)

    conv = locomo.Conversation(sample_id="c", speakers=("Caroline", "Melanie"), sessions=[], qa=[], observations=OBS)
    store = tmp_path / "s.sqlite"
    with MemoryStore(store) as s:
        s.add(["Caroline moved to Denver from Boston.", "Melanie has two kids."], owner="c", embed_fn=embed)
        denver, kids = [m.id for m in sorted(s.all("c"), key=lambda m: m.id)]
    windows = [{"dia_ids": ["D1:1", "D1:2", "D1:3", "D1:4"],
                "facts": ["Caroline moved to Denver from Boston.", "Caroline adopted a dog called Max."]}]

    def q(evidence, retrieved, f1=0.0, turns=()):
        return {"category": 4, "question": "?", "gold": "g", "prediction": "p", "f1": f1, "evidence": evidence,
                "retrieved": [[i, 0.5] for i in retrieved], "turns": [[t, 0.03] for t in turns]}

    det = {"windows_extracted": windows, "qa": [
        q(["D1:4"], [denver]),            # evidence turn without an observation
        q(["D1:2"], [kids]),              # painting: never extracted
        q(["D1:3"], [denver]),            # the dog: extracted, not in the store
        q(["D1:1"], [kids]),              # Denver: stored, not retrieved
        q(["D1:1"], [kids, denver]),      # Denver: stored and shown, still wrong
        q(["D1:1"], [denver], f1=0.8),    # right: not a failure
        q(["D1:2"], [kids], turns=["D1:5", "D1:2"]),  # never extracted, but its turn was shown beside the memories
        q(["D1:2"], [kids], turns=["D1:5"]),          # other turns shown: still never extracted
    ]}
    got = attribute(conv, det, store, embed, threshold=0.6, below=0.5)
    assert [f["source"] for f in got] == ["no gold fact", "not extracted", "lost in update", "not retrieved",
                                          "answered wrongly", "turn shown", "not extracted"]
    assert got[5]["evidence_shown"] == ["D1:2"]
    assert got[3]["rank"] is None and got[4]["rank"] == 2 and got[4]["memory"] == "Caroline moved to Denver from Boston."
