"""The refiner's training pairs: renders of fitted subjects (RGB + extra features) at a low resolution,
and the dataset's ground-truth views of the same cameras `scale` times larger.

The render side is the preset's render resolution, or less when the dataset's views are not `scale`
times larger than that; ground truth is the views area-resized to exactly `scale` times the render.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from rodin.config import RenderConfig
from rodin.errors import DataError
from rodin.fit.run import list_sources
from rodin.fit.store import TriplaneStore
from rodin.render.volume import render_with_features
from rodin.triplane.decoder import TriplaneDecoder

SMALLEST_RENDER = 4     # pixels a side


@dataclass
class RefinerPairs:
    inputs: torch.Tensor     # (N, 3 + E, h, h) renders: RGB on the background, then extra features
    targets: torch.Tensor    # (N, 3, s*h, s*h) ground-truth views on the same background
    subjects: list[str]      # one per pair


def load_options(run: Path) -> dict:
    """How the fit run read its subjects (up axis, bound), so cameras land in the same world."""
    try:
        options = json.loads((run / "fit_config.json").read_text()).get("load", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {k: options[k] for k in ("up", "bound") if k in options}


def build_pairs(store: TriplaneStore, rows: list[int], decoder: TriplaneDecoder, dataset: Path, *,
                render: RenderConfig, scale: int, views: int, options: dict,
                log: Callable[[str], None] = lambda m: None) -> RefinerPairs:
    """Render up to `views` views (evenly spread over a subject's frames) of each row's fitted planes."""
    from rodin.data.nerf import load_subject

    folders = {s.id: s.path for s in list_sources(dataset)}
    inputs, targets, names = [], [], []
    for row in rows:
        subject = store.ids[row]
        if subject not in folders:
            raise DataError(f"{dataset}: subject {subject!r} of the fit run is not in this dataset")
        loaded = load_subject(folders[subject], **options)
        native = loaded.images.shape[2]
        low = min(render.resolution, native // scale)
        if low < SMALLEST_RENDER:
            raise DataError(f"{folders[subject]}: views of {native} px are too small for a {scale}x refiner "
                            f"(needs at least {SMALLEST_RENDER * scale} px)")
        pick = torch.linspace(0, len(loaded) - 1, min(views, len(loaded))).round().long().unique()
        truth = loaded.composite(render.background)[pick].permute(0, 3, 1, 2)
        if truth.shape[-1] != low * scale:
            truth = F.interpolate(truth, size=(low * scale, low * scale), mode="area")
        inputs.append(render_with_features(store.get(row).float(), decoder, loaded.c2w[pick], loaded.fov_x, low,
                                           render=render))
        targets.append(truth)
        names += [subject] * len(pick)
    if not inputs:
        raise DataError(f"{store.root}: no fitted subjects to render for the refiner")
    sides = {t.shape[-1] for t in targets}
    if len(sides) > 1:
        raise DataError(f"{dataset}: subjects' views have different sizes ({sorted(sides)}); the refiner needs one")
    log(f"rendered {len(names)} views of {len(rows)} subjects at {inputs[0].shape[-1]} px")
    return RefinerPairs(torch.cat(inputs), torch.cat(targets), names)
