"""MemLoRA-V's vision-language model, LLaVA-style: frozen image encoder -> small trained projector -> the text LM
(with a LoRA `vqa` adapter) reading the projected visual tokens in place of an image placeholder in the prompt.

The prompt is the text LM's own chat format with `IMAGE_PLACEHOLDER` where the image goes (at the start of the
user's message): the rendered prompt is split there, both halves are tokenized as the text ops are, and the visual
tokens' embeddings sit between their embeddings. The same layout is what the exported programs and the runtimes
use (the manifest's vision op records it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

IMAGE_PLACEHOLDER = "<image>"


@dataclass(frozen=True)
class ProjectorConfig:
    in_dim: int = 1360  # encoder channels (exporter.vision.encoder)
    dim: int = 576  # the LM's hidden size
    grid: int = 7  # visual tokens per side: 7 = the encoder's whole 7 x 7 map, 3 = 3 x 3 average-pooled, 1 = global

    @property
    def tokens(self) -> int:
        return self.grid * self.grid

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Projector(nn.Module):
    """features [B, C, 7, 7] -> visual token embeddings [B, grid * grid, dim]: pool, standardise each channel with
    fixed statistics of the training features (`fit_stats`), 2-layer MLP (GELU).

    Per-channel standardisation rather than a LayerNorm: a LayerNorm scales each token by the spread of all 1360
    channels, which the last layer's 1280 dominate, and drowns the 80 colour channels; an MLP classifier of colour on
    the pooled validation tokens reached 71 % through a LayerNorm and 86-88 % through fixed standardisation
    (docs/vision.md)."""

    def __init__(self, cfg: ProjectorConfig):
        super().__init__()
        if cfg.grid not in (1, 3, 7):
            raise ValueError(f"projector grid must be 1, 3 or 7, got {cfg.grid}")
        self.cfg = cfg
        self.register_buffer("feature_mean", torch.zeros(cfg.in_dim))
        self.register_buffer("feature_std", torch.ones(cfg.in_dim))
        self.fc1 = nn.Linear(cfg.in_dim, cfg.dim)
        self.fc2 = nn.Linear(cfg.dim, cfg.dim)

    @torch.no_grad()
    def fit_stats(self, features: torch.Tensor, chunk: int = 256) -> None:
        """Per-channel mean and standard deviation of the pooled tokens of `features` [N, C, 7, 7] (training
        images), in chunks (the whole train set is GBs in float32)."""
        c = self.cfg.in_dim
        n, s, s2 = 0, torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
        for i in range(0, features.shape[0], chunk):
            t = self.pool(features[i:i + chunk].float()).flatten(2).transpose(1, 2).reshape(-1, c).double()
            n, s, s2 = n + t.shape[0], s + t.sum(0), s2 + (t * t).sum(0)
        mean = s / n
        self.feature_mean.copy_(mean.float())
        self.feature_std.copy_(((s2 / n - mean * mean).clamp_min(0).sqrt() + 1e-3).float())

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        if self.cfg.grid == 7:
            return features
        if self.cfg.grid == 3:
            return F.avg_pool2d(features, kernel_size=3, stride=2)  # 7 -> 3, windows overlapping by one
        return features.mean(dim=(2, 3), keepdim=True)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.pool(features).flatten(2).transpose(1, 2)  # [B, tokens, C]
        return self.fc2(F.gelu(self.fc1((x - self.feature_mean) / self.feature_std)))


@dataclass
class PromptParts:
    """A VQA prompt around its image: token ids before and after the visual tokens."""
    before: list[int]
    after: list[int]


def vqa_messages(question: str, system: str | None = None) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": f"{IMAGE_PLACEHOLDER}\n{question.strip()}"}]


def prompt_parts(tokenizer: Any, messages: Sequence[dict[str, str]]) -> PromptParts:
    """The chat-formatted prompt (generation prompt added), split at the image placeholder and tokenized as the text
    ops tokenize (no extra special tokens)."""
    text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    if text.count(IMAGE_PLACEHOLDER) != 1:
        raise ValueError(f"a VQA prompt needs exactly one {IMAGE_PLACEHOLDER} (got {text.count(IMAGE_PLACEHOLDER)})")
    before, after = text.split(IMAGE_PLACEHOLDER)
    enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"] if s else []  # noqa: E731
    return PromptParts(enc(before), enc(after))


def prompt_embeds(embed: nn.Module, parts: PromptParts, visual: torch.Tensor,
                  answer_ids: Sequence[int] = ()) -> torch.Tensor:
    """[n, dim] input embeddings: before, the visual tokens [tokens, dim], after (+ answer ids, for training)."""
    dev = visual.device
    b = embed(torch.tensor(parts.before, dtype=torch.long, device=dev))
    a = embed(torch.tensor(list(parts.after) + list(answer_ids), dtype=torch.long, device=dev))
    return torch.cat([b, visual.to(b.dtype), a])
