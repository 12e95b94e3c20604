"""VQA data for the `vqa` op: easy-VQA (MIT; 64 x 64 images of one coloured shape, 13 answers), from its PyPI package.

Splits: `train` minus a held-out tenth of its images (seeded, by image, so no validation image is seen in training)
= training; that tenth = validation (the choices are made on it); `test` = the package's test split, reported.
Encoder features are computed once per image and cached (`$MEMLORA_CACHE/vqa-features/<split>-<key>.safetensors`,
float16 [n_images, 1360, 7, 7]; the key covers the encoder version and the image paths), so training never runs
the encoder.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from runtimes.vision import final_answer

from ..errors import InputError

log = logging.getLogger("memlora.vision")

VAL_FRACTION = 0.1


@dataclass(frozen=True)
class VQAItem:
    question: str
    answer: str
    image: int  # index into the split's image list (and its feature rows)


@dataclass
class VQASplit:
    name: str
    items: list[VQAItem]
    image_paths: list[Path]


def _easy_vqa():
    try:
        import easy_vqa
    except ImportError as e:
        raise InputError("the VQA data package easy-vqa is not installed (pip install easy-vqa==1.0)") from e
    return easy_vqa


def load_split(split: str, *, seed: int = 0, limit_images: int | None = None) -> VQASplit:
    """`train` (without the held-out images), `val` (the held-out images of train) or `test`."""
    ev = _easy_vqa()
    if split not in ("train", "val", "test"):
        raise InputError(f"VQA split must be train, val or test, got {split!r}")
    source = "test" if split == "test" else "train"
    texts, answers, image_ids = ev.get_test_questions() if source == "test" else ev.get_train_questions()
    paths = ev.get_test_image_paths() if source == "test" else ev.get_train_image_paths()
    ids = sorted(paths)
    if source == "train":
        held = set(random.Random(seed).sample(ids, round(len(ids) * VAL_FRACTION)))
        ids = [i for i in ids if (i in held) == (split == "val")]
    if limit_images is not None:
        ids = ids[:limit_images]
    row = {image_id: n for n, image_id in enumerate(ids)}
    items = [VQAItem(q, a, row[i]) for q, a, i in zip(texts, answers, image_ids) if i in row]
    return VQASplit(split, items, [Path(paths[i]) for i in ids])


def kind(item: VQAItem) -> str:
    """The question's kind: "yes/no", or what an open answer names ("shape", "color"). By the answer, not the
    wording: easy-VQA asks colour questions about "the shape" too ("what color is the shape?")."""
    if item.answer in ("yes", "no"):
        return "yes/no"
    return "shape" if item.answer in ("circle", "rectangle", "triangle") else "color"


def answers() -> list[str]:
    return list(_easy_vqa().get_answers())


def question_groups(items: Sequence[VQAItem], vocabulary: Sequence[str]) -> list[tuple[str, str]]:
    """Per item, (its question with every answer word of `vocabulary` masked, its answer). Items in one group are
    answered the same way by the question's wording alone ("is there not a _ shape?" -> mostly "yes")."""
    import re

    words = sorted({w for w in vocabulary if w not in ("yes", "no")}, key=len, reverse=True)
    pat = re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b") if words else None
    return [((pat.sub("_", it.question) if pat else it.question), it.answer) for it in items]


def balanced_order(items: Sequence[VQAItem], total: int, seed: int, vocabulary: Sequence[str]) -> list[int]:
    """`total` item indices, seeded, drawn so that every (question template, answer) group of `question_groups` is
    equally likely (then an item of it uniformly): the answer cannot be told from the wording, only from the image.
    Without it the joint stage learns "a negated question -> yes, else no" and never looks at the image for yes/no
    (docs/vision.md)."""
    by_group: dict[tuple[str, str], list[int]] = {}
    for i, g in enumerate(question_groups(items, vocabulary)):
        by_group.setdefault(g, []).append(i)
    groups = [by_group[g] for g in sorted(by_group)]
    rng = random.Random(seed)
    return [rng.choice(groups[rng.randrange(len(groups))]) for _ in range(total)] if groups else []


def features_for(split: VQASplit, encoder: torch.nn.Module, preprocess: Callable, *, cache_dir: Path,
                 batch: int = 64, progress: bool = True) -> torch.Tensor:
    """[n_images, C, 7, 7] float16 encoder features of the split's images, from the cache or computed once."""
    from safetensors.torch import load_file, save_file
    from tqdm import tqdm

    from .encoder import VERSION

    key = hashlib.sha256("\n".join([VERSION, *map(str, split.image_paths)]).encode()).hexdigest()[:16]
    path = cache_dir / f"{split.name}-{key}.safetensors"
    if path.is_file():
        return load_file(str(path))["features"]
    from PIL import Image

    out = []
    with torch.no_grad():
        for i in tqdm(range(0, len(split.image_paths), batch), desc=f"encode {split.name} images", unit="batch",
                      disable=not progress, dynamic_ncols=True):
            ims = [Image.open(p) for p in split.image_paths[i:i + batch]]
            out.append(encoder(preprocess(ims)).to(torch.float16))
    feats = torch.cat(out)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"features": feats.contiguous()}, str(tmp))
    tmp.replace(path)
    return feats


def accuracy(preds: Sequence[str], items: Sequence[VQAItem]) -> float:
    """Exact match of the normalised final answer (runtimes.vision.final_answer; lower case, no surrounding space or
    final full stop)."""
    norm = lambda s: final_answer(s, ANSWER_AFTER).strip(".").strip().lower()  # noqa: E731
    return sum(norm(p) == norm(i.answer) for p, i in zip(preds, items)) / max(len(items), 1)


# Yes/no through the attribute: a yes/no question is trained to be answered "<what the image shows>, so <yes|no>"
# ("is there not a red shape?" -> "blue, so yes"): the model first names the colour or shape it reads from the pixels
# (which it does well), then compares that word with the question's. Trained to answer "yes" / "no" directly, it
# answered from the wording alone (docs/vision.md). The op's answer is the text after the last ANSWER_AFTER.
ANSWER_AFTER = ", so "
COLOURS = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")
SHAPES = ("circle", "rectangle", "triangle")
_ATTRIBUTE = re.compile(r"\b(" + "|".join(COLOURS + SHAPES) + r")\b")


def image_attributes(items: Sequence[VQAItem]) -> dict[tuple[int, str], str]:
    """(image, "color" | "shape") -> what the image shows, from its open questions' answers and from the yes/no
    answers that name it ("is there a red shape?" -> yes, "is there not a red shape?" -> no)."""
    found: dict[tuple[int, str], str] = {}
    for it in items:
        k = kind(it)
        if k != "yes/no":
            found[(it.image, k)] = it.answer
            continue
        m = _ATTRIBUTE.search(it.question)
        negated = bool(re.search(r"\b(not|no)\b", it.question))
        if m and (it.answer == "yes") != negated:
            found[(it.image, "shape" if m.group(1) in SHAPES else "color")] = m.group(1)
    return found


def with_attribute_answers(items: Sequence[VQAItem]) -> list[VQAItem]:
    """The training items with each yes/no answer as "<attribute>, so <yes|no>" (`ANSWER_AFTER`); a yes/no item whose
    image's attribute no question of the split tells is left out (a bare yes/no target teaches the wording prior)."""
    found = image_attributes(items)
    out = []
    for it in items:
        if kind(it) != "yes/no":
            out.append(it)
            continue
        m = _ATTRIBUTE.search(it.question)
        seen = found.get((it.image, "shape" if m and m.group(1) in SHAPES else "color")) if m else None
        if seen is not None:
            out.append(VQAItem(it.question, f"{seen}{ANSWER_AFTER}{it.answer}", it.image))
    return out
