"""MemLoRA-V: the vision op (`vqa`). A frozen image encoder (encoder.py), a trained projector into the text LM's
embedding space and a LoRA `vqa` adapter on the LM (model.py), trained on easy-VQA (data.py, train.py).

The trained projector + adapter for the embedded SmolLM2 ship in `exporter/assets/vision/<base>/` (the layout
`memlora-train --op vqa` writes); `load_vqa_model` puts them together on the PyTorch reference path. A user's own
LLaVA-layout VLM directory is the other source of a vision op (hf_vlm.py): its tower, projector and LM, as trained.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError

VISION_ASSETS = Path(__file__).resolve().parents[1] / "assets" / "vision"


def embedded_vision(base: str) -> Path | None:
    """The trained vision op shipped for an embedded base, or None."""
    d = VISION_ASSETS / base
    return d if (d / "projector.json").is_file() else None


def read_vision_dir(path: str | Path) -> dict[str, Any]:
    """projector.json of a `memlora-train --op vqa` output, checked (one InputError line on a bad directory)."""
    from .encoder import NAME as ENCODER_NAME
    from .train import ADAPTER_DIR, PROJECTOR_CONFIG, PROJECTOR_FILE

    d = Path(path)
    for need in (PROJECTOR_CONFIG, PROJECTOR_FILE, f"{ADAPTER_DIR}/adapter_config.json",
                 f"{ADAPTER_DIR}/adapter_model.safetensors"):
        if not (d / need).is_file():
            raise InputError(f"{d}: not a vision op directory (no {need}; write one with memlora-train --op vqa)")
    try:
        meta = json.loads((d / PROJECTOR_CONFIG).read_text())
        proj = meta["projector"]
        if not isinstance(proj, dict) or set(proj) != {"in_dim", "dim", "grid"} or not all(
                isinstance(proj[k], int) and not isinstance(proj[k], bool) and proj[k] > 0 for k in proj):
            raise ValueError("projector must be {in_dim, dim, grid} as positive ints")
        if proj["grid"] not in (1, 3, 7):
            raise ValueError(f"projector grid must be 1, 3 or 7, got {proj['grid']}")
        image_spec(meta)
        if meta.get("encoder") != ENCODER_NAME:
            raise ValueError(f"encoder must be {ENCODER_NAME!r} (the one image encoder this toolkit has), "
                             f"got {meta.get('encoder')!r}")
        if not isinstance(meta.get("visual_tokens"), int) or meta["visual_tokens"] != proj["grid"] ** 2:
            raise ValueError("visual_tokens must be grid * grid")
        after = meta.get("answer_after")
        if after is not None and not (isinstance(after, str) and 1 <= len(after) <= 64):
            raise ValueError("answer_after must be a string of 1 to 64 characters")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"{d / PROJECTOR_CONFIG}: {e}") from None
    return meta


def image_spec(meta: dict[str, Any]) -> Any:
    """projector.json's `image` as an encoder.ImageSpec, checked (ValueError naming the bad field)."""
    from .encoder import ImageSpec

    image = meta["image"]
    if not isinstance(image, dict) or not set(image) <= {"size", "mean", "std", "channels", "resize"}:
        raise ValueError("image must be {size, mean, std, channels, resize}")
    size = image.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 32 <= size <= 1024:
        raise ValueError(f"image size must be an int in [32, 1024], got {size!r}")
    for k in ("mean", "std"):
        v = image.get(k)
        if not (isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                           and abs(x) < 1e4 for x in v)):
            raise ValueError(f"image {k} must be 3 numbers (R, G, B)")
    if any(x <= 0 for x in image["std"]):
        raise ValueError("image std must be positive")
    if image.get("channels", "RGB") != "RGB" or image.get("resize", "bilinear") != "bilinear":
        raise ValueError("image channels must be RGB and resize bilinear")
    return ImageSpec(size=size, mean=tuple(image["mean"]), std=tuple(image["std"]))


def load_vqa_model(path: str | Path, base: Any) -> Any:
    """The VQA model of a vision op directory on `base` (exporter.load.BaseModel; its model is wrapped by PEFT in
    place): a train.VQAModel in eval mode."""
    from peft import PeftModel

    from ..pipeline import stop_token_ids
    from ..train.trainer import end_of_turn
    from .train import ADAPTER_DIR, VQAModel

    d = Path(path)
    projector, _ = load_projector(d)
    if projector.cfg.dim != base.config.hidden_size:
        raise InputError(f"{d}: projector dim {projector.cfg.dim} does not fit {base.name} (hidden size "
                         f"{base.config.hidden_size})")
    lm = PeftModel.from_pretrained(base.model, str(d / ADAPTER_DIR), adapter_name="vqa")
    lm.eval()
    tok = base.tokenizer
    return VQAModel(lm, tok, projector, end_of_turn(tok, stop_token_ids(tok, base.config)))


def resolve_vision(path: str, base: str) -> Path:
    """A spec's vision.path: "embedded" -> the vision op shipped for the embedded `base`, or the base itself when it
    is a VLM directory (hf_vlm.py); else the directory."""
    from .hf_vlm import is_vlm_dir

    if path == "embedded" and is_vlm_dir(base):
        return Path(base)
    if path == "embedded":
        d = embedded_vision(base)
        if d is None:
            raise InputError(f"no trained vision op ships for base {base!r}; train one with memlora-train --op vqa "
                             f"and pass --vision DIR")
        return d
    return Path(path)


def load_projector(path: str | Path) -> Any:
    """The trained projector of a vision op directory (fp32, eval mode) and its projector.json."""
    from safetensors.torch import load_file

    from .model import Projector, ProjectorConfig
    from .train import PROJECTOR_FILE

    d = Path(path)
    meta = read_vision_dir(d)
    projector = Projector(ProjectorConfig(**meta["projector"]))
    try:
        projector.load_state_dict({k: v.float() for k, v in load_file(str(d / PROJECTOR_FILE)).items()})
    except RuntimeError as e:
        raise InputError(f"{d / PROJECTOR_FILE}: does not fit projector.json: {str(e).splitlines()[0]}") from None
    return projector.eval(), meta


VISION_OP = "vqa"


@dataclass
class VisionOp:
    """A vision op to export: its directory, frozen image encoder, projector (+ its meta: image, visual_tokens,
    encoder) and `vqa` LoRA adapter (None: a VLM directory's own LM, as trained)."""
    path: Path
    projector: Any
    meta: dict[str, Any]
    adapter: Any  # exporter.load.Adapter | None
    encoder: Any = None  # features from normalised pixels: encoder.Encoder, or hf_vlm.Tower
    int8_convs: tuple[str, ...] = ()  # the encoder's convolutions run at int8 (module names under the encoder)
    vlm: Any = None  # hf_vlm: the LlavaForConditionalGeneration, the reference of vision_fidelity

    @property
    def dim(self) -> int:
        """The width of the visual tokens: the LM's hidden size they must match."""
        return int(self.vlm.config.text_config.hidden_size if self.vlm is not None else self.projector.cfg.dim)

    @property
    def op(self) -> str:
        return VISION_OP

    def slot_adapter(self) -> Any:
        """The adapter the vision op's LoRA slots hold: its own, or an empty one (zeros, the LM as it is)."""
        from ..load import Adapter

        return self.adapter or Adapter(op=VISION_OP, path=self.path, rank=0, alpha=1.0, scale=0.0, target_modules=[])

    def int8_description(self) -> str:
        what = f" and {len(self.int8_convs)} 1x1 convolutions" if self.int8_convs else " and every linear of the tower"
        return f"dynamic int8 on the projector{what}, the rest fp32"


def load_vision_op(path: str, base: str) -> VisionOp:
    """The vision op a spec names ("embedded", a `memlora-train --op vqa` directory or the base's own VLM
    directory), checked against its image encoder."""
    from ..load import load_adapter
    from .encoder import INT8_CONVS, load_encoder
    from .hf_vlm import is_vlm_dir
    from .train import ADAPTER_DIR

    d = resolve_vision(path, base)
    if is_vlm_dir(d):
        return load_vlm_vision(d, base)
    projector, meta = load_projector(d)
    encoder = load_encoder()
    if projector.cfg.in_dim != encoder.out_channels:
        raise InputError(f"{d}: projector in_dim {projector.cfg.in_dim} does not fit the image encoder's "
                         f"{encoder.out_channels} channels")
    return VisionOp(d, projector, meta, load_adapter(VISION_OP, d / ADAPTER_DIR), encoder=encoder,
                    int8_convs=tuple(f"net.{c}" for c in INT8_CONVS))


def load_vlm_vision(d: Path, base: str) -> VisionOp:
    """The vision op of a LLaVA-layout VLM directory (hf_vlm.py): its tower and projector, no adapter. Its decoder is
    the VLM's language model, so the base must be the same directory."""
    from .hf_vlm import vision_parts

    b = Path(base)
    if not (b.is_dir() and b.resolve() == d.resolve()):
        raise InputError(f"{d}: a VLM's vision op runs on the VLM's own language model: pass --base {d} as well "
                         f"(the base is {base!r})")
    tower, projector, meta, vlm = vision_parts(d)
    return VisionOp(d, projector, meta, None, encoder=tower, vlm=vlm)


QUESTION_SLOT = "{question}"
GENERATION = {"max_new_tokens": 8, "temperature": 0.0}  # "rectangle, so yes" (5 tokens) and the end-of-turn token


def prompt_halves(tokenizer: Any) -> dict[str, str]:
    """The VQA prompt as text around the image: `before` the visual tokens and `after` them, with QUESTION_SLOT where
    the question goes. Each half is tokenized on its own without special tokens (as in training,
    exporter.vision.model.prompt_parts); ExecuTorch's multimodal runner takes them as its two text inputs."""
    from .model import IMAGE_PLACEHOLDER, vqa_messages

    sentinel = "QUESTIONSLOTd41d8c"
    text = tokenizer.apply_chat_template(vqa_messages(sentinel), tokenize=False, add_generation_prompt=True)
    before, after = text.split(IMAGE_PLACEHOLDER)
    if after.count(sentinel) != 1 or QUESTION_SLOT in text:
        raise InputError("the chat template does not render the VQA prompt as one image and one question")
    return {"before": before, "after": after.replace(sentinel, QUESTION_SLOT)}


def generation(meta: dict[str, Any]) -> dict[str, Any]:
    """The vision op's generation settings; `answer_after` where it was trained to name what it sees first
    (`data.ANSWER_AFTER`: readers answer with the text after it)."""
    return {**GENERATION, **({"answer_after": meta["answer_after"]} if meta.get("answer_after") else {})}


def vision_entry(vision: VisionOp, tokenizer: Any, stops: list[int], lowered: dict[str, Any] | None,
                 quant: str = "int8") -> dict[str, Any]:
    """The manifest's `vision` section (docs/manifest.md). `lowered`: the ExecuTorch program (None: an ONNX-only
    bundle, whose graphs the ONNX target adds under `onnx`)."""
    precision = vision.int8_description() if quant == "int8" else "fp32"
    entry = {"op": vision.op}
    if lowered is not None:
        entry.update({"program": lowered["program"], "data_files": lowered["data_files"],
                      "methods": {"image": "vision_encoder", "embed": "token_embedding", "decode": "text_decoder"}})
    entry.update({"image": vision.meta["image"], "visual_tokens": int(vision.meta["visual_tokens"]),
                  "encoder": f"{vision.meta['encoder']} ({precision}{', XNNPACK' if lowered is not None else ''})",
                  "prompt": prompt_halves(tokenizer), "generation": generation(vision.meta),
                  "stop_token_ids": list(stops),
                  "adapter": vision.adapter.describe() if vision.adapter else None})
    if lowered is not None:
        entry["lowering"] = lowered["lowering"]
    return entry


FIDELITY_SAMPLES = 24


def vision_fidelity(manifest: Any, vision: VisionOp, base: Any, samples: int = FIDELITY_SAMPLES,
                    backends: tuple[str, ...] | list[str] = ("executorch",)) -> dict[str, dict[str, Any]]:
    """Per backend, the exported vision op against the PyTorch reference (float encoder, projector and adapter on
    the float base; for a VLM directory, transformers' own LlavaForConditionalGeneration) on `samples` fixed easy-VQA test questions (seeded, one per image): answer agreement, and each
    one's accuracy. Wraps `base.model` with the adapter in place: call it last."""
    import random

    import torch
    from PIL import Image

    from runtimes.vision import VisionRunner

    from runtimes.vision import final_answer

    from .data import accuracy, load_split
    from .encoder import preprocess

    split = load_split("test")
    picked: dict[int, Any] = {}
    for it in random.Random(0).sample(split.items, len(split.items)):
        picked.setdefault(it.image, it)
        if len(picked) == samples:
            break
    items = list(picked.values())
    images = [Image.open(split.image_paths[it.image]).convert("RGB") for it in items]
    exported = {}
    for backend in backends:
        runner = VisionRunner(manifest, backend=backend)
        exported[backend] = [runner.answer(im, it.question) for im, it in zip(images, items)]
        del runner
    limit = int(manifest.vision["generation"]["max_new_tokens"])
    if vision.vlm is not None:  # a VLM directory: transformers runs the whole VLM
        from .hf_vlm import vlm_answers

        reference = vlm_answers(vision.vlm, base.tokenizer, images, [it.question for it in items],
                                image_spec(vision.meta), int(vision.meta["visual_tokens"]),
                                list(manifest.vision.get("stop_token_ids") or []), limit)
    else:
        model = load_vqa_model(vision.path, base)
        with torch.no_grad():
            feats = vision.encoder(preprocess(images, image_spec(vision.meta)))
        rows = [type(it)(it.question, it.answer, k) for k, it in enumerate(items)]
        after = vision.meta.get("answer_after")
        reference = [final_answer(r, after) for r in model.answer(rows, feats, max_new_tokens=limit)]

    def figures(answers: list[str]) -> dict[str, Any]:
        agree = sum(a.strip().lower() == b.strip().lower() for a, b in zip(answers, reference)) / len(items)
        return {"samples": len(items), "data": "easy-VQA test (seeded, one question per image)",
                "answer_agreement": round(agree, 4), "accuracy_exported": round(accuracy(answers, items), 4),
                "accuracy_reference": round(accuracy(reference, items), 4),
                "examples": [{"question": it.question, "answer": it.answer, "exported": e, "reference": r}
                             for it, e, r in list(zip(items, answers, reference))[:4]]}

    return {backend: figures(answers) for backend, answers in exported.items()}
