"""ExecuTorch's own multimodal runner on a bundle's vision op, against runtimes/vision.py.

    PYTHONPATH=. python bench/multimodal_runner.py BUNDLE [--items 12]

`executorch.extension.llm.runner.MultimodalRunner` (the Python binding of the C++ runner that Android's `LlmModule`
wraps) runs the bundle's `vision.pte` unchanged: the manifest's prompt halves as text inputs around the uint8 image,
greedy, the manifest's generation limit. It maps one data file, so the op's data files are merged first (as for
the text ops' TextLLMRunner, bench/textllm_runner.py). Prints each answer from both and how many agree, on the
first easy-VQA test questions.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    from executorch.extension.llm.runner import (GenerationConfig, MultimodalRunner, make_image_input,
                                                 make_text_input)
    from PIL import Image

    from exporter.vision.data import load_split
    from runtimes.executorch import merge_data_files
    from runtimes.vision import VisionRunner, image_tensor

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle")
    p.add_argument("--items", type=int, default=12)
    a = p.parse_args()
    out = Path(a.bundle)
    v = json.loads((out / "manifest.json").read_text())["vision"]
    limit = int(v["generation"]["max_new_tokens"])
    ours = VisionRunner(out)
    split = load_split("test")
    same = 0
    with tempfile.TemporaryDirectory() as tmp:
        merged = Path(tmp) / "merged.ptd"
        merge_data_files([out / f for f in v["data_files"]], merged)
        runner = MultimodalRunner(str(out / v["program"]), str(out / "tokenizer.json"), str(merged))
        for it in split.items[:a.items]:
            im = Image.open(split.image_paths[it.image]).convert("RGB")
            toks: list[str] = []
            runner.generate([make_text_input(v["prompt"]["before"]), make_image_input(image_tensor(im, 224)[0]),
                             make_text_input(v["prompt"]["after"].replace("{question}", it.question))],
                            GenerationConfig(max_new_tokens=limit, temperature=0.0, echo=False),
                            token_callback=toks.append)
            theirs = "".join(toks).replace("<|im_end|>", "").strip()
            mine = ours.answer(im, it.question, whole=True)  # the generated text, before taking the answer out
            same += theirs == mine
            print(f"{it.question!r} ({it.answer}) | MultimodalRunner {theirs!r} | VisionRunner {mine!r}", flush=True)
            runner.reset()
    print(f"same answers: {same} of {a.items}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
