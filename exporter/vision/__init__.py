"""MemLoRA-V: the vision op (`vqa`). A frozen image encoder (encoder.py), a trained projector into the text LM's
embedding space and a LoRA `vqa` adapter on the LM (model.py), trained on easy-VQA (data.py, train.py).

The trained projector + adapter for the embedded SmolLM2 ship in `exporter/assets/vision/<base>/` (the layout
`memlora-train --op vqa` writes); `load_vqa_model` puts them together on the PyTorch reference path.
"""

from __future__ import annotations

import json
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
    from .train import ADAPTER_DIR, PROJECTOR_CONFIG, PROJECTOR_FILE

    d = Path(path)
    for need in (PROJECTOR_CONFIG, PROJECTOR_FILE, f"{ADAPTER_DIR}/adapter_config.json",
                 f"{ADAPTER_DIR}/adapter_model.safetensors"):
        if not (d / need).is_file():
            raise InputError(f"{d}: not a vision op directory (no {need}; write one with memlora-train --op vqa)")
    try:
        meta = json.loads((d / PROJECTOR_CONFIG).read_text())
        proj = meta["projector"]
        if not all(isinstance(proj.get(k), int) and proj[k] > 0 for k in ("in_dim", "dim", "grid")):
            raise ValueError("projector in_dim / dim / grid must be positive ints")
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{d / PROJECTOR_CONFIG}: {e}") from None
    return meta


def load_vqa_model(path: str | Path, base: Any) -> Any:
    """The VQA model of a vision op directory on `base` (exporter.load.BaseModel; its model is wrapped by PEFT in
    place): a train.VQAModel in eval mode."""
    from peft import PeftModel
    from safetensors.torch import load_file

    from ..pipeline import stop_token_ids
    from ..train.trainer import end_of_turn
    from .model import Projector, ProjectorConfig
    from .train import ADAPTER_DIR, PROJECTOR_FILE, VQAModel

    d = Path(path)
    meta = read_vision_dir(d)
    pcfg = ProjectorConfig(**meta["projector"])
    if pcfg.dim != base.config.hidden_size:
        raise InputError(f"{d}: projector dim {pcfg.dim} does not fit {base.name} (hidden size "
                         f"{base.config.hidden_size})")
    projector = Projector(pcfg)
    try:
        projector.load_state_dict({k: v.float() for k, v in load_file(str(d / PROJECTOR_FILE)).items()})
    except RuntimeError as e:
        raise InputError(f"{d / PROJECTOR_FILE}: does not fit projector.json: {str(e).splitlines()[0]}") from None
    lm = PeftModel.from_pretrained(base.model, str(d / ADAPTER_DIR), adapter_name="vqa")
    projector.eval()
    lm.eval()
    tok = base.tokenizer
    return VQAModel(lm, tok, projector, end_of_turn(tok, stop_token_ids(tok, base.config)))
