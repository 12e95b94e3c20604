"""The visual memory benchmark of `memlora-eval --visual` (MemLoRA-V): LoCoMo conversations in which some turns
share an image, and questions asked after the whole conversation that only the image can answer.

Generated at run time, seeded, from the `easy-vqa` package's **test** split (MIT; 64 x 64 images of one coloured
shape; the vision op never trained or was chosen on it), never written into the repository:
- per conversation, `shares` images (each a different test image) are shared by one of the two speakers in a new
  turn ("Here is a photo of the sign for the garage sale.", dia_id `V<session>:<n>`) inserted at a seeded place of a
  seeded session among the ones evaluated; each share names a different object (`SUBJECTS`), which is how a later
  question points back to it;
- each shared turn also carries `gold_caption`, what a perfect captioner would write ("a red circle", from the
  image's own answers); `with_gold_captions` swaps the images for it (the caption path's upper bound);
- per share, `per_image` of the image's own easy-VQA test questions (an open one, colour or shape, first; then a
  yes/no one), reworded to name the share: "In the photo of the sign for the garage sale that Deborah shared, what
  color is the shape?"; the gold answer is easy-VQA's.

Scoring (`correct`): a prediction is right when the easy-VQA answer words of the gold answer's kind that it
contains are exactly the gold one ("red" or "It was a red circle" for "red"; not "red or blue", not "no" for "yes").
The same rule scores the VLM path's one-word answers and the caption path's free text.
"""

from __future__ import annotations

import copy
import random
import re
from dataclasses import dataclass, replace
from typing import Any, Iterable, Sequence

from .locomo import Conversation, Session

SUBJECTS = [
    "the sign for the garage sale", "the logo for the book club", "the sticker on the new laptop",
    "the tile from the pottery class", "the flag for the parade float", "the badge from the science fair",
    "the magnet from the museum shop", "the poster for the band's gig", "the patch on the hiking backpack",
    "the card from the neighbours", "the banner for the bake sale", "the cookie from the birthday party",
    "the lampshade from the flea market", "the pin from the conference", "the kite from the beach trip",
    "the mural at the train station", "the coaster from the cafe", "the stamp from the post office",
    "the balloon at the fair", "the decal on the bike", "the quilt square from grandma",
    "the road sign near the cabin", "the button from the craft store", "the cake topper for the wedding",
]
OPENERS = ["Here is a photo of {s}.", "Look at this picture of {s}!", "I took a photo of {s}, have a look.",
           "Sharing a picture of {s} with you."]
KINDS = ("color", "shape", "yes/no")


class VisualDataError(ValueError):
    """The benchmark cannot be made (easy-vqa missing, too many shares asked for)."""


@dataclass(frozen=True)
class VisualQuestion:
    question: str
    answer: str
    kind: str  # color | shape | yes/no
    dia_id: str  # the turn that shared the image
    image: str  # easy-VQA test image path
    vqa_question: str  # easy-VQA's own wording

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _easy_vqa() -> Any:
    try:
        import easy_vqa
    except ImportError as e:
        raise VisualDataError("the visual benchmark draws its images from easy-vqa, which is not installed "
                              "(pip install easy-vqa==1.0)") from e
    return easy_vqa


def answer_words() -> list[str]:
    return list(_easy_vqa().get_answers())


SHAPES = ("circle", "rectangle", "triangle")
COLOURS = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")


def kind_of(answer: str) -> str:
    """By the answer: easy-VQA words colour questions with "shape" too ("what color is the shape?")."""
    return "yes/no" if answer in ("yes", "no") else "shape" if answer in SHAPES else "color"


def _test_questions() -> tuple[dict[int, list[tuple[str, str]]], dict[int, str]]:
    ev = _easy_vqa()
    texts, answers, image_ids = ev.get_test_questions()
    by_image: dict[int, list[tuple[str, str]]] = {}
    for q, a, i in zip(texts, answers, image_ids):
        by_image.setdefault(int(i), []).append((q, a))
    return by_image, {int(k): str(v) for k, v in ev.get_test_image_paths().items()}


def visual_question(subject: str, speaker: str, question: str) -> str:
    q = question.strip()
    return f"In the photo of {subject} that {speaker} shared, {q[:1].lower()}{q[1:]}"


def augment(conv: Conversation, *, seed: int = 0, shares: int = 6, per_image: int = 2,
            sessions: Iterable[int] | None = None) -> tuple[Conversation, list[VisualQuestion]]:
    """`conv` with `shares` image-sharing turns inserted (in `sessions`, default all), and their questions. The same
    (conversation, seed, shares, per_image, sessions) always give the same turns, images and questions."""
    if shares > len(SUBJECTS):
        raise VisualDataError(f"at most {len(SUBJECTS)} image shares per conversation, got {shares}")
    by_image, paths = _test_questions()
    rng = random.Random(f"{conv.sample_id}:{seed}")
    kept = sorted(set(sessions) if sessions is not None else {s.index for s in conv.sessions})
    candidates = [s for s in conv.sessions if s.index in kept and s.turns]
    if not candidates:
        return conv, []
    subjects = rng.sample(SUBJECTS, shares)
    images = rng.sample(sorted(by_image), shares)
    new_sessions = {s.index: list(s.turns) for s in conv.sessions}
    inserted: dict[int, int] = {}
    questions: list[VisualQuestion] = []
    for n, (subject, image) in enumerate(zip(subjects, images)):
        s = rng.choice(candidates)
        inserted[s.index] = inserted.get(s.index, 0) + 1
        speaker = conv.speakers[rng.randrange(2)]
        dia_id = f"V{s.index}:{inserted[s.index]}"
        turn = {"speaker": speaker, "dia_id": dia_id, "text": rng.choice(OPENERS).format(s=subject),
                "image": paths[image], "gold_caption": gold_caption(by_image[image])}
        turns = new_sessions[s.index]
        turns.insert(rng.randrange(len(turns) + 1), turn)
        qs = by_image[image]
        open_q = [q for q in qs if q[1] not in ("yes", "no")]
        yes_no = [q for q in qs if q[1] in ("yes", "no")]
        picked = ([rng.choice(open_q)] if open_q else []) + ([rng.choice(yes_no)] if yes_no else [])
        for q, a in picked[:per_image]:
            questions.append(VisualQuestion(question=visual_question(subject, speaker, q), answer=a,
                                            kind=kind_of(a), dia_id=dia_id, image=paths[image], vqa_question=q))
    out = replace(conv, sessions=[Session(index=s.index, date=s.date, turns=new_sessions[s.index])
                                  for s in conv.sessions], qa=copy.deepcopy(conv.qa))
    return out, questions


def gold_caption(questions: Sequence[tuple[str, str]]) -> str:
    """What a perfect captioner would write for an easy-VQA image ("a red circle"), from its own questions: the open
    answers, and the colour or shape a yes/no question confirms ("is there a red shape?" yes; "is no red shape
    present?" no). easy-VQA images show one coloured shape."""
    seen: list[str] = []
    for q, a in questions:
        if a in ("yes", "no"):
            if (a == "yes") != bool(re.search(r"\b(not|no)\b", q)):
                seen += [w for w in _WORD.findall(q.lower()) if w in COLOURS or w in SHAPES]
        else:
            seen.append(a)
    colour = next((w for w in seen if kind_of(w) == "color"), None)
    shape = next((w for w in seen if kind_of(w) == "shape"), None)
    return " ".join(["a", *(w for w in (colour, shape) if w)]) if colour or shape else "a shape"


def with_gold_captions(conv: Conversation) -> Conversation:
    """`conv` (from `augment`) with each shared image replaced by its gold caption: the caption path's upper bound
    (what the text pipeline makes of a perfect caption)."""
    sessions = [Session(index=s.index, date=s.date,
                        turns=[{**{k: v for k, v in t.items() if k not in ("image", "gold_caption")},
                                "blip_caption": t["gold_caption"]} if "gold_caption" in t else t for t in s.turns])
                for s in conv.sessions]
    return replace(conv, sessions=sessions)


_WORD = re.compile(r"[a-z]+")


def correct(prediction: str, gold: str, vocabulary: Sequence[str]) -> bool:
    """The answer words of the gold answer's kind (colours, shapes, or yes / no) in `prediction` are exactly
    {gold}: "a red circle" answers a colour question "red"; "red or blue" and "reddish" do not."""
    kind = kind_of(gold.lower())
    vocab = {w for w in vocabulary if kind_of(w) == kind}
    return {w for w in _WORD.findall(prediction.lower()) if w in vocab} == {gold.lower()}


def summary(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy overall and per kind, with counts; how many questions went to the vision op."""
    out: dict[str, Any] = {}
    for k in ("all", *KINDS):
        rows = [q for q in items if k == "all" or q["kind"] == k]
        out[k] = {"n": len(rows), "accuracy": (sum(q["correct"] for q in rows) / len(rows)) if rows else None}
    out["routed_to_vqa"] = sum(1 for q in items if q.get("op") == "vqa")
    out["image_retrieved"] = sum(1 for q in items if q.get("image_turn") == q["dia_id"])
    return out
