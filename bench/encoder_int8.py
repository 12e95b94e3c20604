"""Which of the image encoder's convolutions can run at int8: the sensitivity behind `encoder.INT8_CONVS`.

    PYTHONPATH=. python bench/encoder_int8.py [--images 16] [--threshold 2e-3]

Each non-depthwise conv of EfficientNet-Lite0 alone at XNNPACK's dynamic int8 (per-channel int8 weights, input
quantized per call; `program.quantize_vision_encoder`'s scheme), the rest fp32: 1 - cosine of the encoder's features
against fp32 on held-out easy-VQA **validation** images (the choice is made here). Prints the table, the set the
rule picks (convs after the colour tap, block `MID_BLOCK`, whose error alone is below `--threshold`), and the
features of that set and of `INT8_CONVS` against fp32 on **test** images (reported, not chosen on).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    import torch
    from PIL import Image

    from exporter.vision.data import load_split
    from exporter.vision.encoder import INT8_CONVS, MID_BLOCK, load_encoder, preprocess
    from exporter.vision.program import int8_encoder

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--threshold", type=float, default=2e-3)
    a = p.parse_args()
    torch.set_num_threads(1)
    enc = load_encoder()

    def images(split: str) -> torch.Tensor:
        paths = load_split(split).image_paths
        return preprocess([Image.open(x) for x in random.Random(1).sample(paths, a.images)])

    def error(convs, x: torch.Tensor, ref: torch.Tensor) -> float:
        q = int8_encoder(enc, (x[:1],), convs, prefix="net.")
        with torch.no_grad():
            out = torch.cat([q(x[i:i + 1]) for i in range(len(x))])
        return 1 - torch.nn.functional.cosine_similarity(out.flatten(1), ref.flatten(1)).mean().item()

    val, test = images("val"), images("test")
    with torch.no_grad():
        ref_val, ref_test = enc(val), enc(test)
    convs = [(n, m) for n, m in enc.net.named_modules() if isinstance(m, torch.nn.Conv2d) and m.groups == 1]
    print(f"{'conv':28s} {'weights':>8s} {'1 - cos (val)':>14s}")
    picked = []
    for name, m in convs:
        e = error([name], val, ref_val)
        block = int(name.split(".")[1]) if name.startswith("_blocks.") else (-1 if name == "_conv_stem" else 99)
        if block > MID_BLOCK and e < a.threshold:
            picked.append(name)
        print(f"{name:28s} {m.weight.numel():8d} {e:14.5f}", flush=True)
    weights = dict(enc.net.named_modules())
    for label, chosen in (("picked here", picked), ("INT8_CONVS", list(INT8_CONVS))):
        n = sum(weights[c].weight.numel() for c in chosen)
        print(f"{label}: {len(chosen)} convs, {n / 1e6:.2f} M weights; 1 - cos val {error(chosen, val, ref_val):.5f}, "
              f"test {error(chosen, test, ref_test):.5f}")
    print("same set" if set(picked) == set(INT8_CONVS) else f"differs: {sorted(set(picked) ^ set(INT8_CONVS))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
