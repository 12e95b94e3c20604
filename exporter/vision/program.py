"""The vision op as ExecuTorch programs: the three methods ExecuTorch's multimodal runner calls
(`MultimodalRunner` on the host, `LlmModule` with `prefillImages` on Android; extension/llm/runner's
MultimodalPrefiller):

- `vision_encoder`: uint8 RGB image [1, 3, size, size] -> visual token embeddings [1, tokens, dim]: the
  normalisation, the frozen encoder (int8, XNNPACK's static PT2E quantizer calibrated on easy-VQA training images)
  and the projector;
- `token_embedding`: tokens [1, S] -> [1, S, dim];
- `text_decoder`: (embeddings [1, S, dim], start position [1]) -> the last position's logits,

plus the LLM metadata methods. `token_embedding` and `text_decoder` are the text program's decoder, with the same
weight names and the same LoRA slots, lowered from the same quantized decoder, so the program reads the bundle's
`foundation.ptd` and its adapter's `<op>.lora.ptd` under the same keys as the text program
(`exporter.targets.executorch_xnnpack.export_separate` checks it); the encoder's and projector's weights stay
inside `vision.pte`.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from .encoder import ImageSpec

VISION_PROGRAM = "vision.pte"
METHODS = ("vision_encoder", "token_embedding", "text_decoder")
CALIBRATION_IMAGES = 32


class VisionEncoder(nn.Module):
    """uint8 RGB image [1, 3, size, size] -> visual token embeddings [1, tokens, dim] (the `vision_encoder` method)."""

    def __init__(self, encoder: nn.Module, projector: nn.Module, spec: ImageSpec = ImageSpec()):
        super().__init__()
        self.vision_encoder, self.vision_projector = encoder, projector  # "vision" in every weight's name
        self.register_buffer("vision_pixel_mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("vision_pixel_std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)
        self.size = spec.size

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        return (image.to(torch.float32) - self.vision_pixel_mean) / self.vision_pixel_std

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.vision_projector(self.vision_encoder(self.normalise(image)))


def image_tensor(image: Any, spec: ImageSpec = ImageSpec()) -> torch.Tensor:
    """A PIL image -> the uint8 [1, 3, size, size] tensor `vision_encoder` takes (converted and resized as the
    manifest's vision `image` says)."""
    import numpy as np
    from PIL import Image

    im = image.convert(spec.channels).resize((spec.size, spec.size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).unsqueeze(0).contiguous()


def quantize_encoder(module: VisionEncoder, calibration: Sequence[torch.Tensor]) -> nn.Module:
    """The encoder's convolutions at int8 (XNNPACK's symmetric per-channel static quantization, PT2E), calibrated on
    `calibration` images; normalisation and projector stay as they are (the projector's linears are tiny)."""
    from torch.export import export
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)

    enc = module.vision_encoder
    example = module.normalise(calibration[0])
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    with torch.no_grad():
        graph = export(enc, (example,), strict=False).module()
        prepared = prepare_pt2e(graph, quantizer)
        for im in calibration:
            prepared(module.normalise(im))
        module.vision_encoder = convert_pt2e(prepared)
    return module


def calibration_images(n: int = CALIBRATION_IMAGES, spec: ImageSpec = ImageSpec()) -> list[torch.Tensor]:
    """The first `n` easy-VQA training images (training split: never validation or test) as uint8 tensors."""
    from PIL import Image

    from .data import load_split

    paths = load_split("train").image_paths[:n]
    return [image_tensor(Image.open(p), spec) for p in paths]
