"""A photometric loss for tri-plane generators: render patches of a predicted tri-plane through the frozen
decoder and compare them with the subject's ground-truth views.

A plane-space loss weighs every texel alike, though a texel that no ray crosses (or that lies in empty
space) does not change any image; this loss measures what an image shows. The upsampler (stage 3)
uses it beside its x0 loss (DESIGN.md, "hierarchical synthesis"). The views are kept in memory as
uint8 (a few per subject: 1,000 subjects of 4 views at 64² take 49 MB), with the box of each view's
foreground so that most patches land on the avatar rather than on the white background.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from rodin.errors import ConfigError, DataError
from rodin.render.cameras import Rays, camera_rays
from rodin.render.volume import render_rays

FOREGROUND_SHARE = 0.8   # patches centred inside the foreground box; the rest anywhere in the view
RENDER_PATCH = 8         # pixels a side of the patches


@dataclass
class ViewBank:
    """A few ground-truth views of each subject, indexed like the subject list it was built from."""

    rgb: Tensor      # (N, V, H, W, 3) uint8, composited on the background
    c2w: Tensor      # (N, V, 4, 4)
    fov_x: Tensor    # (N,)
    boxes: Tensor    # (N, V, 4) long: top, left, bottom, right (exclusive) of the pixels with alpha > 0.5

    @property
    def resolution(self) -> int:
        return self.rgb.shape[2]

    @classmethod
    def load(cls, folders: list[Path], *, views: int, background: float, options: dict | None = None,
             log: Callable[[str], None] = lambda m: None) -> ViewBank:
        """`views` evenly spread views of each subject folder, read as the fit run read them (`options`:
        up axis and bound)."""
        from rodin.data.nerf import load_subject

        rgbs, c2ws, fovs, boxes = [], [], [], []
        for folder in folders:
            loaded = load_subject(folder, **(options or {}))
            pick = torch.linspace(0, len(loaded) - 1, min(views, len(loaded))).round().long()
            if len(pick) < views:                                  # few views: repeat them to fill the bank
                pick = pick.repeat(-(-views // len(pick)))[:views]
            rgbs.append((loaded.composite(background)[pick] * 255).round().clamp(0, 255).to(torch.uint8))
            c2ws.append(loaded.c2w[pick].float())
            fovs.append(float(loaded.fov_x))
            boxes.append(torch.stack([_foreground_box(loaded.images[k, ..., 3]) for k in pick.tolist()]))
        sides = {tuple(r.shape[1:3]) for r in rgbs}
        if len(sides) != 1:
            raise DataError(f"the subjects' views have different sizes ({sorted(sides)}); the render loss needs "
                            "one size (fit with --resolution, or turn the loss off with render_weight=0)")
        log(f"render loss: {views} views of {len(folders)} subjects in memory")
        return cls(torch.stack(rgbs), torch.stack(c2ws), torch.tensor(fovs), torch.stack(boxes))


def _foreground_box(alpha: Tensor) -> Tensor:
    rows = torch.nonzero(alpha.amax(dim=1) > 0.5).flatten()
    cols = torch.nonzero(alpha.amax(dim=0) > 0.5).flatten()
    if not len(rows):
        return torch.tensor([0, 0, alpha.shape[0], alpha.shape[1]])
    return torch.stack([rows.min(), cols.min(), rows.max() + 1, cols.max() + 1])


@dataclass
class PatchDraw:
    """Where one step's render loss looks, drawn with the step's generator (pure in (seed, step))."""

    view: Tensor          # (B,) view slot in the bank
    where: Tensor         # (B, P, 2) patch centres as fractions of the box (or of the view)
    anywhere: Tensor      # (B, P) True: the centre is a fraction of the whole view, not of the box

    def rows(self, which: slice) -> PatchDraw:
        """The draws of some examples of the batch (a process's share of it)."""
        return PatchDraw(self.view[which], self.where[which], self.anywhere[which])


def draw_patches(generator: torch.Generator, *, batch: int, views: int, patches: int) -> PatchDraw:
    return PatchDraw(torch.randint(views, (batch,), generator=generator),
                     torch.rand(batch, patches, 2, generator=generator),
                     torch.rand(batch, patches, generator=generator) >= FOREGROUND_SHARE)


def patch_pixels(bank: ViewBank, subjects: Tensor, draw: PatchDraw, *, patch: int) -> tuple[Tensor, Tensor]:
    """(row, col) long tensors (B, P, patch, patch) of the pixels each example's patches cover."""
    res = bank.resolution
    patch = min(patch, res)
    box = bank.boxes[subjects, draw.view].float()                                  # (B, 4)
    top, left, bottom, right = box.unbind(-1)
    whole = torch.tensor([0.0, 0.0, float(res), float(res)])
    lo = torch.where(draw.anywhere[..., None], whole[:2], torch.stack([top, left], -1)[:, None])
    hi = torch.where(draw.anywhere[..., None], whole[2:], torch.stack([bottom, right], -1)[:, None])
    centre = lo + draw.where * (hi - lo)                                            # (B, P, 2)
    corner = (centre - patch / 2).round().long().clamp(0, res - patch)
    offsets = torch.arange(patch)
    rows = corner[..., 0, None, None] + offsets[:, None]
    cols = corner[..., 1, None, None] + offsets[None, :]
    return rows.expand(-1, -1, patch, patch), cols.expand(-1, -1, patch, patch)


def render_patch_loss(planes: Tensor, decoder, bank: ViewBank, subjects: Tensor, draw: PatchDraw, *, patch: int,
                      samples: int, background: float) -> Tensor:
    """MSE between renders of `planes` (B, 3, C, H, W) and the bank's views of `subjects` (B,) on the drawn
    patches. Gradients reach the planes; the decoder is read, not trained (freeze it beforehand)."""
    device = planes.device
    rows, cols = patch_pixels(bank, subjects, draw, patch=patch)
    b = planes.shape[0]
    origins, directions, targets = [], [], []
    for k in range(b):
        s, v = int(subjects[k]), int(draw.view[k])
        rays = camera_rays(bank.c2w[s, v], float(bank.fov_x[s]), bank.resolution)   # (H, W, 3)
        r, c = rows[k].reshape(-1), cols[k].reshape(-1)
        origins.append(rays.origins[r, c])
        directions.append(rays.directions[r, c])
        targets.append(bank.rgb[s, v][r, c])
    per_example = origins[0].shape[0]
    rays = Rays(torch.cat(origins).to(device), torch.cat(directions).to(device))
    index = torch.arange(b, device=device).repeat_interleave(per_example)
    rendered = render_rays(planes, decoder, rays, samples=samples, batch_index=index, background=background)
    target = torch.cat(targets).to(device=device, dtype=rendered.rgb.dtype) / 255.0
    return (rendered.rgb - target).pow(2).mean()


@dataclass
class RenderTerm:
    """The render loss of one training run: the fit run's frozen decoder and the training subjects' views."""

    weight: float
    decoder: torch.nn.Module
    bank: ViewBank
    samples: int
    background: float

    @classmethod
    def load(cls, run: Path, dataset: Path, ids: list[str], *, weight: float, views: int, preset, device: torch.device,
             stage: str, log: Callable[[str], None]) -> RenderTerm | None:
        """None when the weight is 0; a clear error when the run lacks what the loss reads."""
        from rodin.config import DecoderConfig
        from rodin.fit.run import DECODER_KIND, list_sources
        from rodin.modeling import load_component
        from rodin.refine.pairs import load_options
        from rodin.triplane.decoder import TriplaneDecoder

        if weight <= 0:
            return None
        if not (run / "decoder" / "config.json").is_file():
            raise ConfigError(f"{run}: no fitted decoder, which the {stage}'s render loss reads; use a fit run "
                            f"folder, or set render_weight to 0")
        decoder = load_component(TriplaneDecoder, DecoderConfig, run / "decoder", kind=DECODER_KIND)
        decoder.requires_grad_(False)
        folders = {s.id: s.path for s in list_sources(dataset)}
        missing = [i for i in ids if i not in folders]
        if missing:
            raise ConfigError(f"{dataset}: subject {missing[0]!r} of the fit run is not in this dataset")
        bank = ViewBank.load([folders[i] for i in ids], views=views, background=preset.render.background,
                             options=load_options(run), log=log)
        return cls(weight, decoder.eval().to(device), bank, preset.render.samples, preset.render.background)

    def __call__(self, planes: Tensor, subjects: Tensor, draw: PatchDraw) -> Tensor:
        """The weighted loss of `planes` (B, 3, C, H, W), which show the bank's subjects `subjects` (B,)."""
        return self.weight * render_patch_loss(planes, self.decoder, self.bank, subjects, draw, patch=RENDER_PATCH,
                                               samples=self.samples, background=self.background)
