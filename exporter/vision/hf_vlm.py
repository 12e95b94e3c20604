"""A user's own Hugging Face VLM directory as MemLoRA-V's model, in the LLaVA layout (transformers'
`LlavaForConditionalGeneration`: a CLIP or SigLIP vision tower, the 2-layer multimodal projector and a Llama LM), the
layout of llava-hf's checkpoints and of small VLMs converted to it.

Such a directory serves both halves of a bundle: `--base DIR` loads its language model as the base of the text ops
(`language_model`), and `--vision` then exports its vision tower + projector as the vision op (`load_vlm_vision`),
reading the same `foundation.ptd`. The VLM runs as it was trained: it has no `vqa` LoRA adapter, so the vision op's
LoRA slots hold zeros (the text ops' adapters still apply to theirs).

What the program reproduces of the VLM's own image processor: the input size, the per-channel normalisation and the
rescale factor (`preprocessor_config.json`, else the tower's defaults). Images are resized to the square input
(bilinear, as for the embedded encoder; the Android app and the runtimes do the same), not resized on the short side,
centre-cropped and resampled bicubically as CLIPImageProcessor does: on a non-square photo the VLM sees all of it,
squashed, rather than its centre.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InputError

TOWERS = {  # vision_config.model_type -> the normalisation its processor uses when the directory has none
    "clip_vision_model": ([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]),
    "siglip_vision_model": ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
}
TEXT_MODELS = ("llama",)  # the decoder families exporter.arch builds that a LLaVA checkpoint carries


def is_vlm_dir(path: str | Path) -> bool:
    """Whether `path` is a Hugging Face directory whose config.json names the LLaVA layout."""
    cfg = Path(path) / "config.json"
    try:
        raw = json.loads(cfg.read_text(encoding="utf-8")) if cfg.is_file() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return False
    return isinstance(raw, dict) and raw.get("model_type") == "llava"


def read_vlm_config(path: str | Path) -> Any:
    """The directory's LlavaConfig, checked against what this toolkit exports (one InputError line otherwise)."""
    from transformers import LlavaConfig

    d = Path(path)
    try:
        cfg = LlavaConfig.from_pretrained(str(d))
    except Exception as e:  # transformers raises many types for a malformed config
        raise InputError(f"{d}: not a readable LLaVA config: {type(e).__name__}: {' '.join(str(e).split())[:200]}") \
            from None
    tower, text = cfg.vision_config.model_type, cfg.text_config.model_type
    if tower not in TOWERS:
        raise InputError(f"{d}: vision tower {tower!r} is not supported; supported: {sorted(TOWERS)}")
    if text not in TEXT_MODELS:
        raise InputError(f"{d}: language model {text!r} is not supported in a VLM directory; supported: "
                         f"{list(TEXT_MODELS)}")
    layer = cfg.vision_feature_layer
    n = cfg.vision_config.num_hidden_layers
    if not isinstance(layer, int) or isinstance(layer, bool) or not -(n + 1) <= layer <= n:
        raise InputError(f"{d}: vision_feature_layer must be one layer index in [-{n + 1}, {n}], got {layer!r}")
    if cfg.vision_feature_select_strategy not in ("default", "full"):
        raise InputError(f"{d}: vision_feature_select_strategy must be 'default' or 'full', got "
                         f"{cfg.vision_feature_select_strategy!r}")
    if tower == "siglip_vision_model" and cfg.vision_feature_select_strategy == "default":
        raise InputError(f"{d}: a SigLIP tower has no CLS token to drop: vision_feature_select_strategy must be 'full'")
    return cfg


def load_vlm(path: str | Path) -> Any:
    """The LlavaForConditionalGeneration of a VLM directory, float32 and in eval mode (safetensors only)."""
    from transformers import LlavaForConditionalGeneration

    d = Path(path)
    read_vlm_config(d)
    if not list(d.glob("*.safetensors")):
        raise InputError(f"VLM directory {d} has no *.safetensors weights (pickle checkpoints are refused)")
    try:
        vlm = LlavaForConditionalGeneration.from_pretrained(str(d), dtype="float32", use_safetensors=True)
    except Exception as e:
        raise InputError(f"cannot load the VLM from {d}: {type(e).__name__}: {' '.join(str(e).split())[:200]}") \
            from None
    return vlm.eval()


def language_model(vlm: Any) -> Any:
    """The VLM's language model as a standalone causal LM (LlamaForCausalLM) with the same weights: the base the text
    ops and the vision op's decoder are built from."""
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_config(vlm.config.text_config)
    state = {f"model.{k}": v for k, v in vlm.model.language_model.state_dict().items()}
    state["lm_head.weight"] = vlm.lm_head.weight
    missing, unexpected = lm.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise InputError(f"the VLM's language model does not fit {type(lm).__name__}: missing={missing[:3]} "
                         f"unexpected={unexpected[:3]}")
    lm.config.architectures = [type(lm).__name__]
    return lm.eval()


class Tower(nn.Module):
    """pixels normalised as the VLM's processor does [B, 3, size, size] -> the hidden states LLaVA projects
    [B, tokens, width]: the tower's layers up to `vision_feature_layer` (the later ones are cut: their output is never
    read), without the CLS token under the "default" strategy; what `LlavaModel.get_image_features` selects."""

    def __init__(self, tower: nn.Module, layer: int, drop_cls: bool):
        super().__init__()
        tower = copy.deepcopy(tower)
        n = len(tower.encoder.layers)
        keep = layer if layer >= 0 else n + 1 + layer  # hidden_states[0] is the embeddings, [i] after layer i
        tower.encoder.layers = nn.ModuleList(list(tower.encoder.layers)[:keep])
        self.embeddings, self.encoder = tower.embeddings, tower.encoder
        self.pre_layrnorm = getattr(tower, "pre_layrnorm", None) or nn.Identity()  # CLIP has one, SigLIP not
        self.drop_cls = drop_cls

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.pre_layrnorm(self.embeddings(pixels))
        x = self.encoder(inputs_embeds=x).last_hidden_state
        return x[:, 1:] if self.drop_cls else x


def image_meta(path: str | Path, cfg: Any) -> dict[str, Any]:
    """The vision op's `image` (size, per-channel mean and std on 0..255 pixels) from the directory's
    preprocessor_config.json where it has one, else the tower type's defaults; the size is the tower's."""
    d = Path(path)
    mean, std = TOWERS[cfg.vision_config.model_type]
    scale = 1 / 255
    pre = d / "preprocessor_config.json"
    if pre.is_file():
        try:
            raw = json.loads(pre.read_text(encoding="utf-8"))
            mean, std = raw.get("image_mean", mean), raw.get("image_std", std)
            if raw.get("do_rescale", True):
                scale = float(raw.get("rescale_factor", scale))
            else:
                scale = 1.0
            if not raw.get("do_normalize", True):
                mean, std = [0.0] * 3, [1.0] * 3
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError, TypeError, ValueError) as e:
            raise InputError(f"{pre}: not a readable image processor config: {e}") from None
    try:  # (x * scale - mean) / std == (x - mean / scale) / (std / scale), on 0..255 pixels
        m = [float(v) / scale for v in mean]
        s = [float(v) / scale for v in std]
    except (TypeError, ValueError, ZeroDivisionError):
        raise InputError(f"{pre}: image_mean, image_std and rescale_factor must be numbers") from None
    if len(m) != 3 or len(s) != 3 or any(v <= 0 for v in s):
        raise InputError(f"{pre}: image_mean and image_std must be 3 numbers each, the std positive")
    return {"size": int(cfg.vision_config.image_size), "mean": m, "std": s, "channels": "RGB", "resize": "bilinear"}


def vision_parts(path: str | Path) -> tuple[Tower, nn.Module, dict[str, Any], Any]:
    """(tower, projector, meta, vlm) of a VLM directory: the modules the vision program runs (the VLM's own, frozen)
    and the vision op's meta (image, visual_tokens, encoder), as a `memlora-train --op vqa` directory's
    projector.json gives them for the embedded encoder."""
    vlm = load_vlm(path)
    cfg = vlm.config
    tower = Tower(vlm.model.vision_tower, cfg.vision_feature_layer, cfg.vision_feature_select_strategy == "default")
    projector = vlm.model.multi_modal_projector
    for m in (tower, projector):
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)
    meta = {"image": image_meta(path, cfg), "encoder": f"{cfg.vision_config.model_type} (the VLM's own tower)"}
    from . import image_spec

    try:
        image_spec(meta)
    except ValueError as e:
        raise InputError(f"{path}: {e}") from None
    with torch.no_grad():
        size = meta["image"]["size"]
        meta["visual_tokens"] = int(tower(torch.zeros(1, 3, size, size)).shape[1])
    return tower, projector, meta, vlm


def vlm_answers(vlm: Any, tokenizer: Any, images: list[Any], questions: list[str], spec: Any, tokens: int,
                stop_ids: list[int], max_new_tokens: int) -> list[str]:
    """The VLM's own greedy answers through transformers (`LlavaForConditionalGeneration.generate`): the prompt
    the bundle's vision op uses, with the image placeholder expanded to the VLM's image token once per visual token
    (`tokens`, the vision op's): the reference the exported vision op is checked against."""
    from .encoder import preprocess
    from .model import prompt_parts, vqa_messages

    image_id = vlm.config.image_token_id
    out = []
    with torch.no_grad():
        for image, question in zip(images, questions):
            parts = prompt_parts(tokenizer, vqa_messages(question))
            ids = torch.tensor([parts.before + [image_id] * tokens + parts.after])
            gen = vlm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=preprocess(image, spec),
                               max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=list(stop_ids),
                               pad_token_id=stop_ids[0] if stop_ids else None)
            new = [int(t) for t in gen[0, ids.shape[1]:]]
            cut = next((i for i, t in enumerate(new) if t in stop_ids), len(new))
            out.append(tokenizer.decode(new[:cut], skip_special_tokens=True).strip())
    return out
