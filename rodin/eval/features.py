"""Feature extractors for FID/KID, one interface: images (B, 3, H, W) in [0, 1] on white -> (B, D).

- `judge` (built in): the attribute judge's penultimate features (`AttributeJudge.features`). It ships with
  the repository and was trained on these renders, so it sees what matters here (hair, glasses, colours).
- `clip`: the image tower of a CLIP checkpoint the user has on disk (`rodin.semantic.clip_adapter`),
  unit-normalised projected embeddings, as FID_CLIP uses them.

Inception (the FID of the literature) is not offered: torch-fidelity and torchmetrics build it on
torchvision, which does not import beside this project's CPU build of torch (DESIGN.md), and no weights can
be fetched. Figures from these extractors compare with each other, not with published Inception FIDs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from rodin.errors import ConfigError

EXTRACTORS = ("judge", "clip")
BATCH = 64


@dataclass
class FeatureExtractor:
    """A named image -> feature map; `encode` takes a batch and returns float features."""

    name: str
    encode: Callable[[Tensor], Tensor]

    @torch.no_grad()
    def __call__(self, pixels: Tensor) -> Tensor:
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"feature extractors read (B, 3, H, W) images, got {tuple(pixels.shape)}")
        return torch.cat([self.encode(chunk).float().cpu() for chunk in pixels.split(BATCH)])


def judge_features(judge) -> FeatureExtractor:
    """The attribute judge's penultimate layer."""
    judge.eval()
    return FeatureExtractor(name="judge", encode=judge.features)


def clip_features(path: Path | str) -> FeatureExtractor:
    """A local CLIP checkpoint's image embeddings (unit vectors)."""
    from rodin.semantic.clip_adapter import ClipEncoder

    return FeatureExtractor(name=f"clip:{Path(path).name}", encode=ClipEncoder.from_path(path).encode_images)


def load_extractor(kind: str, *, judge=None, clip: Path | None = None) -> FeatureExtractor:
    """The extractor named `kind` ("judge" needs the judge module, "clip" a CLIP folder)."""
    if kind == "judge":
        if judge is None:
            raise ConfigError("the judge feature extractor needs an attribute judge")
        return judge_features(judge)
    if kind == "clip":
        if clip is None:
            raise ConfigError("--features clip needs --clip PATH, the folder of a CLIP model on disk")
        return clip_features(clip)
    raise ConfigError(f"unknown feature extractor {kind!r}; choose one of {', '.join(EXTRACTORS)} "
                      "(Inception is not available here: torchvision does not import beside this torch)")


__all__ = ["EXTRACTORS", "FeatureExtractor", "clip_features", "judge_features", "load_extractor"]
