"""VQA accuracy of a bundle's vision op (the exported `vision.pte`, run by runtimes.vision) against the PyTorch
reference (float encoder, projector and adapter on the float base), on the same seeded easy-VQA test questions.

    PYTHONPATH=. python bench/vision_accuracy.py BUNDLE [--items 500] [--backend executorch|onnx] [--out FILE]

The vision op directory is the one the bundle was exported from (its manifest's spec). Prints accuracy per
question kind for both, their answer agreement, and the exported program's answer time.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    import torch
    from PIL import Image

    from exporter.load import load_base
    from exporter.spec import ExportSpec
    from exporter.vision import load_vqa_model, resolve_vision
    from exporter.vision.data import VQAItem, accuracy, kind, load_split
    from exporter.vision.encoder import load_encoder, preprocess
    from runtimes.manifest import load_manifest
    from runtimes.vision import VisionRunner, final_answer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle")
    p.add_argument("--items", type=int, default=500, help="seeded easy-VQA test questions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="executorch", choices=["executorch", "onnx"],
                   help="run vision.pte (ExecuTorch) or the vision op's ONNX graphs (onnxruntime)")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    a = p.parse_args()
    m = load_manifest(a.bundle)
    spec = ExportSpec.from_dict(m.raw["spec"])
    split = load_split("test")
    items = random.Random(a.seed).sample(split.items, min(a.items, len(split.items)))
    runner = VisionRunner(m, backend=a.backend)
    exported, t0 = [], time.perf_counter()
    for it in items:
        exported.append(runner.answer(Image.open(split.image_paths[it.image]), it.question))
    answer_s = (time.perf_counter() - t0) / len(items)
    model = load_vqa_model(resolve_vision(spec.vision.path, spec.model.base), load_base(spec.model.base))
    encoder, reference = load_encoder(), []
    for i in range(0, len(items), 32):
        chunk = items[i:i + 32]
        with torch.no_grad():
            feats = encoder(preprocess([Image.open(split.image_paths[it.image]) for it in chunk]))
        reference += model.answer([VQAItem(it.question, it.answer, k) for k, it in enumerate(chunk)], feats)
    after = (m.vision.get("generation") or {}).get("answer_after")
    reference = [final_answer(r, after) for r in reference]  # as the runtime answers

    def by_kind(preds):
        out = {"all": accuracy(preds, items)}
        for k in ("color", "shape", "yes/no"):
            sel = [(p, it) for p, it in zip(preds, items) if kind(it) == k]
            out[k] = accuracy(*zip(*sel)) if sel else None
        return out

    res = {"bundle": str(a.bundle), "backend": a.backend, "items": len(items),
           "data": f"easy-VQA test, seeded sample (seed {a.seed})",
           "exported": by_kind(exported), "reference": by_kind(reference),
           "agreement": sum(x.strip().lower() == y.strip().lower() for x, y in zip(exported, reference)) / len(items),
           "exported_answer_ms": round(1e3 * answer_s, 1)}
    pct = lambda x: "-" if x is None else f"{100 * x:.1f} %"  # noqa: E731
    for name in ("exported", "reference"):
        r = res[name]
        print(f"{name:9s} all {pct(r['all'])}  colour {pct(r['color'])}  shape {pct(r['shape'])}  "
              f"yes/no {pct(r['yes/no'])}")
    print(f"agreement {100 * res['agreement']:.1f} %  ({len(items)} questions); exported answer "
          f"{res['exported_answer_ms']} ms each")
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
