"""Which questions the memory pipeline sends to the vision op (MemLoRA-V's routing), without running any model.

    python bench/visual_routing.py [--split train|val|all] [--shares 6] [--seed 0]

Per conversation: the image shares of `memlora-eval --visual` (runtimes/memory/visual.py) kept in a fresh store as
the pixels path keeps them, then every question asked (its visual questions and all LoCoMo questions of categories
1-5) through `MemoryPipeline.route_image` with the real all-MiniLM embedder. Prints how many visual questions go to
the vision op with the right image, and which LoCoMo questions would go to the vision op (they ask about the
conversations' own photos, which the store holds only as captions).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtimes.memory import locomo, visual  # noqa: E402
from runtimes.memory.embed import TorchEmbedder  # noqa: E402
from runtimes.memory.pipeline import VISUAL_WORDS, MemoryPipeline  # noqa: E402
from runtimes.memory.store import MemoryStore  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo_dev.json"))
    ap.add_argument("--split", default="train", choices=["train", "val", "all"])
    ap.add_argument("--shares", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    convs = locomo.split(locomo.load(args.data), args.split)
    embedder = TorchEmbedder()
    right = sent = asked = 0
    photo_words = misrouted = 0
    with tempfile.TemporaryDirectory() as tmp:
        for conv in convs:
            aug, questions = visual.augment(conv, seed=args.seed, shares=args.shares)
            with MemoryStore(Path(tmp) / f"{conv.sample_id}.sqlite") as store:
                pipe = MemoryPipeline(None, embedder, store, owner=conv.sample_id)
                for s in aug.sessions:
                    for t in s.turns:
                        if "image" in t:
                            pipe.share_image(t, s.date)
                for q in questions:
                    r = pipe.route_image(q.question)
                    asked += 1
                    sent += r is not None
                    right += r is not None and r[0].turn_id == q.dia_id
                for q in conv.questions(categories=(1, 2, 3, 4, 5)):
                    if not VISUAL_WORDS.search(q["question"]):
                        continue
                    photo_words += 1
                    r = pipe.route_image(q["question"])
                    if r is not None:
                        misrouted += 1
                        print(f"  {conv.sample_id}: LoCoMo question to the vision op: {q['question']!r} "
                              f"(image {r[0].turn_id}, {r[1]:.3f})")
    print(f"{len(convs)} conversations ({args.split}), {args.shares} shares each, seed {args.seed}: visual questions "
          f"{asked}, to the vision op {sent}, with the right image {right}; LoCoMo questions about a photo "
          f"{photo_words}, to the vision op {misrouted}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
