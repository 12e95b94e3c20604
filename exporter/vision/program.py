"""The vision op as ExecuTorch programs: the three methods ExecuTorch's multimodal runner calls
(`MultimodalRunner` on the host, `LlmModule` with `prefillImages` on Android; extension/llm/runner's
MultimodalPrefiller):

- `vision_encoder`: uint8 RGB image [1, 3, size, size] -> visual token embeddings [1, tokens, dim]: the
  normalisation, the frozen encoder and the projector; with `int8` (the default) the linears (the projector's, a ViT
  tower's) and the convolutions in `VisionOp.int8_convs` run XNNPACK's dynamic int8, the rest fp32 (`int8_encoder`);
- `token_embedding`: tokens [1, S] -> [1, S, dim];
- `text_decoder`: (embeddings [1, S, dim], start position [1]) -> the last position's logits,

plus the LLM metadata methods. `token_embedding` and `text_decoder` are the text program's decoder, with the same
weight names and the same LoRA slots, lowered from the same quantized decoder, so the program reads the bundle's
`foundation.ptd` and its adapter's `<op>.lora.ptd` under the same keys as the text program
(`exporter.targets.executorch_xnnpack.export_separate` checks it); the encoder's and projector's weights stay
inside `vision.pte`.
"""

from __future__ import annotations

from typing import Iterable

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


def int8_encoder(module: nn.Module, example: tuple, convs: Iterable[str], prefix: str = "") -> torch.fx.GraphModule:
    """`module` through PT2E with XNNPACK's quantizer: every linear and the convolutions named in `convs` (module
    names under `prefix`) at dynamic int8 (per-channel int8 weights, the input quantized on each call), the rest left
    fp32. The result is a GraphModule with torch's reference quantized numerics, to export and lower as any module."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                           get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    gm = torch.export.export(module, example, strict=False).module()
    quantizer = XNNPACKQuantizer()
    quantizer.set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))
    wanted = {f"{prefix}{c}.weight" for c in convs}
    found = set()
    for node in gm.graph.nodes:  # a node already annotated is one the quantizer leaves alone
        if node.op == "call_function" and node.target in (torch.ops.aten.conv2d.default,
                                                          torch.ops.aten.convolution.default):
            weight = getattr(node.args[1], "target", None)
            if weight in wanted:
                found.add(weight)
            else:
                node.meta["quantization_annotation"] = QuantizationAnnotation(_annotated=True)
    if found != wanted:
        raise ValueError(f"int8 convolutions not in the encoder: {sorted(wanted - found)[:3]}")
    gm = prepare_pt2e(gm, quantizer)
    with torch.no_grad():
        gm(*example)  # the weights' observers; activations are quantized per call (dynamic)
    return convert_pt2e(gm)


def quantize_vision_encoder(encoder: VisionEncoder, example: tuple, convs: Iterable[str]) -> torch.fx.GraphModule:
    """The `vision_encoder` method at int8 (`int8_encoder`: every linear, i.e. the projector's and a ViT tower's, and
    the encoder's convolutions named in `convs`, `VisionOp.int8_convs`). The quantized weights PT2E folds into new
    attributes (`_frozen_paramN`, `_scale_N`) are renamed under "vision_", so they stay in vision.pte as the
    encoder's other weights do (`targets.executorch_xnnpack._vision_tag`)."""
    gm = int8_encoder(encoder, example, convs, prefix="vision_encoder.")
    renamed: dict[str, str] = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr" and not str(node.target).startswith("vision"):
            if node.target not in renamed:
                renamed[node.target] = f"vision_int8_{node.target}"
                setattr(gm, renamed[node.target], getattr(gm, node.target))
            node.target = renamed[node.target]
    for old in renamed:
        delattr(gm, old)
    gm.recompile()
    return gm
