"""Portraits, front views, attributes and captions of a generated dataset, held in memory.

The dual encoder and the latent prior train on what `rodin data synth` writes: per subject its
frontal portrait, the views that look at the face (they add pose variety), its attributes and
captions in several wordings (`rodin.data.avatar.caption` with other random streams).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from rodin.data.avatar import AvatarAttributes, caption
from rodin.errors import DataError

ATTRIBUTES = "attributes.json"


@dataclass
class PortraitSet:
    ids: list[str]
    images: Tensor                    # (M, 4, S, S) uint8 RGBA: portraits and front views
    owner: Tensor                     # (M,) row of the subject each image shows
    portrait_rows: Tensor             # (N,) row in `images` of each subject's portrait
    attributes: list[dict]            # per subject: the categorical attributes
    captions: list[list[str]]         # per subject: several wordings, the dataset's own first, then any
                                      # partial ones (`load_portrait_set(partial_captions=)`)


def _rgba(path: Path, size: int) -> np.ndarray:
    try:
        with Image.open(path) as image:
            rgba = image.convert("RGBA")
            if rgba.size != (size, size):
                rgba = rgba.resize((size, size), Image.Resampling.BOX)
            return np.asarray(rgba, dtype=np.uint8)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable image ({err})") from None


def _front_views(folder: Path, front_degrees: float) -> list[Path]:
    """Views whose camera sits within `front_degrees` of azimuth from the face (+z, y up)."""
    try:
        frames = json.loads((folder / "transforms.json").read_text())["frames"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{folder / 'transforms.json'}: unreadable ({err})") from None
    chosen = []
    for frame in frames:
        matrix = np.asarray(frame["transform_matrix"], dtype=np.float64)
        x, z = matrix[0, 3], matrix[2, 3]
        if abs(math.degrees(math.atan2(x, z))) <= front_degrees:
            path = folder / frame["file_path"]
            chosen.append(path if path.suffix else path.with_suffix(".png"))
    return chosen


def load_portrait_set(data: Path, *, split: str, size: int, front_degrees: float = 45.0,
                      captions_per_subject: int = 8, partial_captions: int = 0, seed: int = 0,
                      limit: int | None = None) -> PortraitSet:
    """Subjects of `split` ("train", or "heldout" for everything else) of a generated dataset.

    Each subject gets `captions_per_subject` whole captions, then `partial_captions` that name only 1-3 of
    its attributes, as prompts do."""
    from rodin.data.synth import subject_split
    from rodin.fit.run import list_sources

    sources = [s for s in list_sources(Path(data)) if (s.path / ATTRIBUTES).is_file()]
    if not sources:
        raise DataError(f"{data}: no generated subjects (with {ATTRIBUTES}); the semantic encoder trains on "
                        "`rodin data synth` output, whose captions it learns from")
    index_known = (Path(data) / "index.json").is_file()
    chosen = []
    for source in sources:
        part = source.split if index_known else subject_split(source.id)
        if (part == "train") == (split == "train"):
            chosen.append(source)
    if limit is not None:
        chosen = chosen[:limit]
    if len(chosen) < 2:
        raise DataError(f"{data}: {len(chosen)} {split} subjects with portraits; need at least 2")
    ids, images, owner, portrait_rows, attributes, captions = [], [], [], [], [], []
    for row, source in enumerate(chosen):
        try:
            record = json.loads((source.path / ATTRIBUTES).read_text())
            attrs = AvatarAttributes.from_dict(record)
        except (OSError, ValueError, TypeError) as err:
            raise DataError(f"{source.path / ATTRIBUTES}: unreadable ({err})") from None
        portrait = source.path / "portrait.png"
        if not portrait.is_file():
            raise DataError(f"{source.path}: no portrait.png")
        ids.append(source.id)
        portrait_rows.append(len(images))
        for path in [portrait, *_front_views(source.path, front_degrees)]:
            images.append(_rgba(path, size))
            owner.append(row)
        attributes.append(attrs.categorical())
        wordings = [str(record.get("caption") or caption(attrs))]
        for k in range(1, captions_per_subject):
            wordings.append(caption(attrs, random.Random(f"rodin-encoder/{seed}/{source.id}/{k}")))
        for k in range(partial_captions):
            rng = random.Random(f"rodin-partial/{seed}/{source.id}/{k}")
            wordings.append(caption(attrs, rng, mentions=rng.randint(1, 3)))
        captions.append(wordings)
    return PortraitSet(ids, torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
                       torch.tensor(owner), torch.tensor(portrait_rows), attributes, captions)


def on_white(rgba: Tensor) -> Tensor:
    """(B, 4, S, S) uint8 -> (B, 3, S, S) floats composited on white."""
    x = rgba.float() / 255.0
    return x[:, :3] * x[:, 3:] + (1.0 - x[:, 3:])


def augment(rgba: Tensor, generator: torch.Generator) -> Tensor:
    """Varied renderings of the same portraits, so that the encoder is not tied to one: a small shift
    and zoom, a white, plain or graded background, brightness and contrast, softness and noise.
    Never a hue change: colours are what captions talk about."""
    b, _, s, _ = rgba.shape
    x = rgba.float() / 255.0
    x = torch.cat([x[:, :3] * x[:, 3:], x[:, 3:]], dim=1)   # premultiplied, so that warping blends edges right
    u = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    scale = 0.9 + 0.2 * u(b)
    shift = (u(b, 2) - 0.5) * 0.12
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / scale
    theta[:, :, 2] = shift
    x = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), mode="bilinear",
                      padding_mode="zeros", align_corners=False)
    kind = u(b)
    top, bottom = u(b, 3, 1, 1), u(b, 3, 1, 1)
    ramp = torch.linspace(0, 1, s).view(1, 1, s, 1)
    graded = top + (bottom - top) * ramp
    background = torch.where((kind < 0.5).view(b, 1, 1, 1), torch.ones(b, 3, s, s),
                             torch.where((kind < 0.75).view(b, 1, 1, 1), top.expand(b, 3, s, s), graded))
    rgb = x[:, :3] + (1.0 - x[:, 3:]) * background
    contrast = 0.85 + 0.3 * u(b, 1, 1, 1)
    rgb = (rgb - 0.5) * contrast + 0.5 + (u(b, 1, 1, 1) - 0.5) * 0.16
    soft = u(b) < 0.3
    if soft.any():
        small = max(8, int(s * 0.6))
        blurred = F.interpolate(F.interpolate(rgb[soft], size=(small, small), mode="area"), size=(s, s),
                                mode="bilinear", align_corners=False)
        rgb[soft] = blurred
    noisy = (u(b) < 0.3).float().view(b, 1, 1, 1)
    rgb = rgb + noisy * 0.02 * torch.randn(rgb.shape, generator=generator)
    return rgb.clamp(0.0, 1.0)
