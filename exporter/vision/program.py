"""The vision op as ExecuTorch programs: the three methods ExecuTorch's multimodal runner calls
(`MultimodalRunner` on the host, `LlmModule` with `prefillImages` on Android; extension/llm/runner's
MultimodalPrefiller):

- `vision_encoder`: uint8 RGB image [1, 3, size, size] -> visual token embeddings [1, tokens, dim]: the
  normalisation, the frozen encoder (fp32: an int8 one is not faithful yet, docs/vision.md) and the projector;
- `token_embedding`: tokens [1, S] -> [1, S, dim];
- `text_decoder`: (embeddings [1, S, dim], start position [1]) -> the last position's logits,

plus the LLM metadata methods. `token_embedding` and `text_decoder` are the text program's decoder, with the same
weight names and the same LoRA slots, lowered from the same quantized decoder, so the program reads the bundle's
`foundation.ptd` and its adapter's `<op>.lora.ptd` under the same keys as the text program
(`exporter.targets.executorch_xnnpack.export_separate` checks it); the encoder's and projector's weights stay
inside `vision.pte`.
"""

from __future__ import annotations

import torch
from torch import nn

from .encoder import ImageSpec

VISION_PROGRAM = "vision.pte"


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
